"""The floor: a replicator that ships whole files and rewrites every file it is told about."""

from __future__ import annotations

import posixpath
from typing import Any


def _read_tree(fs: Any, path: str) -> Any:
    """The whole subtree as nested dicts of contents; ``None`` when nothing is there."""
    if not fs.exists(path):
        return None
    if not fs.isdir(path):
        return fs.readfile(path)
    return {name: _read_tree(fs, posixpath.join(path, name)) for name in fs.listdir(path)}


class NaiveTarget:
    def __init__(self, fs: Any, dir_path: str) -> None:
        self.fs = fs
        self.dir = dir_path
        fs.makedirs(dir_path)

    def handle_request(self, request: tuple[str, Any]) -> bool:
        rel, tree = request
        path = posixpath.join(self.dir, rel) if rel else self.dir
        if rel and self.fs.exists(path):
            (self.fs.removedir if self.fs.isdir(path) else self.fs.removefile)(path)
        elif not rel:
            for name in self.fs.listdir(path):
                child = posixpath.join(path, name)
                (self.fs.removedir if self.fs.isdir(child) else self.fs.removefile)(child)
        self._put(path, tree, root=not rel)
        return True

    def _put(self, path: str, tree: Any, root: bool = False) -> None:
        if tree is None:
            return
        if isinstance(tree, dict):
            if not root:
                self.fs.makedir(path)
            for name, child in tree.items():
                self._put(posixpath.join(path, name), child)
        else:
            self.fs.writefile(path, tree)


class NaiveSource:
    """Sends the whole tree at construction and the whole subtree at each event's path."""

    def __init__(self, fs: Any, dir_path: str, rpc_handle: Any) -> None:
        self.fs = fs
        self.dir = dir_path
        self.rpc = rpc_handle
        self.rpc(("", _read_tree(fs, dir_path)))

    def handle_event(self, event: Any) -> None:
        rel = posixpath.relpath(event.path, self.dir)
        self.rpc((rel, _read_tree(self.fs, event.path)))
