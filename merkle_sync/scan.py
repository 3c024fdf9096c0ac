"""Reads a directory of any contract filesystem into a Merkle tree: the I/O of tree building."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from functools import partial
from typing import Any

from merkle_sync.contenttree import stream_tree
from merkle_sync.fileindex import FileIndex, StatKey
from merkle_sync.fs import EntryInfo, RangeReader, StatScanner
from merkle_sync.merkle import (
    KIND_BYTES,
    KIND_LINK,
    DirNode,
    FileNode,
    Meta,
    Node,
    encode_content,
    join,
)
from merkle_sync.protocol import RESERVED


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


class ReadCache(dict):
    """Bytes read by the current scan, up to a budget, so a sync need not read them again."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.size = 0

    def __setitem__(self, rel: str, data: bytes) -> None:
        if self.size + len(data) <= self.budget:
            super().__setitem__(rel, data)
            self.size += len(data)

    def clear(self) -> None:
        super().clear()
        self.size = 0


#: Why a FIFO, socket or device is skipped: a warning, not an error (rsync without -D).
SPECIAL = "not a regular file, directory or symbolic link"

#: An entry skipped because it could not be read: the sync leaves the target's copy alone.
UNREADABLE: Any = object()
_UNREADABLE = UNREADABLE


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
        ignore: Callable[[str, bool], bool] | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.fs = fs
        #: Told the size of each window of file content read for hashing (progress).
        self.on_read = on_read
        #: ``ignore(rel, is_dir)``: entries it matches are left out as if absent.
        self.ignore = ignore or None
        self.keep = keep
        self.index = index
        self.verify = verify
        self.ranged = isinstance(fs, RangeReader)
        self.listing = isinstance(fs, StatScanner)
        self.seen: set[str] = set()
        #: Entries left out of the tree, with the reason: ``(rel, why)``.
        self.skipped: list[tuple[str, str]] = []
        self.files = 0  # files and links scanned

    def node(self, path: str, rel: str = "") -> Node | None:
        fs = self.fs
        if not fs.exists(path):
            return None
        if rel and self.ignore is not None and self._ignored(rel, fs.isdir(path)):
            return None
        if self.listing:
            if self.index is not None and not rel:
                self.index.preload()  # a full scan: one query instead of one per file
            try:
                if not rel:
                    return self._entry(path, rel, fs.info(path))
                return self._guarded(path, rel, fs.info(path))  # type: ignore[return-value]
            finally:
                if self.index is not None:
                    self.index.release()
        if not fs.isdir(path):
            return self.file(path, rel)
        return self._dir(path, rel)

    def _ignored(self, rel: str, is_dir: bool) -> bool:
        """An excluded path, or one inside an excluded directory."""
        assert self.ignore is not None
        parts = rel.split("/")
        return any(
            self.ignore("/".join(parts[:i]), True) for i in range(1, len(parts))
        ) or self.ignore(rel, is_dir)

    def _guarded(self, path: str, rel: str, info: EntryInfo) -> Node | object | None:
        """One entry of a listing; one that cannot be read is skipped and reported (and the
        target keeps its copy), one that vanished since the listing is simply gone."""
        try:
            return self._entry(path, rel, info)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.skipped.append((rel, f"{type(exc).__name__}: {exc.strerror or exc}"))
            return _UNREADABLE

    def _entry(self, path: str, rel: str, info: EntryInfo) -> Node | None:
        _, kind, key, meta = info
        if kind == "d":
            return self._dir(path, rel, meta)
        if kind == "l":  # the link text, copied as it is, never followed
            self.files += 1
            return FileNode.from_data(KIND_LINK, os.fsencode(os.readlink(path)), meta)
        if kind == "f":
            return self.file(path, rel, key, meta)
        self.skipped.append((rel, SPECIAL))
        return None

    def _dir(self, path: str, rel: str, meta: Meta | None = None) -> DirNode:
        """Directories are walked with an explicit stack: any depth, no recursion limit."""
        top = DirNode(meta=meta)
        stack: list[tuple[DirNode, str, str, DirNode | None, str]] = [(top, path, rel, None, "")]
        while stack:
            node, dir_path, dir_rel, parent, name = stack.pop()
            try:
                self._fill(node, dir_path, dir_rel, stack)
            except OSError as exc:
                if parent is None:
                    raise
                del parent.children[name]  # gone since its parent was listed: simply absent
                if not isinstance(exc, FileNotFoundError):  # unreadable: reported, kept there
                    parent.keep.add(name)
                    self.skipped.append((dir_rel, f"{type(exc).__name__}: {exc.strerror or exc}"))
        return top

    def _fill(self, node: DirNode, path: str, rel: str, stack: list) -> None:
        """One directory's entries; its subdirectories are queued, not entered."""
        ignore = self.ignore
        if self.listing:
            # An unchanged file is the common case of a restart: looked up here directly.
            lookup = self.index.lookup if self.index is not None and not self.verify else None
            # In name order, as rsync creates them: a directory's size then comes out the same.
            prefix = path if path.endswith("/") else path + "/"
            for info in sorted(self.fs.entries(path)):
                name = info[0]
                if not rel and name == RESERVED:
                    continue
                child_path, child_rel = prefix + name, join(rel, name)
                if ignore is not None and ignore(child_rel, info[1] == "d"):
                    continue
                if info[1] == "d":
                    sub = node.children[name] = DirNode(meta=info[3])
                    stack.append((sub, child_path, child_rel, node, name))
                    continue
                if lookup is not None and info[1] == "f":
                    known = lookup(child_rel, info[2])
                    if known is not None:
                        self.files += 1
                        self.seen.add(child_rel)
                        node.children[name] = FileNode(known[0], known[2], known[1], info[3])
                        continue
                child = self._guarded(child_path, child_rel, info)
                if child is _UNREADABLE:
                    node.keep.add(name)
                elif child is not None:
                    node.children[name] = child  # type: ignore[assignment]
            return
        for name in self.fs.listdir(path):
            if not rel and name == RESERVED:
                continue
            child_path, child_rel = posixpath.join(path, name), join(rel, name)
            if not self.fs.exists(child_path):
                continue
            is_dir = self.fs.isdir(child_path)
            if ignore is not None and ignore(child_rel, is_dir):
                continue
            if is_dir:
                sub = node.children[name] = DirNode()
                stack.append((sub, child_path, child_rel, node, name))
            else:
                node.children[name] = self.file(child_path, child_rel)

    def file(
        self, path: str, rel: str, key: StatKey | None = None, meta: Meta | None = None
    ) -> FileNode:
        self.files += 1
        index = self.index if key is not None else None
        if index is not None:
            self.seen.add(rel)
            if not self.verify:
                known = index.lookup(rel, key)  # type: ignore[arg-type]
                if known is not None:
                    kind, digest, tree = known
                    return FileNode(kind, tree, digest, meta)  # type: ignore[arg-type]
        if self.ranged:
            read = partial(self.fs.read_range, path)
            if self.on_read is not None:
                read = _counted(read, self.on_read)
            tree = stream_tree(read)
            node = FileNode.from_tree(KIND_BYTES, tree, meta)
        else:
            kind, data = encode_content(self.fs.readfile(path))
            if self.keep is not None:
                self.keep[rel] = data
            node = FileNode.from_data(kind, data)
        if index is not None:
            index.store(rel, key, node.kind, node.tree)  # type: ignore[arg-type]
        return node


def _counted(
    read: Callable[[int, int], bytes], tell: Callable[[int], None]
) -> Callable[[int, int], bytes]:
    def counted(offset: int, length: int) -> bytes:
        data = read(offset, length)
        tell(len(data))
        return data

    return counted


def scan(fs: Any, path: str, rel: str = "", keep: dict[str, bytes] | None = None) -> Node | None:
    """Build the node at ``path`` reading each file once (no persistent index)."""
    return Scanner(fs, keep).node(path, rel)
