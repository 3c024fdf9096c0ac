"""Cutting one apply into bounded frames on the source (no I/O beyond the ``read`` passed in).

Each frame carries at most ``literal_budget`` literal bytes and names at most ``MAX_REUSE``
bytes of reused pieces, so neither side's memory depends on the size of a file or of a
change. A large file spans frames (its ``Write`` continues at an ``offset``); many small
files share one. A piece may be named by hash when the target can resolve it when the frame
arrives: content it held before, a literal earlier in the same frame, or any node of a file
completed in an earlier frame (the target indexes each file it commits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from merkle_sync.chunking import CHUNK_MAX
from merkle_sync.context import CONTEXT_MAX, CONTEXT_MIN, pack_literals
from merkle_sync.delta import delta_level, make_delta
from merkle_sync.kept import Kept
from merkle_sync.merkle import FileNode
from merkle_sync.protocol import DELTA_MAX, MAX_REUSE, Apply, Attr, Piece, Span, Write, trusted
from merkle_sync.refine import Probed
from merkle_sync.wire import stream_level

#: Literal bytes per frame. Measured on a 1 GiB initial sync on disk, both sides in one
#: fresh process, 3 runs each (README, "Choosing the frame budget"): peak RSS 55 MiB with
#: 1 MiB frames, 80 MiB with 4 MiB, 178 MiB with 16 MiB (a frame exists in a few copies
#: between disk and disk); wall time within noise of each other (3.7-6.3 s). 4 MiB keeps
#: memory small and needs a quarter of the calls of 1 MiB through a synchronous RPC,
#: where each frame waits one latency.
FRAME_LITERALS = 4 << 20

#: A delta is sent only when it is this many times smaller than the new version: a rewrite
#: (little shared with the old version) travels as plain literals, which the session's zstd
#: stream compresses about as well, and the target then need not read its old version.
DELTA_GAIN = 4

#: What a cover yields: a node the target holds ``(key, start, end, None)``, or a leaf it may
#: lack ``(key, start, end, subs)`` with ``subs`` its probed sub-chunks (or ``()``).
Item = tuple[bytes, int, int, "Probed | tuple[()] | None"]


@dataclass
class _Frame:
    writes: list[Write] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    literal: int = 0
    reused: int = 0
    sent: set[bytes] = field(default_factory=set)
    completed: list[FileNode] = field(default_factory=list)
    #: Ranges of source files that make the frame's context (``merkle_sync.context``).
    context: list[tuple[str, int, int]] = field(default_factory=list)
    context_size: int = 0
    context_full: bool = False


@dataclass
class ApplyHead:
    """What only the first frame of an apply carries."""

    hash_len: int
    base: bytes
    removes: tuple[str, ...]
    mkdirs: tuple[str, ...]
    basis: tuple[Span, ...]
    #: Metadata of unchanged entries and of directories: applied by the final frame.
    attrs: tuple[Attr, ...] = ()


class FrameCutter:
    """Turns planned writes into a stream of ``Apply`` frames within the budgets."""

    def __init__(
        self,
        head: ApplyHead,
        held: Callable[[bytes], bool],
        read: Callable[[str, int, int], bytes],
        literal_budget: int = FRAME_LITERALS,
        reuse_budget: int = MAX_REUSE,
        confirmed: dict[bytes, int] | None = None,
    ) -> None:
        self.head = head
        self.n = head.hash_len
        self._held = held
        self._read = read
        self.literal_budget = literal_budget
        self.reuse_budget = reuse_budget
        self._done: set[bytes] = set()  # every node of files committed in earlier frames
        #: Hashes the target confirmed during the walk: named by position (1-3 bytes on the
        #: wire instead of 9).
        self._confirmed = confirmed or {}
        self.literal_bytes = 0
        self.reused_bytes = 0
        self.files_done = 0  # files whose last piece has been cut into a frame
        self._deltas: dict[str, bytes] = {}
        self._kept: Kept | None = None
        self._delta_level = 0
        self.delta_files = 0
        #: ``on_whole(rel, node, data)``: a file's whole content passed through here (sent
        #: as one literal run, or made into a delta), so the source can keep it cheaply.
        self.on_whole: Callable[[str, FileNode, bytes], None] | None = None
        self.whole: set[str] = set()

    def deltas(self, bases: dict[str, bytes], kept: Kept | None) -> None:
        """Send these files (path -> short hash of the target's version) as deltas against
        the versions ``kept.get`` returns; a file whose copy is gone is cut as usual."""
        self._deltas, self._kept = bases, kept
        self._delta_level = delta_level(len(bases))

    def held(self, key: bytes) -> bool:
        return self._held(key) or key in self._done

    def frames(self, writes: Iterable[tuple[str, FileNode, Iterator[Item]]]) -> Iterator[Apply]:
        part = 0
        frame = _Frame()
        for rel, node, items in writes:
            blob = self._delta(rel, node)
            if blob is not None:
                if frame.literal + len(blob) > self.literal_budget and frame.writes:
                    yield self._build(frame, part, final=False)
                    part += 1
                    frame = _Frame()
                self._whole(frame, rel, node, blob)
                continue
            offset = 0  # where the current segment of this file starts
            pieces: list[Piece] = []
            ranges: list[tuple[int, int]] = []
            for item in items:
                # What the item may cost, before deciding it: a leaf not held yet costs at
                # most its bytes (refinement only lowers that), a held node its span.
                key, start, end, subs = item
                held = subs is None or self.held(key) or key in frame.sent
                lit, reuse = (0, end - start) if held else (end - start, 0)
                if frame.literal + lit > self.literal_budget or (
                    frame.reused + reuse > self.reuse_budget
                ):
                    if pieces:
                        self._segment(frame, rel, node, offset, pieces, ranges)
                        offset = item[1]
                        pieces, ranges = [], []
                    if frame.writes:
                        yield self._build(frame, part, final=False)
                        part += 1
                        frame = _Frame()
                piece, lit, reuse, more = self._decide(item, frame)
                if node.tree.size <= DELTA_MAX:
                    _add_context(frame, rel, piece, item)
                frame.literal += lit
                frame.reused += reuse
                _append(pieces, piece)
                ranges += more
            self._segment(frame, rel, node, offset, pieces, ranges)
            frame.completed.append(node)
            self.files_done += 1
        yield self._build(frame, part, final=True)

    def _delta(self, rel: str, node: FileNode) -> bytes | None:
        """The file as a delta against its kept old version, if that is the way to send it."""
        short = self._deltas.get(rel)
        old = self._kept.get(short) if short is not None and self._kept is not None else None
        if old is None:
            return None
        new = self._read(rel, 0, node.tree.size)
        blob = make_delta(old, new, self._delta_level)
        if len(blob) > self.literal_budget or len(blob) * DELTA_GAIN > len(new):
            return None  # too big for a frame, or not worth the target reading its old version
        self._seen_whole(rel, node, new)
        return blob

    def _seen_whole(self, rel: str, node: FileNode, data: bytes) -> None:
        if self.on_whole is not None and len(data) == node.tree.size:
            self.whole.add(rel)
            self.on_whole(rel, node, data)

    def _whole(self, frame: _Frame, rel: str, node: FileNode, blob: bytes) -> None:
        """One file complete in this frame as one literal: its delta."""
        runs = -(-len(blob) // CHUNK_MAX)
        frame.writes.append(self._write(rel, node, (runs,), 0, self._deltas[rel]))
        frame.chunks.append(blob)
        frame.sizes += (min(CHUNK_MAX, len(blob) - at) for at in range(0, len(blob), CHUNK_MAX))
        frame.literal += len(blob)
        frame.completed.append(node)
        self.literal_bytes += len(blob)
        self.files_done += 1
        self.delta_files += 1

    def _decide(self, item: Item, frame: _Frame) -> tuple[Piece, int, int, list[tuple[int, int]]]:
        """The piece for one item, its literal bytes, its reused bytes and literal ranges."""
        key, start, end, subs = item
        if subs is None or self.held(key) or key in frame.sent:
            return self._name(key), 0, end - start, []
        if isinstance(subs, Probed):
            ranges = subs.literals()
            return (0, subs.k, len(ranges)), sum(b - a for a, b in ranges), 0, ranges
        frame.sent.add(key)  # a leaf sent whole: later copies in the frame name it
        return 1, end - start, 0, [(start, end)]

    def _write(
        self, rel: str, node: FileNode, pieces: tuple, offset: int, delta_from: bytes = b""
    ) -> Write:
        return trusted(
            Write, rel, node.kind, node.tree.size, node.hash[: self.n], pieces, offset,
            node.meta, delta_from,
        )  # fmt: skip

    def _name(self, key: bytes) -> bytes | int:
        position = self._confirmed.get(key)
        return key if position is None else -(position + 1)

    def _segment(
        self,
        frame: _Frame,
        rel: str,
        node: FileNode,
        offset: int,
        pieces: list[Piece],
        ranges: list[tuple[int, int]],
    ) -> None:
        """Close one file's segment in the frame, reading its literal bytes."""
        frame.writes.append(self._write(rel, node, tuple(pieces), offset))
        run_start = run_end = -1
        sizes: list[int] = []
        for a, b in ranges:
            if a != run_end and run_end >= 0:
                frame.chunks.append(self._read(rel, run_start, run_end))
                run_start = -1
            if run_start < 0:
                run_start = a
            run_end = b
            sizes.append(b - a)
        if run_start >= 0:
            frame.chunks.append(self._read(rel, run_start, run_end))
            if run_start == 0 and run_end == node.tree.size and not offset:
                self._seen_whole(rel, node, frame.chunks[-1])
        frame.sizes += sizes
        self.literal_bytes += sum(sizes)

    def _build(self, frame: _Frame, part: int, final: bool) -> Apply:
        literals = b"".join(frame.chunks)
        if len(literals) != sum(frame.sizes):
            raise OSError("a source file changed while it was being sent")
        packed = None
        if frame.context_size >= CONTEXT_MIN and literals:
            context = b"".join(self._read(rel, a, b) for rel, a, b in frame.context)
            packed = pack_literals(context, literals, _pack_level(len(literals)))
        head = self.head
        first = part == 0
        msg = trusted(
            Apply,
            self.n,
            head.base if first else b"",
            head.removes if first else (),
            head.mkdirs if first else (),
            tuple(frame.writes),
            tuple(frame.sizes),
            literals if packed is None else packed,
            head.basis if first else (),
            part,
            final,
            head.attrs if final else (),
            packed is not None,
        )
        if not final:  # the target indexes these when the frame lands; later frames name them
            for node in frame.completed:
                self._done.update(h[: self.n] for h, _, _ in node.tree.nodes())
        self.reused_bytes += frame.reused
        return msg


def _add_context(frame: _Frame, rel: str, piece: Piece, item: Item) -> None:
    """What this piece adds to the frame's context: a node named by its confirmed position,
    or the found sub-chunks of a probed leaf, each while the context stays in its budget."""
    if frame.context_full:
        return
    if isinstance(piece, int) and piece < 0:
        ranges = [(item[1], item[2])]
    elif isinstance(piece, tuple) and piece[:1] == (0,) and isinstance(item[3], Probed):
        probed = item[3]
        ranges = [(a, b) for (_, a, b), hit in zip(probed.parts, probed.found, strict=True) if hit]
    else:
        return
    for a, b in ranges:
        if frame.context_size + b - a > CONTEXT_MAX:
            frame.context_full = True
            return
        if frame.context and frame.context[-1][0] == rel and frame.context[-1][2] == a:
            frame.context[-1] = (rel, frame.context[-1][1], b)  # one read for adjacent ranges
        else:
            frame.context.append((rel, a, b))
        frame.context_size += b - a


def _append(pieces: list, piece: Piece) -> None:
    """Consecutive literal counts merge into one (positions, negative, never merge)."""
    if isinstance(piece, int) and piece > 0 and pieces and _is_run(pieces[-1]):
        pieces[-1] += piece
    else:
        pieces.append(piece)


def _is_run(piece: object) -> bool:
    return isinstance(piece, int) and piece > 0


def _pack_level(size: int) -> int:
    """Packed literals are an edit's few hundred kilobytes at most, usually: squeeze them
    (zstd 19 packed and compared the 312 kB of pip's edited sub-chunks, against 1.4 MB of
    context, in 0.26 s), and follow the stream's levels past 1 MiB."""
    return 19 if size <= 1 << 20 else stream_level(size)
