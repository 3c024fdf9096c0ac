"""The one guard of every path a scan or a write goes through: each directory on the way is a
real directory, never a symbolic link someone put there (which could lead out of the tree)."""

from __future__ import annotations

import posixpath
from typing import Any


class EscapeRefused(OSError):
    """A directory on a path inside a mirrored tree is no longer a directory (a symbolic link
    put there by someone else, say): following it could read or write outside the tree, so
    nothing is done there. A rescan from above sees the link for what it is."""

    def __init__(self, message: str, rel: str) -> None:
        super().__init__(message)
        self.rel = rel  # the entry that is not a real directory


def check_beneath(fs: Any, root: str, rel_dir: str, checked: set[str]) -> None:
    """Every directory from ``root`` down to ``rel_dir`` is a real directory, not a link
    (``fs.isdir`` never follows one on a disk). ``checked`` remembers what passed."""
    todo = []
    while rel_dir not in checked:
        todo.append(rel_dir)
        if not rel_dir:
            break
        rel_dir = posixpath.dirname(rel_dir)
    for rel in reversed(todo):  # from the root down
        path = posixpath.join(root, rel) if rel else root
        try:
            real = fs.isdir(path)
        except OSError:
            real = False
        if not real:
            raise EscapeRefused(f"refusing to go through {path!r}: not a real directory", rel)
        checked.add(rel)
