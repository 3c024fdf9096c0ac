"""The passive side: answers walks from its tree and content index, applies verified changes."""

from __future__ import annotations

import posixpath
from bisect import bisect_left, bisect_right
from typing import Any

from merkle_sync.chunking import leaf_hash, sub_chunks
from merkle_sync.merkle import (
    DirNode,
    FileNode,
    Node,
    decode_content,
    encode_content,
    iter_tree,
    lookup,
    put,
    split,
)
from merkle_sync.protocol import (
    MIN_HASH,
    Apply,
    ApplyReply,
    Entry,
    ProtocolError,
    Span,
    Walk,
    WalkReply,
    Write,
)
from merkle_sync.scan import scan
from merkle_sync.wire import decode, encode

_Location = tuple[bytes, str, int, int]  # (full hash, file rel path, start, end)


class ContentIndex:
    """Where each content node of the target's files lives, keyed by a short hash prefix."""

    def __init__(self) -> None:
        self._by_prefix: dict[bytes, list[_Location]] = {}

    def __len__(self) -> int:
        return len(self._by_prefix)

    def add(self, rel: str, node: FileNode) -> None:
        tree = node.tree
        for h, level, index in tree.nodes():
            start, end = tree.span(level, index)
            self._by_prefix.setdefault(h[:MIN_HASH], []).append((h, rel, start, end))

    def remove(self, rel: str, node: FileNode) -> None:
        for h, _, _ in node.tree.nodes():
            key = h[:MIN_HASH]
            kept = [loc for loc in self._by_prefix.get(key, ()) if loc[1] != rel]
            if kept:
                self._by_prefix[key] = kept
            else:
                self._by_prefix.pop(key, None)

    def find(self, short: bytes) -> _Location | None:
        for loc in self._by_prefix.get(short[:MIN_HASH], ()):
            if loc[0].startswith(short):
                return loc
        return None


#: Bytes of removed files kept in memory, so that a rename, which arrives as a removal and
#: then an addition, costs hashes instead of content. The target reads a file before removing
#: it only while this budget lasts; 0 turns the reuse of removed content off.
KEEP_REMOVED = 64 << 20


class ReplicatorTarget:
    """Builds its tree once, then keeps it current through its own writes."""

    def __init__(self, fs: Any, dir_path: str, keep_removed: int = KEEP_REMOVED) -> None:
        self.fs = fs
        self.keep_removed = keep_removed
        #: Removed files still reusable: pseudo-path ("\0" + number, never a real name) ->
        #: (node, bytes), oldest first.
        self._graves: dict[str, tuple[FileNode, bytes]] = {}
        self._grave_bytes = 0
        self._grave_seq = 0
        self.dir = posixpath.normpath(dir_path)
        if not fs.exists(self.dir):
            fs.makedirs(self.dir)
        root = scan(fs, self.dir)
        if not isinstance(root, DirNode):
            raise NotADirectoryError(f"target is not a directory: {self.dir!r}")
        self.tree: DirNode = root
        self.index = ContentIndex()
        for rel, node in iter_tree(self.tree):
            if isinstance(node, FileNode):
                self.index.add(rel, node)

    def handle_request(self, request: object) -> object:
        """Answer one request; a frame (bytes) gets a frame back, a message gets a message."""
        if isinstance(request, (bytes, bytearray, memoryview)):
            return encode(self.handle_request(decode(request)))
        if isinstance(request, Walk):
            return self._walk(request)
        if isinstance(request, Apply):
            return self._apply(request)
        raise ProtocolError(f"unknown request type {type(request).__name__}")

    def _abs(self, rel: str) -> str:
        return posixpath.join(self.dir, rel) if rel else self.dir

    # -- walking ---------------------------------------------------------------------------
    def _walk(self, req: Walk) -> WalkReply:
        if req.root and req.root == self.tree.hash:
            return WalkReply(True, (), b"", 0)
        n = req.hash_len
        subs = self._basis(req.basis, n, {})
        listings: list[tuple[Entry, ...] | None] = []
        for rel in req.dirs:
            node = lookup(self.tree, rel)
            if isinstance(node, DirNode):
                entries = (Entry(k, c.kind, c.hash[:n]) for k, c in node.children.items())
                listings.append(tuple(entries))
            else:
                listings.append(None)
        bits = bytearray((len(req.have) + 7) // 8)
        for i, h in enumerate(req.have):
            if h in subs or self.index.find(h) is not None:
                bits[i // 8] |= 1 << (i % 8)
        return WalkReply(False, tuple(listings), bytes(bits), len(self.index))

    # -- applying --------------------------------------------------------------------------
    def _apply(self, req: Apply) -> ApplyReply:
        """Check and assemble everything first; only then touch the filesystem."""
        if req.base and req.base != self.tree.hash[: req.hash_len]:
            return ApplyReply(self.tree.hash)  # stale plan: the source falls back to a walk
        self._check_layout(req)
        built = self._assemble(req)
        for rel in req.removes:
            old = lookup(self.tree, rel)
            self._bury(rel, old)
            if isinstance(old, DirNode):
                self.fs.removedir(self._abs(rel))
            else:
                self.fs.removefile(self._abs(rel))
            self._forget(rel, put(self.tree, rel, None))
        for rel in req.mkdirs:
            self.fs.makedir(self._abs(rel))
            put(self.tree, rel, DirNode())
        for write, data, node in built:
            self.fs.writefile(self._abs(write.path), decode_content(write.kind, data))
            self._forget(write.path, put(self.tree, write.path, node))
            self.index.add(write.path, node)
        return ApplyReply(self.tree.hash)

    def _bury(self, rel: str, old: Node | None) -> None:
        """Keep the bytes of files about to be removed reachable through the index."""
        if old is None:
            return
        for path, node in iter_tree(old, rel):
            if not isinstance(node, FileNode) or not 0 < node.tree.size <= self.keep_removed:
                continue
            data = encode_content(self.fs.readfile(self._abs(path)))[1]
            key = f"\0{self._grave_seq}"
            self._grave_seq += 1
            self._graves[key] = (node, data)
            self._grave_bytes += len(data)
            self.index.add(key, node)
        while self._grave_bytes > self.keep_removed:
            key, (node, data) = next(iter(self._graves.items()))
            del self._graves[key]
            self._grave_bytes -= len(data)
            self.index.remove(key, node)

    def _forget(self, rel: str, old: Node | None) -> None:
        if old is not None:
            for path, node in iter_tree(old, rel):
                if isinstance(node, FileNode):
                    self.index.remove(path, node)

    def _check_layout(self, req: Apply) -> None:
        """Every operation must make sense in order: nothing is applied unless all of them do."""
        removed: set[str] = set()
        made: set[str] = set()

        def gone(rel: str) -> bool:
            parts = split(rel)
            return any("/".join(parts[: i + 1]) in removed for i in range(len(parts)))

        def is_dir(rel: str) -> bool:
            if rel in made or not rel:
                return True
            return not gone(rel) and isinstance(lookup(self.tree, rel), DirNode)

        def exists(rel: str) -> bool:
            return rel in made or (not gone(rel) and lookup(self.tree, rel) is not None)

        for rel in req.removes:
            if not exists(rel):
                raise ProtocolError(f"cannot remove {rel!r}: nothing is there")
            removed.add(rel)
        for rel in req.mkdirs:
            if exists(rel) or not is_dir(posixpath.dirname(rel)):
                raise ProtocolError(f"cannot make directory {rel!r}")
            made.add(rel)
        for w in req.writes:
            if is_dir(w.path) or not is_dir(posixpath.dirname(w.path)):
                raise ProtocolError(f"cannot write file {w.path!r}")

    def _literals(self, req: Apply) -> list[bytes]:
        out, pos = [], 0
        for size in req.literal_sizes:
            out.append(req.literals[pos : pos + size])
            pos += size
        return out

    def _basis(
        self, spans: tuple[Span, ...], n: int, files: dict[str, bytes]
    ) -> dict[bytes, bytes]:
        """Sub-chunks of the old leaves overlapping each span, by short hash."""
        subs: dict[bytes, bytes] = {}
        done: set[tuple[str, int]] = set()
        for span in spans:
            node = lookup(self.tree, span.path)
            if not isinstance(node, FileNode):
                raise ProtocolError(f"basis {span.path!r} is not a file")
            ends = node.tree.ends[0]
            first = bisect_right(ends, span.start)
            last = min(bisect_left(ends, span.end), len(ends) - 1)
            for leaf in range(first, last + 1):
                if (span.path, leaf) in done:
                    continue
                done.add((span.path, leaf))
                start, end = node.tree.span(0, leaf)
                data = self._file(span.path, files)[start:end]
                for sub, a, b in sub_chunks(data):
                    subs.setdefault(sub[:n], data[a:b])
        return subs

    def _assemble(self, req: Apply) -> list[tuple[Write, bytes, FileNode]]:
        literals = iter(self._literals(req))
        files: dict[str, bytes] = {}
        n = req.hash_len
        sent = self._basis(req.basis, n, files)
        built = []
        for w in req.writes:
            parts: list[bytes] = []
            size = 0
            for piece in w.pieces:
                if isinstance(piece, int):
                    chunk = [next(literals) for _ in range(piece)]
                    for c in chunk:
                        sent.setdefault(leaf_hash(c)[:n], c)
                elif piece in sent:
                    chunk = [sent[piece]]
                else:
                    chunk = [self._local(piece, files)]
                size += sum(map(len, chunk))
                if size > w.size:
                    raise ProtocolError(f"pieces of {w.path!r} exceed its declared size")
                parts += chunk
            if size != w.size:
                raise ProtocolError(f"pieces of {w.path!r} do not add up to its size")
            data = b"".join(parts)
            node = FileNode.from_data(w.kind, data)
            if node.hash[:n] != w.hash:
                raise ProtocolError(f"assembled {w.path!r} does not match its hash")
            built.append((w, data, node))
        return built

    def _local(self, short: bytes, files: dict[str, bytes]) -> bytes:
        loc = self.index.find(short)
        if loc is None:
            raise ProtocolError(f"unknown piece {short.hex()}")
        _, rel, start, end = loc
        return self._file(rel, files)[start:end]

    def _file(self, rel: str, files: dict[str, bytes]) -> bytes:
        """A target file's bytes (or a removed file's), read at most once per request."""
        if rel not in files:
            grave = self._graves.get(rel)
            files[rel] = grave[1] if grave else encode_content(self.fs.readfile(self._abs(rel)))[1]
        return files[rel]
