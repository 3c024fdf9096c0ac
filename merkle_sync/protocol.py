"""Wire messages: small frozen types that validate every invariant when constructed.

Everything here may come from another machine, so each constructor checks types, sizes and
paths before anything else trusts the value. Any violation raises :class:`ProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from merkle_sync.checks import (  # the limits live there, beside the checks that use them
    DELTA_MAX,
    FILE_KINDS,
    FULL_HASH,
    KINDS,
    LINK_KIND,
    MAX_BASIS,
    MAX_BASIS_READ,
    MAX_CONFIRMED,
    MAX_FILE_SIZE,
    MAX_FRAME,
    MAX_ITEMS,
    MAX_LINK,
    MAX_PATH_BYTES,
    MAX_REUSE,
    MAX_SPAN,
    MAX_SUBS,
    MAX_UNREAD,
    MIN_HASH,
    PROBE_CHECK,
    RESERVED,
    ProtocolError,
    _require,
    check_hash,
    check_hash_len,
    check_int,
    check_items,
    check_meta,
    check_name,
    check_path,
    check_run,
    literal_runs,
    probe_hash_len,
    trusted,
)
from merkle_sync.chunking import CHUNK_MAX

__all__ = [  # what the other modules take from here, the checks' names included
    "DELTA_MAX",
    "FULL_HASH",
    "MAX_BASIS",
    "MAX_BASIS_READ",
    "MAX_CONFIRMED",
    "MAX_FILE_SIZE",
    "MAX_FRAME",
    "MAX_ITEMS",
    "MAX_LINK",
    "MAX_PATH_BYTES",
    "MAX_REUSE",
    "MIN_HASH",
    "RESERVED",
    "Ack",
    "Apply",
    "ApplyReply",
    "Attr",
    "Entry",
    "Message",
    "Piece",
    "ProtocolError",
    "Span",
    "Walk",
    "WalkReply",
    "Write",
    "check_name",
    "check_path",
    "literal_runs",
    "trusted",
]


class Message:
    """Pickles as its compact msgpack frame, so in-process and wire bytes are the same."""

    __slots__ = ()

    def __reduce__(self):
        from merkle_sync import wire

        return wire.decode, (wire.encode(self),)


@dataclass(frozen=True, slots=True)
class Entry:
    """One child in a directory listing."""

    name: str
    kind: int
    hash: bytes
    meta: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        _require(self.kind in KINDS and type(self.kind) is int, f"bad kind {self.kind!r}")
        _require(isinstance(self.hash, bytes), "entry hash must be bytes")
        _require(MIN_HASH <= len(self.hash) <= FULL_HASH, "entry hash has a bad length")
        check_meta(self.meta)


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes ``[start, end)`` of a target file, whose leaves are cut to refine a change."""

    path: str
    start: int
    end: int

    def __post_init__(self) -> None:
        check_path(self.path)
        check_int(self.start, 0, MAX_FILE_SIZE - 1, "span start")
        check_int(self.end, self.start + 1, min(self.start + MAX_SPAN, MAX_FILE_SIZE), "span end")


def check_basis(basis: object) -> None:
    for span in check_items(basis, "basis spans", MAX_BASIS):
        _require(isinstance(span, Span), "basis holds a non-span")


@dataclass(frozen=True, slots=True)
class Attr:
    """Set the mode and mtime of an entry that exists (after the frame's writes)."""

    path: str
    mode: int
    mtime: int

    def __post_init__(self) -> None:
        check_path(self.path)
        check_meta((self.mode, self.mtime))


@dataclass(frozen=True, slots=True)
class Walk(Message):
    """One level of the top-down walk: compare roots, list mismatched dirs, look up content."""

    hash_len: int
    root: bytes  # full source root hash, or b"" when the roots are already known to differ
    dirs: tuple[str, ...]
    have: tuple[bytes, ...]
    #: Old content to cut into sub-chunks, which then also count as held (refinement).
    basis: tuple[Span, ...] = ()
    #: Refinement probe, one item per span of ``basis``: the ``probe_hash_len``-byte hashes of one
    #: changed leaf's sub-chunks, in order, looked up among that span's sub-chunks only; the
    #: bitmap answers them after ``have``, and the apply names the leaf by its position here.
    refine: tuple[bytes, ...] = ()
    #: Empty, or one item per directory of ``dirs``: a width byte (``digest_width``), then the
    #: digests of the source's children there (``merkle.entry_digest``). The target lists only
    #: its entries whose digest is not among them; its bitmap says, after ``have`` and before
    #: ``refine``, which digests it matched (an empty item: list it all).
    sums: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        check_hash_len(self.hash_len)
        _require(self.root == b"" or check_hash(self.root, FULL_HASH) is not None, "bad root")
        for d in check_items(self.dirs, "dirs"):
            check_path(d, root_ok=True)
        _require(len(set(self.dirs)) == len(self.dirs), "a directory is listed twice")
        for h in check_items(self.have, "have hashes"):
            check_hash(h, self.hash_len)
        check_basis(self.basis)
        total = len(self.have)
        _require(isinstance(self.sums, tuple) and isinstance(self.refine, tuple), "bad walk lists")
        if self.sums:
            _require(len(self.sums) == len(self.dirs), "one list of digests per directory")
            for packed in check_items(self.sums, "digest lists"):
                _require(
                    isinstance(packed, bytes)
                    and (not packed or 1 <= packed[0] <= FULL_HASH)
                    and (not packed or (len(packed) - 1) % packed[0] == 0),
                    "a digest list is a width, then digests of that width",
                )
                total += (len(packed) - 1) // packed[0] if packed else 0
            _require(total <= MAX_ITEMS, "too many hashes in one walk")
        width = probe_hash_len(self.hash_len)
        if self.refine:
            _require(len(self.refine) == len(self.basis), "one refined leaf per basis span")
            for leaf in check_items(self.refine, "refined leaves"):
                _require(
                    isinstance(leaf, bytes)
                    and 0 < len(leaf) <= MAX_SUBS * width
                    and len(leaf) % width == 0,
                    "a refined leaf is a list of sub-chunk hashes",
                )
                total += len(leaf) // width
            _require(total <= MAX_ITEMS, "too many hashes in one walk")


@dataclass(frozen=True, slots=True)
class WalkReply(Message):
    """``listings[i]`` answers ``dirs[i]`` (``None``: not a directory); ``have`` is a bitmap."""

    equal: bool
    listings: tuple[tuple[Entry, ...] | None, ...]
    have: bytes
    indexed: int  # how many content nodes the target could reuse; 0 means don't ask
    #: The start of the target's root hash, in reply to a walk with the source's root: the
    #: apply names it as its base, so a replayed or stale apply is refused.
    root: bytes = b""
    #: ``PROBE_CHECK`` bytes per refined leaf where the target found something, in order: a
    #: hash of the full hashes it found (``refine.probe_check``), so a short probe hash that
    #: met the wrong sub-chunk is caught before the apply.
    checks: bytes = b""
    #: In reply to a walk with the source's root: entries the target could not read (no sync
    #: can mirror or delete them), which the source reports as skipped.
    unread: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(isinstance(self.equal, bool), "equal must be bool")
        for rel in check_items(self.unread, "unread paths", MAX_UNREAD):
            check_path(rel)
        _require(
            isinstance(self.checks, bytes)
            and len(self.checks) % PROBE_CHECK == 0
            and len(self.checks) <= MAX_BASIS * PROBE_CHECK,
            "bad probe checks",
        )
        _require(
            isinstance(self.root, bytes) and (not self.root or MIN_HASH <= len(self.root) <= 32),
            "bad target root",
        )
        for listing in check_items(self.listings, "listings"):
            if listing is not None:
                for entry in check_items(listing, "entries"):
                    _require(isinstance(entry, Entry), "listing holds a non-entry")
                names = [e.name for e in listing]
                _require(len(set(names)) == len(names), "duplicate names in a listing")
        _require(isinstance(self.have, bytes) and len(self.have) <= MAX_ITEMS, "bad bitmap")
        check_int(self.indexed, 0, 1 << 62, "indexed")

    def has(self, i: int) -> bool:
        return i // 8 < len(self.have) and bool(self.have[i // 8] >> (i % 8) & 1)


Refined = tuple[bytes | int, ...]
Piece = bytes | int | Refined


@dataclass(frozen=True, slots=True)
class Write:
    """Bytes ``[offset, offset + pieces)`` of one file, rebuilt from pieces in order.

    A piece is a node hash of the new file's tree that the target holds (or, as a negative
    int, the position of that hash among those the target confirmed during the walk), a
    count of the next literal leaves, or a refined leaf: a tuple of sub-chunk hashes (or
    positions) and literal counts that together make one leaf, or ``(0, k, m)``: the
    ``k``-th leaf of the walk's refinement probe, made of its sub-chunks in order, each
    from the old version where the target found it and from the next literal where not
    (``m`` literals in all, so the message still checks its own literal count). A file
    larger than a frame's budget continues in the next frame with a larger ``offset``; it
    is complete when its pieces reach ``size``.
    """

    path: str
    kind: int
    size: int
    hash: bytes
    pieces: tuple[Piece, ...]
    offset: int = 0
    #: Mode and mtime to give the file once it is complete (``None``: the target's default).
    meta: tuple[int, int] | None = None
    #: Non-empty: the file is a zstd delta (``merkle_sync.delta``) against the file the target
    #: holds at ``path``, whose hash starts with these bytes; its one piece counts the
    #: literals that hold the delta, in order (each at most a leaf's size, as all literals).
    delta_from: bytes = b""

    def __post_init__(self) -> None:
        check_path(self.path)
        _require(self.kind in FILE_KINDS and type(self.kind) is int, f"bad file kind {self.kind!r}")
        check_int(self.size, 0, MAX_LINK if self.kind == LINK_KIND else MAX_FILE_SIZE, "size")
        check_meta(self.meta)
        check_int(self.offset, 0, self.size, "write offset")
        _require(isinstance(self.hash, bytes), "file hash must be bytes")
        _require(len(check_items(self.pieces, "pieces")) >= 1, "a file needs at least one piece")
        if self.delta_from != b"":
            check_hash(self.delta_from, len(self.hash))
            runs = self.pieces[0]
            _require(
                len(self.pieces) == 1
                and type(runs) is int
                and 1 <= runs <= DELTA_MAX // CHUNK_MAX + 2
                and self.offset == 0
                and self.kind != LINK_KIND
                and self.size <= DELTA_MAX,
                "a delta write is a run of literals holding a whole file's delta",
            )
        for p in self.pieces:
            if isinstance(p, tuple) and p[:1] == (0,):  # a leaf the walk's probe refined
                _require(
                    len(p) == 3
                    and type(p[1]) is int
                    and 0 <= p[1] < MAX_BASIS
                    and type(p[2]) is int
                    and 0 <= p[2] <= MAX_SUBS,
                    f"bad probed leaf {p!r}",
                )
            elif isinstance(p, tuple):
                _require(1 <= len(p) <= CHUNK_MAX, "a refined leaf needs sub-pieces")
                for q in p:
                    _require(isinstance(q, bytes) or check_run(q) != 0, f"bad sub-piece {q!r}")
            else:
                _require(isinstance(p, bytes) or check_run(p) != 0, f"bad piece {p!r}")


@dataclass(frozen=True, slots=True)
class Apply(Message):
    """Everything the target must change, applied only after all of it checks out."""

    hash_len: int
    #: The target applies only if its root hash starts with this (b"": always). Short is
    #: enough: the full root in the reply is what guards correctness.
    base: bytes
    removes: tuple[str, ...]
    mkdirs: tuple[str, ...]
    writes: tuple[Write, ...]
    literal_sizes: tuple[int, ...]
    literals: bytes
    #: As in ``Walk``: sub-chunks of this old content may be named as pieces.
    basis: tuple[Span, ...] = ()
    #: An apply is a stream of frames numbered from 0; only the first carries ``base``,
    #: removals, new directories and basis; the target replies to the last with its root.
    part: int = 0
    final: bool = True
    #: Metadata of entries whose content did not change, and of directories, applied last.
    attrs: tuple[Attr, ...] = ()
    #: ``literals`` is one zstd frame made with the frame's context as a dictionary: the
    #: bytes the target already holds that this frame's small files reuse (see
    #: ``merkle_sync.context``). It inflates to exactly ``sum(literal_sizes)`` bytes.
    packed: bool = False

    def __post_init__(self) -> None:
        check_hash_len(self.hash_len)
        check_basis(self.basis)
        for a in check_items(self.attrs, "attrs"):
            _require(isinstance(a, Attr), "attrs holds a non-attr")
        check_int(self.part, 0, 1 << 62, "part")
        _require(isinstance(self.final, bool), "final must be bool")
        _require(
            self.part == 0 or not (self.base or self.removes or self.mkdirs or self.basis),
            "only the first frame of an apply may carry a base, removals, directories or basis",
        )
        _require(self.base == b"" or check_hash(self.base, self.hash_len) is not None, "bad base")
        for p in check_items(self.removes, "removes"):
            check_path(p)
        for p in check_items(self.mkdirs, "mkdirs"):
            check_path(p)
        paths = [w.path for w in check_items(self.writes, "writes")]
        _require(len(set(paths)) == len(paths), "a file is written twice")
        for w in self.writes:
            _require(isinstance(w, Write), "writes holds a non-write")
            check_hash(w.hash, self.hash_len)
            for p in w.pieces:
                for q in p if isinstance(p, tuple) else (p,):
                    if isinstance(q, bytes):
                        check_hash(q, self.hash_len)
        _require(
            all(w.offset == 0 for w in self.writes[1:]), "only the first write may continue a file"
        )
        for n in check_items(self.literal_sizes, "literal sizes"):
            check_int(n, 0, CHUNK_MAX, "literal size")
        runs = sum(literal_runs(w.pieces) for w in self.writes)
        _require(runs == len(self.literal_sizes), "pieces do not use each literal exactly once")
        _require(isinstance(self.literals, bytes), "literals must be bytes")
        _require(isinstance(self.packed, bool), "packed must be a bool")
        if self.packed:
            _require(sum(self.literal_sizes) <= MAX_FRAME, "packed literals inflate too far")
        else:
            _require(len(self.literals) == sum(self.literal_sizes), "literal sizes do not add up")


@dataclass(frozen=True, slots=True)
class ApplyReply(Message):
    """The target's full root hash afterwards: the end-to-end guard for truncated hashes."""

    root: bytes

    def __post_init__(self) -> None:
        check_hash(self.root, FULL_HASH)


@dataclass(frozen=True, slots=True)
class Ack(Message):
    """The target applied frame ``part`` of an apply stream and waits for the next one."""

    part: int

    def __post_init__(self) -> None:
        check_int(self.part, 0, 1 << 62, "part")


Request = Walk | Apply
Response = WalkReply | ApplyReply | Ack
