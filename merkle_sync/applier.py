"""Applying one apply stream on the target, frame by frame, each frame checked before it lands.

Per frame: every write is staged (a temporary file on a disk, a buffer otherwise) while its
content tree is rebuilt from the pieces: literal leaves are hashed as they pass, reused nodes
are copied (in the kernel on a disk) and their leaves grafted from the tree the target already
holds, so nothing is hashed twice and no whole file is ever in memory. A file complete in this
frame is verified against its hash. Only when the whole frame checks out do its removals,
new directories and completed files land, in that order. A file larger than a frame stays
staged until the frame that completes it; a failure anywhere aborts the staged files.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, replace

from merkle_sync.chunking import CHUNK_MAX, cut_leaves, leaf_hash
from merkle_sync.contenttree import TreeBuilder
from merkle_sync.context import unpack_literals
from merkle_sync.delta import apply_delta
from merkle_sync.heldbytes import Held, HeldBytes
from merkle_sync.layout import check_layout
from merkle_sync.merkle import KIND_LINK, DirNode, FileNode, file_hash, lookup, put
from merkle_sync.patchfile import PatchedFile
from merkle_sync.protocol import (
    DELTA_MAX,
    MAX_REUSE,
    Apply,
    Attr,
    ProtocolError,
    Write,
)
from merkle_sync.store import Sink, TargetStore


@dataclass
class _Open:
    """A file being staged: where it goes, what it must hash to, what is written so far."""

    write: Write
    sink: Sink
    builder: TreeBuilder
    content: object = None
    node: FileNode | None = None  # once complete: the node its verified tree makes


class ApplyStream:
    """The frames of one apply, in order, against the target's tree and store."""

    def __init__(
        self,
        tree: DirNode,
        store: TargetStore,
        hash_len: int,
        basis: Held,
        confirmed: list[bytes] | None = None,
        probed: list | None = None,
    ) -> None:
        self.tree = tree
        self.store = store
        self.hash_len = hash_len
        #: What the frames may reuse: the basis, the walk's confirmed hashes and probe.
        self.held = HeldBytes(store, basis, confirmed or [], probed or [])
        self.next_part = 0
        self.open: _Open | None = None

    def abort(self) -> None:
        if self.open is not None:
            self.store.abort(self.open.write.path, self.open.sink)
            self.open = None
        self.store.trim()

    # -- one frame -------------------------------------------------------------------------
    def apply(self, req: Apply) -> None:
        if req.part != self.next_part or req.hash_len != self.hash_len:
            raise ProtocolError(f"apply frame {req.part} arrived, {self.next_part} expected")
        self.next_part += 1
        open_path = self.open.write.path if self.open is not None else None
        check_layout(self.tree, self.store.dir, req, open_path)
        done: list[_Open] = []
        try:
            self._stage(req, done)
            if self.open is not None and req.final:
                raise ProtocolError(f"the last frame leaves {self.open.write.path!r} unfinished")
        except BaseException:
            for staged in done:
                self.store.abort(staged.write.path, staged.sink)
            self.abort()
            raise
        if done:
            self.store.durable()  # the staged bytes reach the disk before any rename
        self._commit(req, done)
        if req.removes or req.mkdirs or done or req.attrs:
            self.store.durable()  # and the renames, removals and new directories after
        if req.final:
            self.store.trim()

    def _reuse(self, req: Apply, local: Held) -> None:
        """Add up what the frame's named pieces would copy, before anything is copied."""
        total = 0
        for w in req.writes:
            for piece in w.pieces:
                if isinstance(piece, int) and piece < 0:
                    piece = self.held.named(piece)
                if not isinstance(piece, bytes):
                    continue
                found, loc = self.held.locate(piece, local)
                if found is not None:
                    total += len(found[1])
                else:
                    assert loc is not None
                    start, end = loc[1].tree.span(loc[2], loc[3])
                    total += end - start
                if total > MAX_REUSE:
                    raise ProtocolError(f"a frame may name at most {MAX_REUSE} reused bytes")

    def _stage(self, req: Apply, done: list[_Open]) -> None:
        cache: dict[str, bytes] = {}
        inflated = None
        if req.packed:
            context = self.held.context(req, cache)
            inflated = unpack_literals(context, req.literals, sum(req.literal_sizes))
        literals = _Literals(req, inflated)
        # Literals of this frame by short hash: each is hashed once, here.
        local: Held = {}
        for digest, data in zip(literals.digests, literals.chunks, strict=True):
            local.setdefault(digest[: self.hash_len], (digest, data))
        self._reuse(req, local)
        removes = frozenset(req.removes)
        for i, w in enumerate(req.writes):
            if w.offset:
                current = self.open
                if i or current is None or not _continues(current.write, w, current.builder):
                    raise ProtocolError(f"{w.path!r} does not continue the open file")
            else:
                if self.open is not None:
                    raise ProtocolError(f"{self.open.write.path!r} was left unfinished")
                # A file this frame removes first is never patched: it is about to go.
                old = None if _under(w.path, removes) else lookup(self.tree, w.path)
                current = _Open(w, self.store.open(w.path, old, w.size, w.kind), TreeBuilder())
            self.open = current
            if w.delta_from:
                delta = b"".join(literals.next()[1] for _ in range(w.pieces[0]))  # type: ignore[misc]
                self._delta(current, delta, cache, removes)
            for piece in () if w.delta_from else w.pieces:
                self._piece(current, piece, literals, local, cache)
                if current.builder.size > w.size:
                    raise ProtocolError(f"pieces of {w.path!r} exceed its declared size")
            current.sink = self.store.segment_done(w.path, current.sink)
            if current.builder.size < w.size:
                if i != len(req.writes) - 1:
                    raise ProtocolError(f"pieces of {w.path!r} do not add up to its size")
                continue  # continues in the next frame
            node = FileNode.from_tree(w.kind, current.builder.finish(), w.meta)
            if file_hash(w.kind, node.tree.root)[: self.hash_len] != w.hash:
                raise ProtocolError(f"assembled {w.path!r} does not match its hash")
            current.content = self.store.finish(current.sink, w.kind)
            current.node = node
            done.append(current)
            self.open = None
        if literals.left:
            raise ProtocolError("literals left over")

    def _delta(self, f: _Open, delta: bytes, cache: dict, removes: frozenset[str]) -> None:
        """The whole file from a delta against the version this target holds at its path,
        which must be the one named, and read back as its tree says (else it is stale)."""
        w = f.write
        old = None if _under(w.path, removes) else lookup(self.tree, w.path)
        if (
            not isinstance(old, FileNode)
            or old.kind == KIND_LINK
            or old.hash[: len(w.delta_from)] != w.delta_from
            or old.tree.size > DELTA_MAX
        ):
            raise ProtocolError(f"{w.path!r} on the target is not what its delta is against")
        new = apply_delta(self.held.whole(w.path, old, cache), delta, w.size)
        for digest, length in cut_leaves(new):
            f.builder.leaf(digest, length)
        f.sink.write(new)

    def _piece(self, f: _Open, piece, literals: _Literals, local: Held, cache) -> None:
        if isinstance(piece, int) and piece < 0:
            piece = self.held.named(piece)
        if isinstance(piece, int):
            for _ in range(piece):
                digest, data = literals.next()
                f.builder.leaf(digest, len(data))
                f.sink.write(data)
            return
        if isinstance(piece, tuple) and piece[0] == 0:
            leaf = self.held.probed_leaf(piece, f.write.path, literals.next, cache)
            f.builder.data(leaf)
            f.sink.write(leaf)
            return
        if isinstance(piece, tuple):  # one leaf from sub-chunks
            parts: list[bytes] = []
            size = 0
            for sub in piece:
                for data in self._sub(sub, literals, local, cache, CHUNK_MAX - size):
                    parts.append(data)
                    size += len(data)
            leaf = b"".join(parts)
            f.builder.data(leaf)
            f.sink.write(leaf)
            return
        found, loc = self.held.locate(piece, local)
        if found is not None:
            f.builder.leaf(found[0], len(found[1]))
            f.sink.write(found[1])
            return
        assert loc is not None
        rel, node, level, index = loc
        start, end = node.tree.span(level, index)
        if f.builder.size + end - start > f.write.size:
            raise ProtocolError(f"pieces of {f.write.path!r} exceed its declared size")
        if self.store.unchanged(f.sink, f.write.path, rel, start, f.builder.size):
            f.sink.skip(end - start)  # patching in place: these bytes are already there
        else:
            self.store.copy_node(f.sink, rel, node.tree, level, index, cache)
        f.builder.graft(node.tree, level, index)

    def _sub(self, sub, literals: _Literals, local: Held, cache, room: int) -> list[bytes]:
        """The bytes of one sub-piece of a refined leaf, never more than ``room``."""
        if isinstance(sub, int) and sub < 0:
            sub = self.held.named(sub)
        if isinstance(sub, int):
            out = [literals.next()[1] for _ in range(sub)]
        else:
            found, loc = self.held.locate(sub, local, "sub-chunk")
            if found is not None:
                out = [found[1]]
            else:
                assert loc is not None
                rel, node, level, index = loc
                start, end = node.tree.span(level, index)
                if end - start > room:
                    raise ProtocolError("a refined leaf grows past the largest leaf")
                out = [self.store.read(rel, start, end, cache)]
        if sum(map(len, out)) > room:
            raise ProtocolError("a refined leaf grows past the largest leaf")
        return out

    # -- commit ----------------------------------------------------------------------------
    def _commit(self, req: Apply, done: list[_Open]) -> None:
        store = self.store
        touched: set[str] = set()  # directories whose entries change: their mtimes move
        for rel in req.removes:
            old = lookup(self.tree, rel)
            assert old is not None
            store.remove(rel, old)
            put(self.tree, rel, None)
            touched.add(posixpath.dirname(rel))
        for rel in req.mkdirs:
            self.fs_makedir(rel)
            put(self.tree, rel, DirNode())
            touched.add(posixpath.dirname(rel))
        for i, staged in enumerate(done):
            rel = staged.write.path
            if not isinstance(staged.sink, PatchedFile):
                touched.add(posixpath.dirname(rel))
            old = lookup(self.tree, rel)
            # Later frames may still name pieces of the old version: keep it a while (a file
            # patched in place has no old version left to keep).
            patched = isinstance(staged.sink, PatchedFile)
            kept = not (req.final or patched) and store.keep(rel, old, replaced=True)
            if isinstance(old, FileNode) and not kept:
                store.index.remove(rel)
            try:
                node = staged.node
                assert node is not None
                store.commit(staged.sink, rel, staged.content, node)
            except BaseException:
                for rest in done[i + 1 :]:
                    self.store.abort(rest.write.path, rest.sink)
                store.flush()
                raise
            put(self.tree, rel, node)
            store.index.add(rel, node)
        for attr in req.attrs:
            self._attr(attr)
            touched.discard(attr.path)
        for rel in touched:
            current = lookup(self.tree, rel)
            if isinstance(current, DirNode):
                store.restore_times(rel, current)
        store.flush()

    def _attr(self, attr: Attr) -> None:
        """An entry keeps its content and takes the source's mode and mtime."""
        node = lookup(self.tree, attr.path)
        meta = (attr.mode, attr.mtime)
        assert node is not None  # checked with the layout
        self.store.set_meta(attr.path, node, meta)
        if isinstance(node, DirNode):
            node.meta = meta
        else:
            node = replace(node, meta=meta)
        put(self.tree, attr.path, node)

    def fs_makedir(self, rel: str) -> None:
        fs, path = self.store.fs, self.store.abs(rel)
        try:
            self.store.in_dir_of(path, lambda: fs.makedir(path))
        except FileExistsError:
            # Not in the tree (the layout was checked), so a FIFO, socket or device the scan
            # left out: the source's directory replaces it, as a file written there would.
            if fs.isdir(path):
                raise
            fs.removefile(path)
            fs.makedir(path)


def _under(path: str, removed: frozenset[str]) -> bool:
    """Whether ``path`` or a directory above it is removed: a lookup per level, not a pass
    over every removal for each write (a frame renaming 10,000 files took 12 s that way)."""
    while removed and path:
        if path in removed:
            return True
        path = path.rpartition("/")[0]
    return False


def _continues(open_write: Write, w: Write, builder: TreeBuilder) -> bool:
    return (open_write.path, open_write.kind, open_write.size, open_write.hash) == (
        w.path,
        w.kind,
        w.size,
        w.hash,
    ) and w.offset == builder.size


class _Literals:
    """The literal chunks of a frame with their leaf hashes, handed out in order."""

    def __init__(self, req: Apply, inflated: bytes | None = None) -> None:
        view = memoryview(req.literals if inflated is None else inflated)  # slices, no copies
        self.chunks: list[memoryview] = []
        pos = 0
        for size in req.literal_sizes:
            self.chunks.append(view[pos : pos + size])
            pos += size
        self.digests = [leaf_hash(c) for c in self.chunks]
        self._next = 0
        self.left = len(self.chunks)

    def next(self) -> tuple[bytes, memoryview]:
        i = self._next
        if i >= len(self.chunks):
            raise ProtocolError("pieces use more literals than the frame carries")
        self._next += 1
        self.left -= 1
        return self.digests[i], self.chunks[i]
