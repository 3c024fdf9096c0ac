"""The target's content on its filesystem: reading held pieces, staging new files, keeping removed
ones for reuse. The protocol logic (what to apply, in which order) lives in ``applier.py``.

On a filesystem with the optional capabilities (``DiskFileSystem``) new files are staged in
``<target>/.merkle_sync/tmp`` and renamed into place, reused ranges are copied in the kernel,
and removed files are moved aside into ``<target>/.merkle_sync/held`` instead of being read.
On a filesystem with only the contract, files are assembled in memory and written with one
``writefile`` each, and removed files are read into memory while the budget lasts.
"""

from __future__ import annotations

import posixpath
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from merkle_sync.chunking import leaf_hash
from merkle_sync.contentindex import ContentIndex, Graves
from merkle_sync.contenttree import ContentTree
from merkle_sync.fileindex import FileIndex
from merkle_sync.freshness import Freshness, StaleContent
from merkle_sync.fs import Linker, Patcher, RangeReader, StagedFile, Stager, StatScanner
from merkle_sync.merkle import (
    KIND_LINK,
    DirNode,
    FileNode,
    Meta,
    Node,
    decode_content,
    encode_content,
    iter_tree,
)
from merkle_sync.patchfile import NotPatchable, PatchedFile
from merkle_sync.protocol import RESERVED, ProtocolError
from merkle_sync.scan import check_beneath

#: Files at least this large are changed in place behind an undo journal when their new
#: version keeps every byte of the old one's length, so an edit writes only what changed.
PATCH_MIN = 64 << 20
#: Bytes a patch may overwrite (and journal); past this the file is staged and renamed.
PATCH_MAX = 64 << 20


class MemoryStagedFile:
    """A file assembled in memory, for filesystems that only have ``writefile``."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.buf += data

    def copy_from(self, path: str, offset: int, length: int) -> None:  # pragma: no cover
        raise NotImplementedError("memory staging copies through TargetStore.copy")

    def commit(self, path: str) -> None:  # pragma: no cover
        raise NotImplementedError("memory staging commits through TargetStore.commit")

    def abort(self) -> None:
        self.buf = bytearray()


Sink = StagedFile | MemoryStagedFile | PatchedFile


#: Bytes read at a time when reused content must be checked leaf by leaf.
CHECK_WINDOW = 4 << 20


class TargetStore:
    """Everything the target does to its filesystem, and the index of what it holds."""

    def __init__(
        self,
        fs: Any,
        root: str,
        keep_removed: int,
        patch_min: int | None = PATCH_MIN,
        durable: bool = True,
    ) -> None:
        self.fs = fs
        #: Flush the filesystem twice per frame: staged data before the renames, then the
        #: renames. A power loss never leaves an empty or torn file where a sync succeeded.
        self.durable_writes = durable and hasattr(fs, "sync_data")
        self.dir = root
        self.keep_removed = keep_removed
        self.index = ContentIndex()
        self.ranged = isinstance(fs, RangeReader)
        self.staging = self.ranged and isinstance(fs, Stager)
        self.keeps_meta = isinstance(fs, StatScanner)  # checked once: Protocol checks are slow
        self._held_bytes: dict[str, bytes] = {}
        self.graves = Graves(self.index, keep_removed, self._drop)
        #: The persistent index of the target's files, on a disk (see ``open_index``).
        self.file_index: FileIndex | None = None
        self.state_dir = posixpath.join(root, RESERVED)
        self.lock: Any = None
        if self.staging:
            state = self.state_dir
            fs.makedirs(state)
            # Before anything is locked, cleared or created in it: a link put in its place
            # would lead the clean-up below out of the tree.
            check_beneath(fs, root, RESERVED, set())
            #: Held for the target's life: two writers in one directory would clear each
            #: other's staged files and race on every rename.
            lock = getattr(fs, "lock", None)
            self.lock = lock(posixpath.join(state, "lock")) if lock is not None else None
            self.tmp_dir = posixpath.join(state, "tmp")
            self.held_dir = posixpath.join(state, "held")
            if isinstance(fs, Patcher) and fs.exists(self.tmp_dir):
                fs.recover_patches(self.tmp_dir)  # a crash mid-patch: the old version returns
            for d in (self.tmp_dir, self.held_dir):  # leftovers of an interrupted run
                if fs.exists(d):
                    fs.removedir(d)
                fs.makedirs(d)
        self.patch_min = patch_min if self.staging and isinstance(fs, Patcher) else None
        self._patches: dict[str, PatchedFile] = {}  # open patches by path: their old bytes
        self._checked: set[str] = set()  # directories checked real during this request
        self._dir_meta: dict[str, tuple[int, int]] = {}  # parents' modes (``in_dir_of``)
        #: Whether a file's indexed bytes are still on the disk before they are reused.
        self.fresh = Freshness(fs, None, self.where, self.staging and self.keeps_meta)

    def close(self) -> None:
        if self.file_index is not None:
            self.file_index.close()
            self.file_index = self.fresh.file_index = None
        lock, self.lock = self.lock, None
        if lock is not None:
            lock.close()

    def open_index(self, index: str | bool) -> FileIndex | None:
        """``True``: ``<target>/.merkle_sync/index.sqlite``; a path: there; ``False``: none.
        Only a filesystem that lists with stat identities can trust an index."""
        if index is False or not (self.staging and isinstance(self.fs, StatScanner)):
            return None
        path = index if isinstance(index, str) else posixpath.join(self.state_dir, "index.sqlite")
        self.file_index = self.fresh.file_index = FileIndex(path)
        return self.file_index

    def abs(self, rel: str) -> str:
        """The path of ``rel`` on the filesystem; on a disk, only once every directory above
        it, from the target's root down, is checked to be a real directory, not a link."""
        if self.staging:
            self._beneath(posixpath.dirname(rel) if rel else "")
        return posixpath.join(self.dir, rel) if rel else self.dir

    def _tmp(self) -> str:
        self._beneath(posixpath.join(RESERVED, "tmp"))
        return self.tmp_dir

    def durable(self) -> None:
        if self.durable_writes:
            self.fs.sync_data(self.dir)

    def begin_request(self) -> None:
        """Directories checked for one request only: between requests anything may change."""
        self._checked.clear()
        self._dir_meta.clear()
        self.fresh.begin()

    def _beneath(self, rel_dir: str) -> None:
        check_beneath(self.fs, self.dir, rel_dir, self._checked)

    def where(self, rel: str) -> str:
        """The path holding a file's or a grave's bytes."""
        if rel[:1] == "\0":
            self._beneath(posixpath.join(RESERVED, "held"))
            return posixpath.join(self.held_dir, rel[1:])
        return self.abs(rel)

    # -- reading ---------------------------------------------------------------------------
    def read(self, rel: str, start: int, end: int, cache: dict[str, bytes]) -> bytes:
        """Bytes ``[start, end)`` of a held file; whole files are read once per request."""
        if rel in self._patches:
            return self._patches[rel].read_old(start, end - start)
        if rel in self._held_bytes:
            return self._held_bytes[rel][start:end]
        if self.ranged:
            data = self.fs.read_range(self.where(rel), start, end - start)
        else:
            if rel not in cache:
                cache[rel] = encode_content(self.fs.readfile(self.abs(rel)))[1]
            data = cache[rel][start:end]
        if len(data) != end - start:
            raise StaleContent(rel, "is shorter than its index says")
        return data

    # -- staging ---------------------------------------------------------------------------
    def open(self, rel: str, old: Node | None, size: int, kind: int = 1) -> Sink:
        """Where a new version of ``rel`` is built: in place, staged, or in memory."""
        if kind == KIND_LINK:  # a few bytes of link text, made into a link at commit
            if not isinstance(self.fs, Linker):
                raise ProtocolError(f"this target cannot hold the symbolic link {rel!r}")
            return MemoryStagedFile()
        big = isinstance(old, FileNode) and self.patch_min is not None
        if big and old.tree.size >= self.patch_min and size >= old.tree.size:  # type: ignore
            try:
                patch = self.fs.patch(self.abs(rel), self._tmp())
            except (NotPatchable, OSError):
                patch = None  # hard-linked, not a regular file, not writable: stage instead
            if patch is not None:
                self._patches[rel] = patch
                return patch
        return self.fs.stage(self._tmp()) if self.staging else MemoryStagedFile()

    def unchanged(self, sink: Sink, path: str, rel: str, start: int, at: int) -> bool:
        """True when a reused piece is already in place in the file being patched."""
        return isinstance(sink, PatchedFile) and rel == path and start == at

    def copy_node(
        self, sink: Sink, rel: str, tree: ContentTree, level: int, index: int, cache: dict
    ) -> None:
        """Append a node's bytes from a file of the target: copied unread when its stat
        identity vouches for them, otherwise read a window at a time and every leaf checked
        against its hash (``StaleContent`` if one differs)."""
        start, end = tree.span(level, index)
        if rel in self._patches or rel in self._held_bytes or self.fresh.vouched(rel):
            self.copy(sink, rel, start, end, cache)
            return
        ends = tree.leaf_ends()
        leaf = bisect_right(ends, start)
        while start < end:
            last = leaf
            while (
                last + 1 < len(ends)
                and ends[last + 1] <= end
                and ends[last + 1] - start <= CHECK_WINDOW
            ):
                last += 1
            data = self.read(rel, start, ends[last], cache)
            view = memoryview(data)
            for i in range(leaf, last + 1):
                a, b = (ends[i - 1] if i else 0) - start, ends[i] - start
                if leaf_hash(view[a:b]) != tree.hash(0, i):
                    raise StaleContent(rel)
            sink.write(data)
            start, leaf = ends[last], last + 1

    def copy(self, sink: Sink, rel: str, start: int, end: int, cache: dict[str, bytes]) -> None:
        """Append reused bytes: in the kernel on a disk, through memory otherwise."""
        patched = self._patches.get(rel)
        if patched is not None and patched is not sink:  # its old bytes, partly journaled
            for at in range(start, end, 1 << 20):
                sink.write(patched.read_old(at, min(1 << 20, end - at)))
        elif (
            self.staging and rel not in self._held_bytes and not isinstance(sink, MemoryStagedFile)
        ):
            sink.copy_from(self.where(rel), start, end - start)
        else:
            sink.write(self.read(rel, start, end, cache))

    def segment_done(self, rel: str, sink: Sink) -> Sink:
        """A frame's part of a file is queued: patch it now, or stage the file instead when
        the patch would overwrite more than ``PATCH_MAX``."""
        if not isinstance(sink, PatchedFile):
            return sink
        if sink.journaled + sink.pending() <= PATCH_MAX:
            sink.flush()
            return sink
        staged = self.fs.stage(self._tmp())
        staged.copy_from(sink.path, 0, sink.flushed)  # the new content written so far
        ops = sink.take_ops()
        sink.abort()  # the old version is back, for the queued pieces to copy from
        del self._patches[rel]
        for op in ops:
            if op[0] == "skip":
                staged.copy_from(sink.path, op[1], op[2])
            elif op[0] == "data":
                staged.write(op[2])
            else:
                staged.copy_from(op[2], op[3], op[4])
        return staged

    def abort(self, rel: str, sink: Sink) -> None:
        sink.abort()
        self._patches.pop(rel, None)

    def finish(self, sink: Sink, kind: int) -> object:
        """Last check before commit: a ``str`` file must decode, whatever the hash said."""
        if kind == KIND_LINK:
            assert isinstance(sink, MemoryStagedFile)
            text = bytes(sink.buf)
            if not text or b"\0" in text:
                raise ProtocolError("a symbolic link needs a text without NUL")
            return text
        if isinstance(sink, MemoryStagedFile):
            try:
                return decode_content(kind, bytes(sink.buf))
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"str content is not UTF-8: {exc}") from exc
        if not isinstance(sink, PatchedFile) and hasattr(sink, "close"):
            sink.close()  # complete: its descriptor is not needed for the rename
        return None

    def in_dir_of(self, path: str, change: Callable[[], object]) -> None:
        """Make ``change`` to the directory holding ``path``. A read-only one (the mirror of
        a read-only source directory, into which a new file must go) gets its owner's write
        bit for the moment, as rsync does, and its mode back after; the frame then sets
        what the source has. Each directory's mode is read once per request."""
        parent = posixpath.dirname(path)
        meta = self._dir_meta.get(parent) if self.keeps_meta else (0o200, 0)
        if meta is None:
            meta = self._dir_meta[parent] = self.fs.info(parent)[3]
        if meta[0] & 0o200:
            change()
            return
        try:
            self.fs.set_meta(parent, (meta[0] | 0o200, meta[1]), False)
        except OSError:  # not ours: the change itself says why it cannot be made
            change()
            return
        try:
            change()
        finally:
            self.fs.set_meta(parent, meta, False)

    def commit(self, sink: Sink, rel: str, content: object, node: FileNode) -> None:
        path = self.abs(rel)
        if node.kind == KIND_LINK:
            self.in_dir_of(path, lambda: self.fs.make_link(self._tmp(), path, content))
        elif isinstance(sink, MemoryStagedFile):
            self.fs.writefile(path, content)
        else:
            self.in_dir_of(path, lambda: sink.commit(path))
            self._patches.pop(rel, None)
        self.set_meta(rel, node)
        if self.file_index is not None and node.kind != KIND_LINK:
            # We wrote it and verified it: no need to hash it again at the next start.
            key = self.fs.stat_key(path)
            self.file_index.store(rel, key, node.kind, node.tree, own=True)

    def set_meta(self, rel: str, node: Node, meta: Meta | None = None) -> None:
        """Give an entry the mode and mtime its node records (when the filesystem keeps them)."""
        meta = meta if meta is not None else node.meta
        if meta is not None and self.keeps_meta:
            link = isinstance(node, FileNode) and node.kind == KIND_LINK
            self.fs.set_meta(self.abs(rel), meta, link)

    def restore_times(self, rel: str, node: DirNode) -> None:
        """A directory whose entries we changed gets back the mtime its node records."""
        if node.meta is not None and self.keeps_meta:
            self.fs.set_meta(self.abs(rel), node.meta, False)

    def flush(self) -> None:
        if self.file_index is not None:
            self.file_index.commit()

    # -- removing --------------------------------------------------------------------------
    def remove(self, rel: str, old: Node) -> None:
        """Remove what is at ``rel``, keeping its files' content reusable while budgets allow."""
        moved = {path for path, node in iter_tree(old, rel) if self.keep(path, node)}
        path = self.abs(rel)
        if isinstance(old, FileNode):
            if rel not in moved:
                self.in_dir_of(path, lambda: self.fs.removefile(path))
        else:
            self.in_dir_of(path, lambda: self.fs.removedir(path))
        for path, node in iter_tree(old, rel):
            if isinstance(node, FileNode) and path not in moved:
                self.index.remove(path)
        if self.file_index is not None:
            self.file_index.forget_below(rel)

    def keep(self, rel: str, node: Node, replaced: bool = False) -> bool:
        """Make a file about to go a grave; True when the file itself was moved aside.

        ``replaced``: a new version is renamed over it next. The old one then gets a second
        name instead of moving, so a crash before that rename leaves the old version in
        place, never no file at all (no second name possible: it is not kept)."""
        if (
            not isinstance(node, FileNode)
            or node.kind == KIND_LINK  # its text is no file to copy from (O_NOFOLLOW)
            or not self.graves.fits(node.tree.size)
        ):
            return False
        key = self.graves.new_key()
        if self.staging and replaced:
            try:
                self.fs.hardlink(self.abs(rel), self.where(key))
            except (AttributeError, OSError):
                return False
        elif self.staging:
            path = self.abs(rel)
            self.in_dir_of(path, lambda: self.fs.rename(path, self.where(key)))
        else:  # in memory: make room first, so the budget holds before anything is read
            self.graves.trim(self.keep_removed - node.tree.size)
            self._held_bytes[key] = encode_content(self.fs.readfile(self.abs(rel)))[1]
        self.index.rename(rel, key)
        self.graves.add(key, node)
        if self.file_index is not None:
            self.file_index.forget(rel)
        return self.staging

    def trim(self) -> None:
        self.graves.trim(self.keep_removed)

    def _drop(self, key: str) -> None:
        if self._held_bytes.pop(key, None) is None and self.staging:
            self.fs.removefile(self.where(key))
