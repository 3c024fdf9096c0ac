"""The persistent index: a restart of unchanged trees reads no file content on either side."""

from __future__ import annotations

import os
import sqlite3

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.testing import same_tree

OLD = 1_600_000_000


class CountingDisk(DiskFileSystem):
    """Counts content reads; can pretend a file's ctime never moves (to fool the index)."""

    def __init__(self, frozen_ctime: bool = False) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.frozen_ctime = frozen_ctime

    def read_range(self, path, offset, length):
        self.reads.append(path)
        return super().read_range(path, offset, length)

    def readfile(self, path):
        self.reads.append(path)
        return super().readfile(path)

    def _freeze(self, key):
        return (*key[:2], 0, *key[3:]) if self.frozen_ctime else key

    def entries(self, path):
        return [(n, kind, self._freeze(k), meta) for n, kind, k, meta in super().entries(path)]

    def info(self, path):
        name, kind, key, meta = super().info(path)
        return name, kind, self._freeze(key), meta

    def stat_key(self, path):
        return self._freeze(super().stat_key(path))


def make_tree(root) -> None:
    for i in range(30):
        p = root / f"d{i % 3}" / f"f{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(100 + 1000 * i))
        os.utime(p, (OLD, OLD))  # older than the racy window


def sync(fs, src, dst, **kw):
    target = ReplicatorTarget(fs, str(dst), **kw)
    source = ReplicatorSource(fs, str(src), target.handle_request, **kw)
    return source, target


def test_a_restart_of_unchanged_trees_reads_no_content(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    fs = CountingDisk()
    sync(fs, src, dst)
    assert same_tree(fs, str(src), fs, str(dst))
    fs.reads.clear()
    source, _ = sync(fs, src, dst)
    assert fs.reads == []
    assert source.stats.round_trips == 1  # equal roots: nothing else crosses
    # A changed file is hashed again on the source alone, and only its change travels.
    (src / "d1" / "f4.txt").write_bytes(b"changed")
    fs.reads.clear()
    sync(fs, src, dst)
    assert set(fs.reads) == {str(src / "d1" / "f4.txt")}
    assert same_tree(fs, str(src), fs, str(dst))


def test_a_deleted_or_corrupt_index_is_rebuilt(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    fs = CountingDisk()
    sync(fs, src, dst)
    for p in dst.rglob("f*.txt"):  # as if written a while ago, so a rescan may remember them
        os.utime(p, (OLD, OLD))
    index = dst / ".merkle_sync" / "index.sqlite"
    assert index.exists()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{index}{suffix}"):
            os.unlink(f"{index}{suffix}")
    fs.reads.clear()
    sync(fs, src, dst)
    assert {p for p in fs.reads if p.startswith(str(dst))}  # the target hashed again
    index.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{index}{suffix}"):
            os.unlink(f"{index}{suffix}")
    sync(fs, src, dst)
    assert sqlite3.connect(index).execute("select count(*) from files").fetchone()[0] == 30
    fs.reads.clear()
    sync(fs, src, dst)
    assert fs.reads == []
    assert same_tree(fs, str(src), fs, str(dst))


def test_a_change_that_keeps_size_and_mtime_is_caught_by_ctime_or_by_verify(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    victim = src / "d0" / "f3.txt"
    size = victim.stat().st_size
    sync(DiskFileSystem(), src, dst)
    victim.write_bytes(os.urandom(size))
    os.utime(victim, (OLD, OLD))  # same size, same mtime: only the ctime moved
    sync(DiskFileSystem(), src, dst)
    assert same_tree(DiskFileSystem(), str(src), DiskFileSystem(), str(dst))
    # A filesystem whose stat shows no change at all fools the index, not the verify mode.
    fooled = CountingDisk(frozen_ctime=True)
    sync(fooled, src, dst)  # index entries with the frozen identity
    victim.write_bytes(os.urandom(size))
    os.utime(victim, (OLD, OLD))
    sync(fooled, src, dst)
    assert not same_tree(fooled, str(src), fooled, str(dst))  # missed, as rsync without -c
    sync(fooled, src, dst, verify=True)
    assert same_tree(fooled, str(src), fooled, str(dst))
