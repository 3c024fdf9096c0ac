"""Metadata as rsync -a keeps it: modes, mtimes (ns) and symbolic links, on real directories."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from merkle_sync import (
    FileSystemEvent,
    FileSystemEventType,
    ReplicatorSource,
    ReplicatorTarget,
)
from merkle_sync.diskfs import DiskFileSystem

OLD = 1_500_000_000_123_456_789


def find(root) -> list[str]:
    """What ``find -printf '%P %y %m %s %T@ %l'`` shows, without the target's own state."""
    if shutil.which("find"):
        out = subprocess.run(
            ["find", str(root), "-mindepth", "1", "-printf", r"%P %y %m %s %T@ %l\n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    else:  # the same fields from lstat
        out = []
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                link = os.readlink(p) if os.path.islink(p) else ""
                rel = os.path.relpath(p, root)
                out.append(f"{rel} {st.st_mode:o} {st.st_size} {st.st_mtime_ns} {link}")
    return sorted(line for line in out if not line.startswith(".merkle_sync"))


def build(src, outside) -> None:
    (src / "bin").mkdir(parents=True)
    (src / "docs" / "deep").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "bin" / "tool").chmod(0o755)
    (src / "docs" / "private.txt").write_bytes(b"secret-ish")
    (src / "docs" / "private.txt").chmod(0o600)
    (src / "docs" / "deep" / "odd").write_bytes(b"odd mode")
    (src / "docs" / "deep" / "odd").chmod(0o4751)
    os.symlink("../bin/tool", src / "docs" / "relative")
    os.symlink(str(outside / "secret"), src / "absolute")
    os.symlink("does/not/exist", src / "dangling")
    os.symlink("docs", src / "to_dir")
    (src / "empty").chmod(0o1777)
    for dirpath, dirs, files in os.walk(src, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(dirpath, name), ns=(OLD, OLD), follow_symlinks=False)


def test_modes_times_and_links_come_out_as_after_rsync_a(tmp_path):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"never read")
    build(src, outside)
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request)
    assert find(dst) == find(src)
    assert os.readlink(dst / "absolute") == str(outside / "secret")  # copied, not resolved
    # An edit inside a directory keeps the directory's time on both sides.
    (src / "docs" / "private.txt").write_bytes(b"changed")
    os.utime(src / "docs" / "private.txt", ns=(OLD, OLD))
    source.rescan()
    assert find(dst) == find(src)
    # A link that points elsewhere now, and a file that became a link.
    os.unlink(src / "dangling")
    os.symlink("bin", src / "dangling")
    os.unlink(src / "bin" / "tool")
    os.symlink("/etc/passwd", src / "bin" / "tool")
    source.rescan()
    assert find(dst) == find(src)
    # A restarted pair finds nothing to do.
    again = ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert again.stats.round_trips == 1


class CountingDisk(DiskFileSystem):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def stage(self, tmp_dir):
        self.writes += 1
        return super().stage(tmp_dir)


@pytest.mark.parametrize("mode", ["event", "walk"])
@pytest.mark.parametrize("change", ["chmod", "touch"])
def test_a_mode_or_time_change_sends_no_content_and_rewrites_nothing(tmp_path, change, mode):
    """From an event it is one small Apply; a walk (after a restart) lists the directory."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}.py").write_bytes(os.urandom(5000))
    fs = CountingDisk()
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request)
    inode = (dst / "f7.py").stat().st_ino
    if change == "chmod":
        (src / "f7.py").chmod(0o755)
    else:
        os.utime(src / "f7.py", ns=(OLD, OLD))
    up, down, literal, writes = (
        source.stats.bytes_up,
        source.stats.bytes_down,
        source.stats.literal_bytes,
        fs.writes,
    )
    if mode == "event":
        fs.handle_event(FileSystemEvent(str(src / "f7.py"), FileSystemEventType.FILE_MODIFIED))
    else:
        source.rescan()
    assert find(dst) == find(src)
    sent = source.stats.bytes_up + source.stats.bytes_down - up - down
    assert sent <= (400 if mode == "event" else 2000)
    assert source.stats.literal_bytes == literal
    assert fs.writes == writes
    assert (dst / "f7.py").stat().st_ino == inode
