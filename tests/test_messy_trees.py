"""Ordinary messy trees on disk: special files and entries that vanish mid-scan are skipped or
simply gone, never the end of the sync (and never a hang)."""

from __future__ import annotations

import os
import signal
import socket
import stat

import pytest

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.scan import ON_TARGET, SPECIAL
from tests.test_soak import listing


@pytest.fixture
def alarm():
    """A hang (say, a FIFO opened for reading) fails the test instead of stalling the suite."""

    def hung(signum, frame):
        raise TimeoutError("the sync hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _specials(root) -> list[str]:
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    made = ["fifo", "sock"]
    try:
        os.mknod(root / "chardev", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
        made.append("chardev")
    except PermissionError:
        pass  # not root: FIFO and socket only
    return made


def test_fifos_sockets_and_devices_in_the_source_are_skipped_with_the_reason(tmp_path, alarm):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "plain.txt").write_text("plain")
    made = _specials(src / "sub")
    fs = DiskFileSystem()
    source = ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert sorted(source.skipped) == sorted((f"sub/{n}", SPECIAL) for n in made)
    assert (dst / "sub" / "plain.txt").read_text() == "plain"
    assert sorted(os.listdir(dst / "sub")) == ["plain.txt"]


@pytest.mark.parametrize("what", ["file", "directory"])
def test_special_files_in_the_target_are_replaced_by_what_the_source_has(tmp_path, alarm, what):
    """A file renamed over a FIFO replaces it; a directory could not be made there and
    failed every sync (found by fuzzing the target), until the target removed it first."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    made = _specials(dst)
    for name in made:
        if what == "file":
            (src / name).write_text(f"a regular {name}")
        else:
            (src / name).mkdir()
            (src / name / "inside").write_text(name)
    fs = DiskFileSystem()
    ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request, index=False)
    assert listing(dst) == listing(src)


class Unlistable(DiskFileSystem):
    """A directory whose path ends with ``suffix`` cannot be listed, as one whose owner
    denies the syncing user (root reads everything, so this is how a test sees it)."""

    def __init__(self, suffix: str) -> None:
        super().__init__()
        self.suffix = suffix

    def entries(self, path):
        if path.endswith(self.suffix):
            raise PermissionError(13, "Permission denied", path)
        return super().entries(path)


class Vanishing(DiskFileSystem):
    """Deletes an entry just after its directory was listed and before it is read."""

    def __init__(self, victims: set[str]) -> None:
        super().__init__()
        self.victims = victims

    def entries(self, path):
        found = super().entries(path)
        for name, kind, *_ in found:
            full = os.path.join(path, name)
            if name in self.victims:
                self.victims.discard(name)
                if kind == "d":
                    for inner in os.listdir(full):
                        os.unlink(os.path.join(full, inner))
                    os.rmdir(full)
                else:
                    os.unlink(full)
        return found


def test_entries_that_vanish_between_listing_and_reading_are_simply_gone(tmp_path, alarm):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "gone_dir").mkdir(parents=True)
    (src / "gone_dir" / "inner.txt").write_text("inner")
    (src / "gone.txt").write_text("soon gone")
    (src / "stays.txt").write_text("stays")
    fs = Vanishing({"gone_dir", "gone.txt"})
    source = ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert source.skipped == []
    assert listing(dst) == listing(src)
    assert sorted(os.listdir(dst)) == [".merkle_sync", "stays.txt"]


def test_a_link_in_place_of_the_targets_state_directory_changes_nothing_outside(tmp_path):
    """``DST/.merkle_sync`` made a link to a directory that happens to hold ``tmp`` and
    ``held``: the target refuses before it clears, locks or creates anything through it."""
    outside, dst = tmp_path / "outside", tmp_path / "dst"
    for rel, text in (("tmp/precious.txt", "work"), ("held/notes.txt", "notes"), ("lock", "x")):
        (outside / rel).parent.mkdir(parents=True, exist_ok=True)
        (outside / rel).write_text(text)
    before = listing(outside)
    dst.mkdir()
    (dst / ".merkle_sync").symlink_to("../outside")
    with pytest.raises(OSError, match="not a real directory"):
        ReplicatorTarget(DiskFileSystem(), str(dst))
    assert listing(outside) == before


def test_an_entry_the_target_cannot_read_is_reported_not_passed_over(tmp_path):
    """A directory in DST that the target cannot list can be neither mirrored nor deleted:
    the first reply of each sync names it, and the source reports it as skipped (the
    command exits 23), where it was left there silently before."""

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a").write_text("a")
    fs = DiskFileSystem()
    ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request, index=False)
    (dst / "foreign").mkdir()
    (dst / "foreign" / "x").write_text("x")
    (src / "b").write_text("b")
    target = ReplicatorTarget(Unlistable("/dst/foreign"), str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request, index=False)
    assert source.skipped == [("foreign", ON_TARGET)]
    assert (dst / "b").read_text() == "b"
    (src / "c").write_text("c")
    source.sync()  # each sync's first reply says it again, once
    assert source.skipped == [("foreign", ON_TARGET)]
    source = ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert source.skipped == []  # readable again: deleted, as any entry the source lacks
    assert sorted(os.listdir(dst)) == [".merkle_sync", "a", "b", "c"]


def test_a_removed_link_is_not_kept_for_reuse_as_if_it_were_a_file(tmp_path):
    """A removed file's bytes are kept aside for a later rename; a link's text was kept the
    same way, and a new file with that text as content then failed every sync after, copying
    from a link opened without following it (found by fuzzing the target)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    text = "x" * 2000
    (src / "l").symlink_to(text)
    (src / "keep.txt").write_text("k")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    for step in ("link", "removed", "file"):
        if step == "removed":
            (src / "l").unlink()
        elif step == "file":
            (src / "f.txt").write_text(text)
        ReplicatorSource(fs, str(src), target.handle_request, index=False, compression=0)
        assert listing(dst) == listing(src)


def test_an_unreadable_entry_the_sync_removed_with_its_directory_is_not_reported(tmp_path):
    """What the target's scan could not read goes with a directory the source removed: it
    is no longer there to report (it was reported, and the command exited 23)."""

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "x").mkdir(parents=True)
    (src / "a").write_text("a")
    fs = DiskFileSystem()
    ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request, index=False)
    (dst / "x" / "foreign").mkdir()
    (src / "x").rmdir()
    target = ReplicatorTarget(Unlistable("/dst/x/foreign"), str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request, index=False)
    assert not (dst / "x").exists()
    assert source.skipped == []
    source.sync()  # and the next sync's first reply no longer names it
    assert source.skipped == []
