"""Reads a directory of any contract filesystem into a Merkle tree: the I/O of tree building."""

from __future__ import annotations

import posixpath
from functools import partial
from typing import Any

from merkle_sync.contenttree import stream_tree
from merkle_sync.fs import RangeReader
from merkle_sync.merkle import KIND_BYTES, DirNode, FileNode, Node, encode_content, join
from merkle_sync.protocol import RESERVED


def scan_file(fs: Any, path: str, keep: dict[str, bytes] | None = None, rel: str = "") -> FileNode:
    """One file's node. A filesystem with ranged reads is streamed through a bounded window;
    otherwise the file is read whole once, and ``keep`` may hold on to its bytes."""
    if isinstance(fs, RangeReader):
        return FileNode.from_tree(KIND_BYTES, stream_tree(partial(fs.read_range, path)))
    kind, data = encode_content(fs.readfile(path))
    if keep is not None:
        keep[rel] = data
    return FileNode.from_data(kind, data)


def scan(fs: Any, path: str, rel: str = "", keep: dict[str, bytes] | None = None) -> Node | None:
    """Build the node at ``path`` reading each file once. The reserved name at the root of the
    tree (``RESERVED``) is never part of it."""
    if not fs.exists(path):
        return None
    if not fs.isdir(path):
        return scan_file(fs, path, keep, rel)
    node = DirNode()
    for name in fs.listdir(path):
        if not rel and name == RESERVED:
            continue
        child = scan(fs, posixpath.join(path, name), join(rel, name), keep)
        if child is not None:
            node.children[name] = child
    return node
