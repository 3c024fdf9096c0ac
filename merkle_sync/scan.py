"""Reads a directory of any contract filesystem into a Merkle tree: the I/O of tree building."""

from __future__ import annotations

import posixpath
from typing import Any

from merkle_sync.merkle import DirNode, FileNode, Node, encode_content, join


def scan(fs: Any, path: str, rel: str = "", keep: dict[str, bytes] | None = None) -> Node | None:
    """Build the node at ``path`` reading each file once; ``keep`` collects the bytes read."""
    if not fs.exists(path):
        return None
    if not fs.isdir(path):
        kind, data = encode_content(fs.readfile(path))
        if keep is not None:
            keep[rel] = data
        return FileNode.from_data(kind, data)
    node = DirNode()
    for name in fs.listdir(path):
        child = scan(fs, posixpath.join(path, name), join(rel, name), keep)
        if child is not None:
            node.children[name] = child
    return node
