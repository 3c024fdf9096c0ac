"""Reads a directory of any contract filesystem into a Merkle tree: the I/O of tree building."""

from __future__ import annotations

import posixpath
from functools import partial
from typing import Any

from merkle_sync.contenttree import stream_tree
from merkle_sync.fileindex import FileIndex, StatKey
from merkle_sync.fs import RangeReader, StatScanner
from merkle_sync.merkle import KIND_BYTES, DirNode, FileNode, Node, encode_content, join
from merkle_sync.protocol import RESERVED


class Scanner:
    """Builds nodes reading each file at most once, and not at all when the index knows it.

    On a filesystem that lists with stat identities (``StatScanner``) and a ``FileIndex``,
    an unchanged file costs one ``lstat`` and an index lookup. With ranged reads a file is
    streamed through a bounded window; otherwise it is read whole, and ``keep`` may hold on
    to its bytes for the sync that follows. The reserved name at the root is never scanned.
    """

    def __init__(
        self,
        fs: Any,
        keep: dict[str, bytes] | None = None,
        index: FileIndex | None = None,
        verify: bool = False,
    ) -> None:
        self.fs = fs
        self.keep = keep
        self.index = index
        self.verify = verify
        self.ranged = isinstance(fs, RangeReader)
        self.listing = isinstance(fs, StatScanner)
        self.seen: set[str] = set()

    def node(self, path: str, rel: str = "") -> Node | None:
        fs = self.fs
        if not fs.exists(path):
            return None
        if not fs.isdir(path):
            key = fs.stat_key(path) if self.listing else None
            return self.file(path, rel, key)
        return self._dir(path, rel)

    def _dir(self, path: str, rel: str) -> DirNode:
        node = DirNode()
        if self.listing:
            for name, is_dir, key in self.fs.entries(path):
                if rel or name != RESERVED:
                    child, crel = posixpath.join(path, name), join(rel, name)
                    node.children[name] = (
                        self._dir(child, crel) if is_dir else self.file(child, crel, key)
                    )
            return node
        for name in self.fs.listdir(path):
            if rel or name != RESERVED:
                child = self.node(posixpath.join(path, name), join(rel, name))
                if child is not None:
                    node.children[name] = child
        return node

    def file(self, path: str, rel: str, key: StatKey | None = None) -> FileNode:
        index = self.index if key is not None else None
        if index is not None:
            self.seen.add(rel)
            if not self.verify:
                known = index.lookup(rel, key)  # type: ignore[arg-type]
                if known is not None:
                    return FileNode.from_tree(*known)
        if self.ranged:
            node = FileNode.from_tree(KIND_BYTES, stream_tree(partial(self.fs.read_range, path)))
        else:
            kind, data = encode_content(self.fs.readfile(path))
            if self.keep is not None:
                self.keep[rel] = data
            node = FileNode.from_data(kind, data)
        if index is not None:
            index.store(rel, key, node.kind, node.tree)  # type: ignore[arg-type]
        return node


def scan(fs: Any, path: str, rel: str = "", keep: dict[str, bytes] | None = None) -> Node | None:
    """Build the node at ``path`` reading each file once (no persistent index)."""
    return Scanner(fs, keep).node(path, rel)
