"""Files hashed in worker processes make the same tree and index as files hashed in the scan."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from merkle_sync import hashpool
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.fileindex import FileIndex
from merkle_sync.merkle import FileNode, iter_tree
from merkle_sync.scan import Scanner

OLD = 1_600_000_000


def make_tree(root: Path, count: int = 40) -> None:
    for i in range(count):
        p = root / f"d{i % 4}" / f"f{i:03}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(i * 997 + (40_000 if i == 7 else 0)))  # f000 is empty
        os.utime(p, (OLD, OLD))


def files(node) -> dict:
    return {
        rel: (n.hash, n.meta, n.tree.leaf_hashes())
        for rel, n in iter_tree(node)
        if isinstance(n, FileNode)
    }


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 8 files, a pool from 4: a small tree goes through several pooled batches."""
    monkeypatch.setattr(hashpool, "BATCH_FILES", 8)
    monkeypatch.setattr(hashpool, "POOL_MIN", 4)
    pooled = []
    drain = hashpool.HashQueue.drain

    def spy(self):
        drain(self)
        pooled.append(self._pool is not None)

    monkeypatch.setattr(hashpool.HashQueue, "drain", spy)
    return pooled


def test_a_pool_hashes_as_the_scan_does(tmp_path, small_batches):
    make_tree(tmp_path / "tree")
    pooled = Scanner(DiskFileSystem(), workers=2).node(str(tmp_path / "tree"))
    assert small_batches and all(small_batches)  # every batch went to the workers
    small_batches.clear()
    alone = Scanner(DiskFileSystem(), workers=1).node(str(tmp_path / "tree"))
    assert not any(small_batches)
    assert pooled.hash == alone.hash
    assert files(pooled) == files(alone) and len(files(alone)) == 40
    assert list(pooled.children["d1"].children) == sorted(alone.children["d1"].children)


def test_pooled_files_are_indexed(tmp_path, small_batches):
    make_tree(tmp_path / "tree")
    db = str(tmp_path / "index.sqlite")
    reads: list[str] = []

    class Counting(DiskFileSystem):
        def read_range(self, path, offset, length):
            reads.append(path)
            return super().read_range(path, offset, length)

    index = FileIndex(db)
    first = Scanner(DiskFileSystem(), index=index, workers=2).node(str(tmp_path / "tree"))
    index.commit()
    again = Scanner(Counting(), index=index, workers=2).node(str(tmp_path / "tree"))
    assert reads == [] and again.hash == first.hash


@pytest.mark.parametrize(
    ("error", "reported"), [(errno.ENOENT, False), (errno.EACCES, True), (errno.EIO, True)]
)
def test_a_file_that_fails_in_the_queue_is_skipped(tmp_path, monkeypatch, error, reported):
    """Gone since it was listed: simply absent; unreadable: reported, and the target keeps
    its copy (the directory's ``keep``), as for a file hashed in the scan."""
    make_tree(tmp_path / "tree", 8)
    real = hashpool.leaves

    def failing(path, read=None):
        if path.endswith("f005"):
            return OSError(error, os.strerror(error))
        return real(path, read)

    monkeypatch.setattr(hashpool, "leaves", failing)
    scanner = Scanner(DiskFileSystem(), workers=1)
    node = scanner.node(str(tmp_path / "tree"))
    assert "f005" not in node.children["d1"].children
    assert ("f005" in node.children["d1"].keep) == reported
    assert [rel for rel, _ in scanner.skipped] == (["d1/f005"] if reported else [])
    assert len(files(node)) == 7
