"""The replicators on a real disk: an exact mirror, and symbolic links never lead outside."""

from __future__ import annotations

import os
import shutil

import pytest

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.scan import ON_TARGET
from merkle_sync.testing import MeteredRpc, snapshot


def test_disk_mirror_and_links_in_the_target_are_replaced_not_followed(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for d in (src / "link_dir", dst, outside):
        d.mkdir(parents=True)
    (src / "link_dir" / "x").write_bytes(b"inside")
    (src / "link_file").write_bytes(b"a regular file")
    (src / "plain").write_text("plain")
    (outside / "x").write_bytes(b"must stay")
    (outside / "secret").write_bytes(b"must stay too")
    os.symlink(outside, dst / "link_dir")
    os.symlink(outside / "secret", dst / "link_file")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    assert snapshot(fs, str(src)) == snapshot(fs, str(dst))
    assert not (dst / "link_dir").is_symlink() and not (dst / "link_file").is_symlink()
    assert (outside / "x").read_bytes() == b"must stay"
    assert (outside / "secret").read_bytes() == b"must stay too"
    # no temporary files; the target's private state sits under the reserved name
    assert sorted(os.listdir(dst)) == [".merkle_sync", "link_dir", "link_file", "plain"]
    assert os.listdir(dst / ".merkle_sync" / "tmp") == []


def test_links_in_the_source_are_not_followed(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    for d in (src, dst, outside):
        d.mkdir()
    (outside / "secret").write_bytes(b"private")
    os.symlink(outside, src / "escape")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    # The link is replicated as a link with the same text, never followed on either side.
    assert (dst / "escape").is_symlink()
    assert os.readlink(dst / "escape") == str(outside)
    assert sorted(os.listdir(outside)) == ["secret"]


def test_a_directory_swapped_for_a_link_between_syncs_is_never_followed(tmp_path):
    """Someone replaces a directory inside the target, or the target's own state directory,
    by a link elsewhere: writes, removals and metadata never land outside."""
    import shutil

    import pytest

    from merkle_sync import FileSystemEvent, FileSystemEventType
    from merkle_sync.scan import EscapeRefused

    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    (src / "d").mkdir(parents=True)
    outside.mkdir()
    (src / "d" / "f").write_bytes(b"one")
    (src / "d" / "g").write_bytes(b"two")
    (outside / "g").write_bytes(b"keep me")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    shutil.rmtree(dst / "d")
    os.symlink(outside, dst / "d")  # behind the replicator's back
    (src / "d" / "f").write_bytes(b"changed")
    (src / "d" / "g").unlink()
    (src / "d" / "new").write_bytes(b"new")
    for name in ("f", "g", "new"):
        with pytest.raises(EscapeRefused):
            fs.handle_event(
                FileSystemEvent(str(src / "d" / name), FileSystemEventType.FILE_MODIFIED)
            )
    assert sorted(os.listdir(outside)) == ["g"]
    assert (outside / "g").read_bytes() == b"keep me"
    # A restarted target sees the link for what it is, and the next sync replaces it.
    target = ReplicatorTarget(fs, str(dst))
    ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    assert snapshot(fs, str(src)) == snapshot(fs, str(dst))
    assert not (dst / "d").is_symlink()
    assert sorted(os.listdir(outside)) == ["g"]
    del source


def test_a_source_directory_swapped_for_a_link_is_mirrored_as_the_link(tmp_path):
    """The event names a file below the swapped directory: the source rescans from the link
    and sends the link, never the content it points at."""
    import shutil

    from merkle_sync import FileSystemEvent, FileSystemEventType

    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    (src / "d").mkdir(parents=True)
    outside.mkdir()
    (src / "d" / "f").write_bytes(b"inside")
    (outside / "f").write_bytes(b"private, outside the source")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    shutil.rmtree(src / "d")
    os.symlink(outside, src / "d")
    fs.handle_event(FileSystemEvent(str(src / "d" / "f"), FileSystemEventType.FILE_MODIFIED))
    assert (dst / "d").is_symlink() and os.readlink(dst / "d") == str(outside)
    for path in dst.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert path.read_bytes() != b"private, outside the source"


def test_names_that_are_not_utf8_are_replicated_byte_exact(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    raw = os.fsencode(src)
    with open(raw + b"/bad\xff\xfename", "wb") as f:
        f.write(b"x")
    os.mkdir(raw + b"/dir\xe9")
    with open(raw + b"/dir\xe9/f\x80", "wb") as f:
        f.write(b"y")
    fs = DiskFileSystem()
    ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert sorted(os.listdir(os.fsencode(dst))) == [b".merkle_sync", b"bad\xff\xfename", b"dir\xe9"]
    assert os.listdir(os.fsencode(dst) + b"/dir\xe9") == [b"f\x80"]
    again = ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert again.stats.round_trips == 1  # the indexes kept them too


def test_an_unreadable_entry_is_skipped_and_reported_and_the_rest_syncs(tmp_path):
    """As rsync's exit 23: what cannot be read is reported, the target keeps its copy (it is
    not deleted for being unreadable here), and everything else is mirrored."""

    class Denying(DiskFileSystem):
        def read_range(self, path, offset, length):
            if path.endswith("secret.txt"):
                raise PermissionError(13, "Permission denied", path)
            return super().read_range(path, offset, length)

        def entries(self, path):
            if path.endswith("locked"):
                raise PermissionError(13, "Permission denied", path)
            return super().entries(path)

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "inside").write_bytes(b"old inside")
    (src / "secret.txt").write_bytes(b"old secret")
    (src / "plain.txt").write_bytes(b"plain")
    ReplicatorSource(
        DiskFileSystem(), str(src), ReplicatorTarget(DiskFileSystem(), str(dst)).handle_request
    )
    (src / "plain.txt").write_bytes(b"plain, edited")
    (src / "new.txt").write_bytes(b"new")
    fs = Denying()
    source = ReplicatorSource(
        fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request, index=False
    )
    mine = sorted(rel for rel, why in source.skipped if why != ON_TARGET)
    assert mine == ["locked", "secret.txt"]
    # The target reads through the same denying filesystem: it reports "locked" too.
    assert [rel for rel, why in source.skipped if why == ON_TARGET] == ["locked"]
    assert (dst / "plain.txt").read_bytes() == b"plain, edited"
    assert (dst / "new.txt").read_bytes() == b"new"
    assert (dst / "secret.txt").read_bytes() == b"old secret"  # kept, not deleted
    assert (dst / "locked" / "inside").read_bytes() == b"old inside"


def test_a_tree_deeper_than_the_recursion_limit_syncs_and_restarts(tmp_path):
    """1,200 nested directories: scans, hashes and applies walk with explicit stacks."""
    import sys

    from merkle_sync import MemoryFileSystem

    depth = sys.getrecursionlimit() + 200
    chain = "/".join(["d"] * depth)
    mem = MemoryFileSystem()
    mem.makedirs("/src")
    for level in range(1, depth + 1):
        mem.makedir("/src/" + "/".join(["d"] * level))
    mem.writefile(f"/src/{chain}/leaf", b"deep")
    target = ReplicatorTarget(mem, "/dst")
    ReplicatorSource(mem, "/src", target.handle_request)
    assert mem.readfile(f"/dst/{chain}/leaf") == b"deep"
    path = tmp_path / "src"
    path.mkdir()
    for _ in range(depth):  # os.makedirs itself recurses per missing parent
        path = path / "d"
        path.mkdir()
    (tmp_path / "src" / chain / "leaf").write_bytes(b"deep")
    try:
        deep_disk_sync(tmp_path, chain)
    finally:  # shutil.rmtree (pytest's cleanup) recurses per level too: undo it by hand
        for top in ("src", "dst"):
            remove_chain(tmp_path / top, depth)


def deep_disk_sync(tmp_path, chain: str) -> None:
    fs = DiskFileSystem()
    ReplicatorSource(
        fs, str(tmp_path / "src"), ReplicatorTarget(fs, str(tmp_path / "dst")).handle_request
    )
    assert (tmp_path / "dst" / chain / "leaf").read_bytes() == b"deep"
    again = ReplicatorSource(
        fs, str(tmp_path / "src"), ReplicatorTarget(fs, str(tmp_path / "dst")).handle_request
    )
    assert again.stats.round_trips == 1
    remove_chain(tmp_path / "src", chain.count("/") + 1)
    (tmp_path / "src" / "kept").write_text("the chain is gone")
    again.rescan()  # the target removes the whole chain (shutil.rmtree would recurse)
    assert sorted(os.listdir(tmp_path / "dst")) == [".merkle_sync", "kept"]


def test_removing_a_tree_deeper_than_any_limit_never_follows_a_link(tmp_path):
    """3,000 levels (past the recursion limit, the descriptor limit and PATH_MAX), each
    with a file and a link to a directory outside: all gone, the outside untouched."""
    from merkle_sync.diskfs import remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        os.symlink(str(outside), "link", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    open_before = len(os.listdir("/proc/self/fd"))
    DiskFileSystem().removedir(str(top))
    assert not top.exists()
    assert (outside / "precious").read_text() == "keep"
    assert len(os.listdir("/proc/self/fd")) == open_before
    with pytest.raises(NotADirectoryError):
        os.symlink(str(outside), tmp_path / "alias")
        remove_tree(str(tmp_path / "alias"))
    assert (outside / "precious").exists()


def remove_chain(top, depth: int) -> None:
    """Delete the chain of directories named ``d`` below ``top`` (as deep as it got), deepest
    first, with whatever files they hold; never leave it for a recursive cleanup."""
    path, levels = top, 0
    while levels < depth and (path / "d").is_dir() and not (path / "d").is_symlink():
        path, levels = path / "d", levels + 1
    for _ in range(levels):
        for name in os.listdir(path):
            if name != "d":
                entry = path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        os.rmdir(path)
        path = path.parent
