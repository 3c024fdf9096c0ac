"""Large files are changed in place behind an undo journal: old or new, never a mix."""

from __future__ import annotations

import os

import pytest
from blake3 import blake3

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync import store as store_module
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.patchfile import PatchedFile
from merkle_sync.testing import same_tree
from merkle_sync.wire import STREAM_NEXT

SIZE = 1 << 20


def setup(tmp_path, size: int = SIZE):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = bytearray(blake3(b"big").digest(length=size))
    (src / "big.bin").write_bytes(data)
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst), patch_min=64 << 10)
    source = ReplicatorSource(fs, str(src), target.handle_request, index=False)
    return fs, src, dst, data, source, target


def edit(src, data: bytearray, at: int, new: bytes) -> None:
    data[at : at + len(new)] = new
    (src / "big.bin").write_bytes(data)


def journals(dst) -> list[str]:
    return [n for n in os.listdir(dst / ".merkle_sync" / "tmp") if n.endswith(".undo")]


def test_a_small_edit_is_patched_in_place(tmp_path):
    fs, src, dst, data, source, _ = setup(tmp_path)
    inode = (dst / "big.bin").stat().st_ino
    edit(src, data, SIZE // 2, b"\x00edited\x00")
    source.rescan()
    assert same_tree(fs, str(src), fs, str(dst))
    assert (dst / "big.bin").stat().st_ino == inode  # the same file, changed where it differed
    assert journals(dst) == []


def test_an_edit_past_the_patch_budget_is_staged_instead(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "PATCH_MAX", 4096)
    fs, src, dst, data, source, _ = setup(tmp_path)
    inode = (dst / "big.bin").stat().st_ino
    for at in range(0, SIZE, SIZE // 8):  # eight edits, each in its own leaf
        edit(src, data, at + 100, os.urandom(3000))
    source.rescan()
    assert same_tree(fs, str(src), fs, str(dst))
    assert (dst / "big.bin").stat().st_ino != inode
    assert journals(dst) == []


class DropSecondApplyFrame:
    """Lets the walk and the first apply frame through, then the link drops."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __call__(self, frame):
        if frame[0] == STREAM_NEXT:
            raise ConnectionError("link dropped")
        return self.handle(frame)


def test_a_patch_interrupted_between_frames_puts_the_old_version_back(tmp_path):
    fs, src, dst, data, _, target = setup(tmp_path)
    old = bytes(data)
    for at in range(0, SIZE, SIZE // 16):
        edit(src, data, at + 7, os.urandom(200))
    link = DropSecondApplyFrame(target.handle_request)
    with pytest.raises(ConnectionError):
        ReplicatorSource(fs, str(src), link, index=False, frame_literals=1024)
    half = (dst / "big.bin").read_bytes()
    assert half not in (old, bytes(data))  # part of the edit is in place, journaled
    assert len(journals(dst)) == 1
    # The next request from a new source ends the stale stream: the patch is undone.
    again = ReplicatorSource(fs, str(src), target.handle_request, index=False)
    assert same_tree(fs, str(src), fs, str(dst))
    assert again.stats.round_trips >= 2
    assert journals(dst) == []
    assert old != bytes(data)


def test_a_crash_mid_patch_is_undone_when_the_target_starts(tmp_path):
    fs, _, dst, _, _, _ = setup(tmp_path)
    old = (dst / "big.bin").read_bytes()
    patch = PatchedFile(str(dst / "big.bin"), str(dst / ".merkle_sync" / "tmp"))
    patch.skip(1000)
    patch.write(b"half-applied change")
    patch.flush()  # on disk, journal and all; then the process dies
    assert (dst / "big.bin").read_bytes() != old
    ReplicatorTarget(fs, str(dst), patch_min=64 << 10)
    assert (dst / "big.bin").read_bytes() == old
    assert journals(dst) == []


def test_a_hard_linked_file_is_never_patched(tmp_path):
    fs, src, dst, data, source, _ = setup(tmp_path)
    os.link(dst / "big.bin", tmp_path / "other_link")
    before = (tmp_path / "other_link").read_bytes()
    edit(src, data, 5000, b"changed")
    source.rescan()
    assert same_tree(fs, str(src), fs, str(dst))
    assert (tmp_path / "other_link").read_bytes() == before  # the other name is untouched


def test_a_file_copied_from_the_old_version_while_it_is_patched(tmp_path):
    """Pieces of the old version stay readable (from the journal) while it is patched."""
    fs, src, dst, data, source, _ = setup(tmp_path)
    old = bytes(data)
    for name in ("a_copy.bin", "m_copy.bin", "z_copy.bin"):
        (src / name).write_bytes(old)
    edit(src, data, SIZE // 3, b"\x01" * 5000)
    before = source.stats.literal_bytes
    source.rescan()
    assert same_tree(fs, str(src), fs, str(dst))
    assert source.stats.literal_bytes - before < 16 << 10  # the copies: from held pieces
    assert journals(dst) == []
