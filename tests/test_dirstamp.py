"""Directory stamps: a restart takes an unchanged directory's hash from the index without
building its file nodes, and anything that changed below is still found."""

from __future__ import annotations

import itertools
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync import scan as scan_module
from merkle_sync.dirstamp import StampedDir
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.fileindex import FileIndex
from merkle_sync.fs import FileSystemEvent, FileSystemEventType
from merkle_sync.ignore import Ignore
from merkle_sync.merkle import DirNode, FileNode, iter_tree
from merkle_sync.scan import Scanner
from merkle_sync.testing import same_tree

_TIMES = itertools.count(1_600_000_000_000_000_000, 1_000_000_007)


@pytest.fixture
def no_racy_window(monkeypatch):
    """Files written by a test are seconds old at most: let the scan trust them anyway.
    Every write below also sets a distinct mtime, so no two versions share a stat."""
    monkeypatch.setattr(scan_module, "RACY_NS", 0)
    monkeypatch.setattr("merkle_sync.fileindex.RACY_NS", 0)


def put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = next(_TIMES)
    os.utime(path, ns=(stamp, stamp))


def make_tree(root: Path) -> None:
    for i in range(24):
        put(root / f"d{i % 3}" / ("sub" if i % 2 else "") / f"f{i}.txt", os.urandom(50 + 37 * i))
    (root / "d0" / "link").symlink_to("../d1/f1.txt")
    (root / "d1" / "dangling").symlink_to("/nowhere/at/all")
    put(root / "top.txt", b"top")


class Counted(FileIndex):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.lookups = 0

    def lookup(self, rel, key):
        self.lookups += 1
        return super().lookup(rel, key)


def scan(root: Path, db: Path | None, ignore=None) -> tuple[object, Scanner]:
    index = Counted(str(db)) if db is not None else None
    scanner = Scanner(DiskFileSystem(), index=index, ignore=ignore)
    node = scanner.node(str(root))
    if index is not None:
        scanner.tidy()
        index.commit()
    return node, scanner


def listing(node: DirNode) -> dict:
    """Everything a walk or a plan reads of a tree, loading every stamped directory."""
    out = {}
    for rel, sub in iter_tree(node):
        if isinstance(sub, FileNode):
            out[rel] = (sub.kind, sub.hash, sub.meta, sub.tree.root)
        else:
            out[rel] = (sub.hash, sub.meta, frozenset(sub.keep))
    return out


def test_a_restart_takes_unchanged_directories_from_their_stamps(tmp_path, no_racy_window):
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    first, _ = scan(root, db)
    again, scanner = scan(root, db)
    plain, _ = scan(root, None)
    assert again.hash == first.hash == plain.hash
    assert scanner.index.lookups == 0 and scanner.dirty == 0
    assert scanner.clean == {"", "d0", "d1", "d2", "d0/sub", "d1/sub", "d2/sub"}
    assert scanner.files == 27  # 24 files, 2 links and top.txt, counted from the stamps
    assert isinstance(again, StampedDir)
    stamped = [d for _, d in iter_tree(again) if isinstance(d, StampedDir)]
    assert len(stamped) == 7
    assert listing(again) == listing(plain)  # loading fills each directory as a scan would
    link = again.children["d0"].children["link"]
    assert link.tree.root == plain.children["d0"].children["link"].tree.root


def test_the_index_keeps_its_rows_when_nothing_changed(tmp_path, no_racy_window):
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    scan(root, db)
    scan(root, db)
    with sqlite3.connect(db) as conn:
        files = conn.execute("SELECT count(*) FROM files").fetchone()[0]
        dirs = conn.execute("SELECT count(*) FROM dirs WHERE stamp IS NOT NULL").fetchone()[0]
    assert (files, dirs) == (25, 7)  # links keep no file row: their text is in the listing


def _edit(root: Path) -> None:
    p = root / "d0" / "sub" / "f3.txt"
    data = p.read_bytes()
    put(p, bytes([data[0] ^ 1]) + data[1:])  # same size, another mtime


def _chmod(root: Path) -> None:
    os.chmod(root / "d2" / "f2.txt", 0o755)


def _touch(root: Path) -> None:
    stamp = next(_TIMES)
    os.utime(root / "d0" / "sub" / "f9.txt", ns=(stamp, stamp))


def _add(root: Path) -> None:
    put(root / "d2" / "sub" / "new.txt", b"new")


def _remove(root: Path) -> None:
    (root / "d0" / "f0.txt").unlink()


def _rename(root: Path) -> None:
    (root / "d1" / "f4.txt").rename(root / "d1" / "f4-renamed.txt")


def _new_dir(root: Path) -> None:
    put(root / "d0" / "sub" / "deeper" / "x.txt", b"deep")


def _remove_dir(root: Path) -> None:
    for p in sorted((root / "d2" / "sub").iterdir()):
        p.unlink()
    (root / "d2" / "sub").rmdir()


def _file_to_link(root: Path) -> None:
    (root / "d1" / "f10.txt").unlink()
    (root / "d1" / "f10.txt").symlink_to("f4.txt")


def _relink(root: Path) -> None:
    (root / "d0" / "link").unlink()
    (root / "d0" / "link").symlink_to("../d2/f2.txt")


def _file_to_dir(root: Path) -> None:
    (root / "top.txt").unlink()
    put(root / "top.txt" / "inside.txt", b"now a directory")


def _swap_subdirs(root: Path) -> None:
    """Two subdirectories trade places: their parents' entries keep names, kinds and
    perhaps stats, but the hashes below differ."""
    (root / "d0" / "sub").rename(root / "tmp")
    (root / "d1" / "sub").rename(root / "d0" / "sub")
    (root / "tmp").rename(root / "d1" / "sub")


CHANGES = [
    _edit,
    _chmod,
    _touch,
    _add,
    _remove,
    _rename,
    _new_dir,
    _remove_dir,
    _file_to_link,
    _relink,
    _file_to_dir,
    _swap_subdirs,
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_a_change_below_a_stamp_is_found(tmp_path, no_racy_window, change):
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    scan(root, db)
    scan(root, db)
    change(root)
    after, scanner = scan(root, db)
    plain, _ = scan(root, None)
    assert after.hash == plain.hash
    assert listing(after) == listing(plain)
    assert scanner.dirty >= 1
    again, scanner = scan(root, db)  # and the next restart is all stamps again
    assert again.hash == plain.hash and scanner.dirty == 0
    files = {rel for rel, n in iter_tree(plain) if isinstance(n, FileNode)}
    with sqlite3.connect(db) as conn:
        rows = {r.decode() for (r,) in conn.execute("SELECT rel FROM files")}
        dirs = {r.decode() for (r,) in conn.execute("SELECT rel FROM dirs")}
    links = {rel for rel, n in iter_tree(plain) if isinstance(n, FileNode) and n.kind == 3}
    assert rows == files - links  # rows of what went are gone
    assert dirs == {rel for rel, n in iter_tree(plain) if isinstance(n, DirNode)}


def test_fresh_entries_get_no_stamp(tmp_path):
    """Within the racy window a file may change again without changing its stat."""
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    for i in range(5):
        (root / "d").mkdir(parents=True, exist_ok=True)
        (root / "d" / f"f{i}").write_bytes(b"x" * i)
    scan(root, db)
    _, scanner = scan(root, db)
    assert scanner.clean == set() and scanner.dirty == 2


def test_exclude_rules_are_part_of_the_stamp(tmp_path, no_racy_window):
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    put(root / "d0" / "noise.log", b"log")
    scan(root, db, Ignore(["*.log"]))
    without, scanner = scan(root, db)
    assert scanner.clean == set()
    assert without.hash == scan(root, None)[0].hash
    with_rules, scanner = scan(root, db, Ignore(["*.log"]))
    assert with_rules.hash == scan(root, None, Ignore(["*.log"]))[0].hash
    assert "noise.log" not in with_rules.children["d0"].children
    # a predicate without patterns cannot be named in a stamp: none is used or made
    _, scanner = scan(root, db, lambda rel, is_dir: False)
    assert scanner.clean == set()


def test_a_special_file_is_reported_at_every_restart(tmp_path, no_racy_window):
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    os.mkfifo(root / "d2" / "pipe")
    for restart in range(3):
        node, scanner = scan(root, db)
        assert [rel for rel, _ in scanner.skipped] == ["d2/pipe"]
        assert "d2" not in scanner.clean
        assert ("d1" in scanner.clean) == (restart > 0)
    assert node.hash == scan(root, None)[0].hash


def test_a_forgotten_row_unstamps_its_directory(tmp_path, no_racy_window):
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    scan(root, db)
    index = FileIndex(str(db))
    index.forget("d1/f1.txt")
    index.commit()
    index.close()
    node, scanner = scan(root, db)
    assert "d1" not in scanner.clean and "d0" in scanner.clean
    assert listing(node) == listing(scan(root, None)[0])


def test_a_stamped_directory_loaded_after_its_row_changed_refuses(tmp_path, no_racy_window):
    """A node of the old tree never fills itself from a newer listing."""
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    scan(root, db)
    old, _ = scan(root, db)
    _add(root)
    scan(root, db)  # re-stamps d2/sub with the new file
    with pytest.raises(LookupError):
        old.children["d2"].children["sub"].children  # noqa: B018


def test_syncs_after_restarts_through_stamped_trees(tmp_path, no_racy_window):
    """Both sides restart on stamped trees; an edit deep below is found by a walk (the
    target lists stamped directories) and by an event (the source loads one)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    fs = DiskFileSystem()
    ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    for _ in range(2):  # the first restart stamps what the sync wrote on the target
        target = ReplicatorTarget(fs, str(dst))
        source = ReplicatorSource(fs, str(src), target.handle_request)
        assert same_tree(fs, str(src), fs, str(dst))
    assert isinstance(target.tree, StampedDir) and isinstance(source.tree, StampedDir)
    _edit(src)
    _add(src)
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request)  # a walk
    assert same_tree(fs, str(src), fs, str(dst))
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request)
    assert isinstance(source.tree, StampedDir)
    _remove(src)
    _new_dir(src)
    removed = FileSystemEvent(
        str(src / "d0" / "f0.txt"), FileSystemEventType.FILE_OR_SUBDIR_REMOVED
    )
    added = FileSystemEvent(
        str(src / "d0" / "sub" / "deeper"), FileSystemEventType.FILE_OR_SUBDIR_ADDED
    )
    source.handle_event(removed)
    source.handle_event(added)
    assert same_tree(fs, str(src), fs, str(dst))


ops = st.lists(st.sampled_from(CHANGES), min_size=1, max_size=4)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
def test_any_changes_between_restarts_hash_as_a_full_scan(tmp_path_factory, monkeypatch, ops):
    monkeypatch.setattr(scan_module, "RACY_NS", 0)
    monkeypatch.setattr("merkle_sync.fileindex.RACY_NS", 0)
    base = tmp_path_factory.mktemp("prop")
    root, db = base / "tree", base / "index.sqlite"
    make_tree(root)
    scan(root, db)
    for change in ops:
        try:
            change(root)
        except (FileNotFoundError, FileExistsError, NotADirectoryError, OSError):
            continue  # a change that no longer applies to this tree
        node, _ = scan(root, db)
        assert listing(node) == listing(scan(root, None)[0])


def test_a_scan_without_stamps_stands_its_directories_as_stamped_once_done(
    tmp_path, no_racy_window
):
    """The target's first restart after it wrote a tree: every file is in the index, no
    directory has a stamp yet. Each directory is stamped as soon as all below it is done
    and kept as a ``StampedDir``: the scan does not hold every file node at once."""
    root, db = tmp_path / "tree", tmp_path / "index.sqlite"
    make_tree(root)
    first, _ = scan(root, db)  # hashed in the queue: nothing stamped before the end
    assert not any(isinstance(d, StampedDir) for _, d in iter_tree(first))
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM dirs")
    again, scanner = scan(root, db)
    assert scanner.index.lookups == 25 and scanner.dirty == 7
    dirs = [d for _, d in iter_tree(again) if isinstance(d, DirNode)]
    assert len(dirs) == 7 and all(isinstance(d, StampedDir) for d in dirs)
    assert listing(again) == listing(scan(root, None)[0])
    third, scanner = scan(root, db)
    assert scanner.dirty == 0 and third.hash == again.hash
