"""Bytes the target already holds, as an apply frame names them (no decisions, only lookups).

A frame reuses what the target held before it arrived: hashes the walk confirmed (named by
position), sub-chunks the refinement probe found in old versions, and whole old versions
that deltas are made against. Each is read and checked where it could have changed behind
the target's back (a stale file raises ``StaleContent``, so the target re-indexes and the
source re-plans), and the same bytes make the frame's context (``merkle_sync.context``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from merkle_sync.chunking import CHUNK_MAX, leaf_hash
from merkle_sync.contentindex import Location
from merkle_sync.contenttree import build_tree
from merkle_sync.context import CONTEXT_MAX
from merkle_sync.freshness import StaleContent
from merkle_sync.merkle import FileNode
from merkle_sync.protocol import DELTA_MAX, Apply, ProtocolError
from merkle_sync.store import MemoryStagedFile, TargetStore

Held = dict[bytes, tuple[bytes, bytes | memoryview]]  # short hash -> (full hash, bytes)


class HeldBytes:
    """Lookups into what the target held when the apply began."""

    def __init__(
        self, store: TargetStore, basis: Held, confirmed: list[bytes], probed: list
    ) -> None:
        self.store = store
        self.basis = basis
        self.confirmed = confirmed
        #: The walk's refinement probe: per leaf, where each sub-chunk was found, or None.
        self.probed = probed

    def locate(
        self, digest: bytes, local: Held | None = None, what: str = "piece"
    ) -> tuple[tuple[bytes, bytes | memoryview] | None, Location | None]:
        """A held piece by its short hash: ``(full hash, bytes)`` among this frame's
        literals (``local``) or the basis, or else where the target's files hold it."""
        found = (local.get(digest) if local else None) or self.basis.get(digest)
        if found is not None:
            return found, None
        loc = self.store.index.find(digest)
        if loc is None:
            raise ProtocolError(f"unknown {what} {digest.hex()}")
        return None, loc

    def whole(self, rel: str, old: FileNode, cache: dict) -> bytes:
        """The old version a delta is against, read back and checked against its tree."""
        try:
            base = self.store.read(rel, 0, old.tree.size, cache)
        except OSError as exc:  # gone or replaced by hand since the target indexed it
            raise StaleContent(rel, f"cannot be read ({exc.strerror or exc})") from exc
        if build_tree(base).root != old.tree.root:
            raise StaleContent(rel)
        return base

    def context(self, req: Apply, cache: dict) -> bytes:
        """The frame's context, as ``merkle_sync.context`` defines it: held bytes only, read
        (and checked) before any literal is decoded. Each piece's size is known before it is
        read, so a frame naming a huge held node reads nothing past ``CONTEXT_MAX``."""
        parts: list[bytes | memoryview] = []
        total = 0
        for w in req.writes:
            if w.delta_from or w.size > DELTA_MAX:
                continue
            for piece in w.pieces:
                for length, fetch in self._pieces(piece, cache):
                    if total + length > CONTEXT_MAX:
                        return b"".join(parts)
                    data = fetch()
                    if len(data) != length:
                        raise ProtocolError("a held piece is not the size its tree says")
                    parts.append(data)
                    total += length
        return b"".join(parts)

    def _pieces(
        self, piece: object, cache: dict
    ) -> Iterator[tuple[int, Callable[[], bytes | memoryview]]]:
        """What a piece contributes to the context, as (size, read it): a confirmed node, or
        the found sub-chunks of a probed leaf."""
        if isinstance(piece, int) and piece < 0:
            found, loc = self.locate(self.named(piece), what="context piece")
            if found is not None:
                data = found[1]
                yield len(data), lambda: data
                return
            assert loc is not None
            rel, node, level, index = loc
            start, end = node.tree.span(level, index)

            def read() -> bytes:
                buf = MemoryStagedFile()
                self.store.copy_node(buf, rel, node.tree, level, index, cache)
                return bytes(buf.buf)

            yield end - start, read
        elif isinstance(piece, tuple) and piece[:1] == (0,):
            _, k, _ = piece
            if k >= len(self.probed):
                raise ProtocolError(f"probed leaf {k} is not in the probe")
            for where in self.probed[k]:
                if where is not None:
                    yield where[3], lambda where=where: self.found(where, cache)

    def found(self, where: tuple, cache: dict) -> bytes:
        """A probed sub-chunk from the old version, checked: it may have changed since."""
        digest, rel, at, length = where
        try:
            data = self.store.read(rel, at, at + length, cache)
        except OSError as exc:
            raise StaleContent(rel, f"cannot be read ({exc.strerror or exc})") from exc
        if leaf_hash(data) != digest:
            raise StaleContent(rel)
        return data

    def probed_leaf(
        self, piece: tuple, path: str, next_literal: Callable[[], tuple[bytes, memoryview]], cache
    ) -> bytes:
        """Leaf ``k`` of the probe: the old sub-chunks where found (each read and checked
        against its hash: the old file may have changed since the walk), literals between."""
        _, k, count = piece
        if k >= len(self.probed):
            raise ProtocolError(f"{path!r} names probed leaf {k}, the probe had {len(self.probed)}")
        found = self.probed[k]
        if sum(1 for f in found if f is None) != count:
            raise ProtocolError(f"probed leaf {k} of {path!r} takes another number of literals")
        parts: list[bytes | memoryview] = []
        size = 0
        for where in found:
            data = next_literal()[1] if where is None else self.found(where, cache)
            size += len(data)
            if size > CHUNK_MAX:
                raise ProtocolError("a refined leaf grows past the largest leaf")
            parts.append(data)
        return b"".join(parts)

    def named(self, position: int) -> bytes:
        """The hash a negative piece names: the target confirmed it during the walk."""
        if -position > len(self.confirmed):
            raise ProtocolError(f"piece {position} names no confirmed hash")
        return self.confirmed[-position - 1]
