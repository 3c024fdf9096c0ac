"""Reads a directory of any contract filesystem into a Merkle tree: the I/O of tree building."""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from merkle_sync.beneath import EscapeRefused, check_beneath
from merkle_sync.contenttree import ContentTree, stream_tree
from merkle_sync.dirstamp import own_children, salt, stamp
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.fileindex import RACY_NS, FileIndex, StatKey
from merkle_sync.fs import EntryInfo, RangeReader, StatScanner
from merkle_sync.hashpool import HashQueue, cores
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
from merkle_sync.stamping import Stamping

__all__ = ["UNREADABLE", "EscapeRefused", "ReadCache", "Scanner", "check_beneath", "scan"]


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
#: Why an entry of the target is reported: its user could not read it (``WalkReply.unread``).
ON_TARGET = "could not be read on the target, so it was left there as it is"


def with_target(
    skipped: list[tuple[str, str]], unread: tuple[str, ...] | None, removed: Iterable[str] = ()
) -> list:
    """``skipped`` with the target's unreadable entries as its last reply to a root (if
    ``unread`` is one) listed them, instead of those it listed before, but for those below
    what this sync removed (they went with it)."""
    if unread is None:
        return skipped
    gone = tuple(r + "/" for r in removed)
    left = [rel for rel in unread if not (rel + "/").startswith(gone)]
    return [s for s in skipped if s[1] != ON_TARGET] + [(rel, ON_TARGET) for rel in left]


#: An entry skipped because it could not be read: the sync leaves the target's copy alone.
UNREADABLE: Any = object()
_UNREADABLE = UNREADABLE


class Scanner(Stamping):
    """Builds nodes reading each file at most once, and not at all when the index knows it.

    On a filesystem that lists with stat identities (``StatScanner``) and a ``FileIndex``,
    an unchanged file costs one ``lstat`` and an index lookup, and a directory whose stamp
    matches (``merkle_sync.dirstamp``) costs its ``lstat`` calls only. With ranged reads a file is
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
        workers: int | None = None,
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
        #: Directory stamps (``merkle_sync.dirstamp``): the stored rows while scanning (``None``
        #: when not used), the directories found, those whose stamp matched, and how many
        #: were listed entry by entry.
        self._stamps: dict[str, tuple] | None = None
        self._salt = salt(ignore)
        self.dirs: set[str] = set()
        self.clean: set[str] = set()
        self.dirty = 0
        self._pending: list[tuple[DirNode, tuple]] = []
        self._fresh: dict[int, tuple[str, DirNode, bytes, dict[str, bytes]]] = {}
        #: Directories (by ``id``) with a file still in the hash queue, here or below.
        self._waiting: set[int] = set()
        self._links: dict[str, bytes] = {}
        self._since = time.time_ns() - RACY_NS
        #: Files of a listed directory that must be read go to a queue, hashed in batches on
        #: every core (``merkle_sync.hashpool``); ``workers``: processes, default the cores.
        self._queue = None
        if self.listing and self.ranged:
            # Workers read with the disk's own reads: another filesystem reads here.
            workers = (cores() if type(fs) is DiskFileSystem else 1) if workers is None else workers
            self._queue = HashQueue(self._hashed, workers, fs.read_range)

    def node(self, path: str, rel: str = "") -> Node | None:
        fs = self.fs
        if not fs.exists(path):
            return None
        if rel and self.ignore is not None and self._ignored(rel, fs.isdir(path)):
            return None
        if self.listing:
            if self.index is not None and not self.verify and self._salt is not None:
                self._stamps = self.index.stamps.rows(rel)
            if self.index is not None and not rel:
                # A full scan: one query instead of one per file, unless stamps spare most.
                self.index.preload(later=bool(self._stamps))
            try:
                if not rel:
                    top = self._entry(path, rel, fs.info(path))
                else:
                    top = self._guarded(path, rel, fs.info(path))  # type: ignore[assignment]
                if self._queue is not None:
                    self._queue.drain()
                if self._stamps is not None:
                    self._settle()
                return top
            finally:
                if self._queue is not None:
                    self._queue.close()
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
            text = self._links[rel] = os.fsencode(os.readlink(path))
            return FileNode.from_data(KIND_LINK, text, meta)
        if kind == "f":
            return self.file(path, rel, key, meta)
        self.skipped.append((rel, SPECIAL))
        return None

    def _dir(self, path: str, rel: str, meta: Meta | None = None) -> DirNode:
        """Directories are walked with an explicit stack: any depth, no recursion limit.
        Each is visited again once everything below it is done (``_leave``)."""
        top = DirNode(meta=meta)
        stack: list[tuple[DirNode, str, str, DirNode | None, str]] = [(top, path, rel, None, "")]
        while stack:
            node, dir_path, dir_rel, parent, name = stack.pop()
            if not dir_path:  # everything below it is done
                if parent is None:
                    top = self._leave(top, None, "")
                else:
                    self._leave(own_children(parent)[name], parent, name)  # type: ignore[arg-type]
                continue
            if self._stamps is not None:
                stack.append((node, "", dir_rel, parent, name))
            try:
                used = self._fill(node, dir_path, dir_rel, stack)
                if used is not node:  # its stamp matched
                    if parent is None:
                        top = used
                    else:
                        own_children(parent)[name] = used
            except OSError as exc:
                if parent is None:
                    raise
                if self._stamps is not None:
                    stack.pop()  # (its visit once done)
                del parent.children[name]  # gone since its parent was listed: simply absent
                if not isinstance(exc, FileNotFoundError):  # unreadable: reported, kept there
                    parent.keep.add(name)
                    self.skipped.append((dir_rel, f"{type(exc).__name__}: {exc.strerror or exc}"))
        return top

    def _fill(self, node: DirNode, path: str, rel: str, stack: list) -> DirNode:
        """One directory's entries; its subdirectories are queued, not entered. Returns the
        node that stands for the directory: a ``StampedDir`` when its stamp matched."""
        ignore = self.ignore
        if self.listing:
            # In name order, as rsync creates them: a directory's size then comes out the same.
            infos = sorted(self.fs.entries(path))
            if not rel:
                infos = [info for info in infos if info[0] != RESERVED]
            prefix = path if path.endswith("/") else path + "/"
            self.dirs.add(rel)
            mark = None
            if self._stamps is not None:
                mark = stamp(infos, self._salt)
                known = self._stamps.get(rel)
                if known is not None and known[0] == mark:
                    return self._stamped(node, prefix, rel, infos, known, stack)
                self.dirty += 1
            # An unchanged file is the common case of a restart: looked up here directly.
            lookup = self.index.lookup if self.index is not None and not self.verify else None
            made, skipped, links = 0, len(self.skipped), {}
            for info in infos:
                name = info[0]
                child_path, child_rel = prefix + name, join(rel, name)
                if ignore is not None and ignore(child_rel, info[1] == "d"):
                    made += 1
                    continue
                if info[1] == "d":
                    made += 1
                    sub = node.children[name] = DirNode(meta=info[3])
                    stack.append((sub, child_path, child_rel, node, name))
                    continue
                if lookup is not None and info[1] == "f":
                    known = lookup(child_rel, info[2])
                    if known is not None:
                        made += 1
                        self.files += 1
                        self.seen.add(child_rel)
                        node.children[name] = FileNode(known[0], known[2], known[1], info[3])
                        continue
                if info[1] == "f" and self._queue is not None:
                    made += 1
                    node.children[name] = None  # type: ignore[assignment]  # (name order)
                    self._waiting.add(id(node))
                    self._queue.add((node, name, child_rel, info), child_path, info[2][0])
                    continue
                child = self._guarded(child_path, child_rel, info)
                if child is _UNREADABLE:
                    node.keep.add(name)
                elif child is not None:
                    made += 1
                    node.children[name] = child  # type: ignore[assignment]
                    if info[1] == "l":
                        links[name] = self._links.pop(child_rel)
            if (
                mark is not None
                and made == len(infos)
                and len(self.skipped) == skipped
                and all(max(i[2][1], i[2][2]) < self._since for i in infos)
            ):
                self._fresh[id(node)] = (rel, node, mark, links)
            return node
        self._fill_plain(node, path, rel, stack)
        return node

    def _hashed(self, item: tuple, tree: ContentTree | OSError) -> None:
        """A queued file's tree (or why it could not be read): as ``file`` would make it."""
        node, name, rel, info = item
        if isinstance(tree, OSError):
            del node.children[name]
            if not isinstance(tree, FileNotFoundError):  # gone since listed: simply absent
                node.keep.add(name)
                self.skipped.append((rel, f"{type(tree).__name__}: {tree.strerror or tree}"))
            return
        self.files += 1
        if self.on_read is not None:
            self.on_read(tree.size)
        node.children[name] = FileNode.from_tree(KIND_BYTES, tree, info[3])
        if self.index is not None:
            self.seen.add(rel)
            self.index.store(rel, info[2], KIND_BYTES, tree)

    def _fill_plain(self, node: DirNode, path: str, rel: str, stack: list) -> None:
        """A filesystem that lists names only (the contract's): one test per entry."""
        ignore = self.ignore
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
