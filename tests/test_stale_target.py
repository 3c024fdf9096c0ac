"""A target edited by hand: its tree says it holds content that is no longer on its disk. The
first apply that reuses such a piece fails verification (or cannot read it); the target then
re-indexes the files it copied from and the source re-plans, so replication carries on."""

from __future__ import annotations

import os

import pytest

from merkle_sync import FileSystemEvent, FileSystemEventType, ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.testing import same_tree


def _event(path: str) -> FileSystemEvent:
    return FileSystemEvent(path, FileSystemEventType.FILE_OR_SUBDIR_ADDED)


@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("hand", ["edit", "delete", "truncate"])
def test_a_copy_of_content_changed_by_hand_on_the_target_still_replicates(tmp_path, hand, index):
    """With an index the stat identity shows the change; without one, every reused leaf
    is read and checked."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    original = os.urandom(200_000)
    (src / "a.bin").write_bytes(original)
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst), index=index)
    source = ReplicatorSource(fs, str(src), target.handle_request)
    victim = dst / "a.bin"
    if hand == "edit":
        victim.write_bytes(os.urandom(200_000))
    elif hand == "delete":
        victim.unlink()
    else:
        victim.write_bytes(original[:1000])
    (src / "copy.bin").write_bytes(original)  # the target "holds" this content in a.bin
    source.handle_event(_event(str(src / "copy.bin")))
    assert (dst / "copy.bin").read_bytes() == original
    source.rescan()  # and the file edited by hand is repaired by a walk
    assert same_tree(fs, str(src), fs, str(dst))
    (src / "more.bin").write_bytes(original)
    source.handle_event(_event(str(src / "more.bin")))  # later syncs carry on
    assert same_tree(fs, str(src), fs, str(dst))


def test_several_files_changed_by_hand_are_all_found_at_the_first_stale_one(tmp_path):
    """Each hand-edited file, once reused, would cost one failed apply; there is one retry.
    So the first stale file makes the target stat all of its files again (as at start)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    originals = {f"f{i}.bin": os.urandom(100_000) for i in range(4)}
    for name, data in originals.items():
        (src / name).write_bytes(data)
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request, keep=0)
    for name in originals:  # same size, other bytes: only the stat identity tells
        (dst / name).write_bytes(os.urandom(100_000))
    for name, data in originals.items():  # a 1-byte edit each: reuses the rest of each
        (src / name).write_bytes(data[:50_000] + b"x" + data[50_001:])
    source.rescan()
    assert same_tree(fs, str(src), fs, str(dst))
