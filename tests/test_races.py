"""A source that changes while a sync sends it: a local race, never the end of the sync."""

from __future__ import annotations

import os

from merkle_sync import MemoryFileSystem, ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.races import CHANGING, changed_paths
from merkle_sync.scan import scan
from tests.test_soak import listing


class Meddling(DiskFileSystem):
    """Once the first request went (the scan is over), calls ``meddle(path)`` before each
    ranged read of a source file: what another process does between the scan and the send."""

    def __init__(self, meddle) -> None:
        super().__init__()
        self.meddle = meddle
        self.armed = False

    def read_range(self, path, start, size):
        if self.armed:
            self.meddle(path)
        return super().read_range(path, start, size)


def _tree(src) -> None:
    (src / "sub").mkdir(parents=True)
    for name in ("a", "b", "c", "sub/d"):
        (src / name).write_bytes(name.encode() * 50_000)


def _sync(fs, src, dst, **kw) -> ReplicatorSource:
    target = ReplicatorTarget(DiskFileSystem(), str(dst))

    def rpc(frame):
        fs.armed = True
        return target.handle_request(frame)

    return ReplicatorSource(fs, str(src), rpc, index=False, **kw)


def test_a_file_removed_after_the_scan_is_simply_gone(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)

    def remove_b(path):
        if os.path.exists(src / "b"):
            os.unlink(src / "b")

    source = _sync(Meddling(remove_b), src, dst)
    assert source.skipped == []
    assert listing(dst) == listing(src)
    assert not (dst / "b").exists()


def test_a_directory_swapped_for_a_link_after_the_scan_is_mirrored_as_the_link(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    _tree(src)
    outside.mkdir()
    (outside / "d").write_bytes(b"SECRET" * 1000)

    def swap(path):
        if path.startswith(str(src / "sub")) and not os.path.islink(src / "sub"):
            os.unlink(src / "sub" / "d")
            os.rmdir(src / "sub")
            os.symlink(outside, src / "sub")

    source = _sync(Meddling(swap), src, dst)
    assert source.skipped == []
    assert os.readlink(dst / "sub") == str(outside)
    assert (dst / "a").read_bytes() == (src / "a").read_bytes()
    assert b"SECRET" not in b"".join(p.read_bytes() for p in dst.rglob("*") if p.is_file())


def test_a_file_that_changes_at_every_read_is_left_out_and_reported(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    _sync(DiskFileSystem(), src, dst)
    old_b = (dst / "b").read_bytes()
    (src / "a").write_bytes(b"new a" * 20_000)
    (src / "b").write_bytes(b"new b" * 20_000)
    rewrites = []

    def rewrite_b(path):
        if path == str(src / "b"):
            rewrites.append(path)
            (src / "b").write_bytes(os.urandom(100_000))

    source = _sync(Meddling(rewrite_b), src, dst)
    assert source.skipped == [("b", CHANGING)]
    assert (dst / "b").read_bytes() == old_b  # the target keeps its copy
    assert (dst / "a").read_bytes() == (src / "a").read_bytes()
    assert len(rewrites) >= 4  # a rescan and a new start each time first


def test_a_file_unreadable_after_the_scan_is_left_out_on_any_filesystem():
    class Failing(MemoryFileSystem):
        """After ``armed``, the second read of ``b`` fails: the event's scan reads it (a
        plain filesystem is read whole to be hashed), the send's read does not."""

        armed = False
        reads = 0

        def readfile(self, path):
            if self.armed and path.endswith("/b"):
                self.reads += 1
                if self.reads >= 2:
                    raise PermissionError(13, "Permission denied", path)
            return super().readfile(path)

    src, dst = Failing(), MemoryFileSystem()
    src.makedirs("/s")
    for name in "abc":
        src.writefile(f"/s/{name}", name * 10)
    target = ReplicatorTarget(dst, "/d")
    source = ReplicatorSource(src, "/s", target.handle_request, keep_read=0)
    src.armed = True
    src.writefile("/s/b", "changed")
    src.writefile("/s/c", "changed too")
    source.handle_event(type("E", (), {"path": "/s", "event_type": 1})())
    assert source.skipped == [("b", "PermissionError: Permission denied")]
    assert dst.readfile("/d/c") == "changed too"
    assert dst.readfile("/d/b") == "b" * 10


def test_changed_paths_names_what_differs_between_two_scans(tmp_path):
    root = tmp_path / "t"
    _tree(root)
    (root / "gone").mkdir()
    (root / "gone" / "x").write_text("x")
    before = scan(DiskFileSystem(), str(root))
    (root / "a").write_text("edited")
    (root / "new").write_text("new")
    os.unlink(root / "gone" / "x")
    os.rmdir(root / "gone")
    after = scan(DiskFileSystem(), str(root))
    assert changed_paths(before, after) == ["a", "gone", "new"]
    assert changed_paths(after, after) == []


def test_a_tree_that_changes_at_every_read_still_ends_its_sync(tmp_path):
    """Every file rewritten as it is read: rescans stop after ``MAX_REFRESH``, and then
    each attempt leaves out what changed; a later rescan must not put those back, nor may a
    fixed number of rounds end the sync (after 3 it ended with exit 11)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    names = [f"f{i}" for i in range(8)]
    for name in names:
        (src / name).write_bytes(os.urandom(30_000))

    def rewrite(path):
        with open(path, "wb") as f:
            f.write(os.urandom(30_000 + len(os.path.basename(path))))

    # A frame a file: each attempt fails at the first file it reads, which alone changed.
    source = _sync(Meddling(rewrite), src, dst, frame_literals=16 << 10, compression=0)
    assert sorted(rel for rel, _ in source.skipped) == names
    assert all(why in (CHANGING,) or why.startswith("OSError") for _, why in source.skipped)


def test_retries_end_and_keep_what_they_left_out_across_rescans(tmp_path):
    """One file changes per attempt, a different one each time: past the rescans every
    attempt leaves one more out (not only 3 rounds of it), each rescan's fresh tree gets
    the earlier ones taken out again, and an attempt that finds nothing new to leave out
    ends the retries."""
    from merkle_sync.races import MAX_REFRESH, Raced, Retries

    root = tmp_path / "t"
    root.mkdir()
    names = [f"f{i}" for i in range(MAX_REFRESH + 6)]
    for name in names:
        (root / name).write_text(name)
    retries = Retries()
    for i, name in enumerate(names):
        tree = scan(DiskFileSystem(), str(root))  # each rescan puts every file back
        again, out = retries.answer(tree, Raced(name, OSError("changed")), [name])
        assert again
        expected = [] if i < MAX_REFRESH else names[MAX_REFRESH : i + 1]
        assert sorted(tree.children) == sorted(set(names) - set(expected))
        assert sorted(r for r, _ in out) == sorted(expected)
    tree = scan(DiskFileSystem(), str(root))
    again, _ = retries.answer(tree, Raced(names[-1], OSError("changed")), [])
    assert not again  # nothing new to leave out: the caller raises


def test_retries_go_on_when_the_rescan_finds_the_failed_file_gone(tmp_path):
    """Past the rescans, a file deleted while it was sent is nothing to leave out: the tree
    no longer holds it, which is progress too (it ended the sync with exit 11)."""
    from merkle_sync.races import MAX_REFRESH, Raced, Retries

    root = tmp_path / "t"
    (root / "d").mkdir(parents=True)
    (root / "keep").write_text("k")
    retries = Retries(refreshed=MAX_REFRESH)
    gone = FileNotFoundError(2, "No such file or directory")
    again, out = retries.answer(scan(DiskFileSystem(), str(root)), Raced("d/x", gone), ["d/x"])
    assert (again, out) == (True, [])
