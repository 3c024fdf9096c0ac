"""The compact refinement probe: a changed leaf's sub-chunks travel once, as ``SUB_HASH``-byte
hashes looked up only in their own span of the old file; the target keeps what it found and
the apply names the leaf ``(0, k, m)``. Wire rules, whole syncs (with the frames inspected),
hostile and stale applies, and when the target forgets its probe."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import msgpack
import pytest

import merkle_sync.checks
import merkle_sync.refine
import merkle_sync.target
from merkle_sync import (
    FileSystemEvent,
    FileSystemEventType,
    MemoryFileSystem,
    ProtocolError,
    ReplicatorSource,
    ReplicatorTarget,
)
from merkle_sync.checks import FULL_HASH, SUB_HASH
from merkle_sync.chunking import CHUNK_MAX, SUB_MAX, cut_leaves, sub_chunks
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.freshness import StaleContent
from merkle_sync.merkle import KIND_BYTES, FileNode
from merkle_sync.protocol import (
    MAX_BASIS,
    MAX_ITEMS,
    MAX_SUBS,
    Apply,
    Span,
    Walk,
    WalkReply,
    Write,
    literal_runs,
)
from merkle_sync.testing import same_tree, snapshot
from merkle_sync.wire import StreamDecoder, decode, encode
from tests.texts import H8, MUTATIONS
from tests.texts import edited as _edit
from tests.texts import source_text as _text


def _leaves(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(start, end, hash)`` of each leaf, as both sides cut them."""
    out, at = [], 0
    for digest, length in cut_leaves(data):
        out.append((at, at + length, digest))
        at += length
    return out


OLD = _text(100_000)
#: Three small edits far apart: an overwrite, an insertion (what follows shifts), an overwrite.
EDITS = ((16_000, "EDIT", False), (46_000, "INSERTED", True), (91_000, "XY", False))
NEW = OLD
for _at, _patch, _insert in reversed(EDITS):
    NEW = _edit(NEW, _at, _patch, _insert)


def _changed_leaves(old: str, new: str) -> list[bytes]:
    """The new version's leaves the old one lacks, in file order: what gets refined."""
    held = {h for _, _, h in _leaves(old.encode())}
    data = new.encode()
    return [data[a:b] for a, b, h in _leaves(data) if h not in held]


def _probe_of(leaf: bytes) -> bytes:
    """What the refine walk must carry for one changed leaf: its sub-chunks' hash prefixes."""
    return b"".join(h[:SUB_HASH] for h, _, _ in sub_chunks(leaf))


def test_the_edits_fall_in_three_different_leaves_of_the_old_version():
    """The premise of the whole-sync tests below: three refined leaves, not one."""
    leaves = _leaves(OLD.encode())
    hit = {next(i for i, (a, b, _) in enumerate(leaves) if a <= at < b) for at, _, _ in EDITS}
    assert len(hit) == 3
    assert len(_changed_leaves(OLD, NEW)) == 3


# -- the wire rules -----------------------------------------------------------------------
SPAN = Span("f", 0, 100)


def test_a_walk_with_a_probe_and_its_basis_is_valid_and_round_trips():
    """The control for the refusals below, and the 6-field walk on the wire."""
    walk = Walk(8, b"", (), (H8,), (SPAN, Span("g", 5, 50)), (b"abc", b"efghij"))
    assert decode(encode(walk)) == walk
    assert decode(encode(walk)).refine == (b"abc", b"efghij")
    plain = Walk(8, b"", (), (H8,), (SPAN,))  # no probe: still the 5-field walk
    assert decode(encode(plain)) == plain
    assert len(msgpack.unpackb(encode(plain))) == 6  # the type and 5 fields


@pytest.mark.parametrize(
    ("basis", "refine"),
    [((), (b"abc",)), ((SPAN,), (b"abc", b"efg")), ((SPAN, SPAN), (b"abc",))],
    ids=["no-basis", "fewer-spans", "more-spans"],
)
def test_a_probe_names_one_leaf_per_basis_span(basis, refine):
    """The target looks leaf ``k`` up in span ``k`` only: the two lists must pair up."""
    with pytest.raises(ProtocolError):
        Walk(8, b"", (), (), basis, refine)


@pytest.mark.parametrize(
    "leaf",
    [
        b"",
        b"ab",
        b"abcde",
        bytes(SUB_HASH * MAX_SUBS + SUB_HASH),
        bytes(SUB_HASH * MAX_SUBS + 1),
        "abc",
        (b"abc",),
        4,
    ],
    ids=["empty", "short", "ragged", "past-max-subs", "ragged-past-max", "str", "tuple", "int"],
)
def test_a_probed_leaf_is_one_to_max_subs_whole_hashes(leaf):
    with pytest.raises(ProtocolError):
        Walk(8, b"", (), (), (SPAN,), (leaf,))


def test_a_probed_leaf_of_max_subs_hashes_is_valid():
    """The bound is inclusive: a leaf cut into the most sub-chunks one can have is legal."""
    assert MAX_SUBS * 64 > CHUNK_MAX  # SUB_MIN is 64: no real leaf has more sub-chunks
    Walk(8, b"", (), (), (SPAN,), (bytes(SUB_HASH * MAX_SUBS),))


def test_a_walk_asks_about_at_most_max_items_hashes_probe_included():
    """The reply's bitmap answers ``have`` and then every probed sub-chunk: both count."""
    spans = tuple(Span("f", i, i + 1) for i in range(MAX_BASIS))
    probe = (bytes(SUB_HASH * MAX_SUBS),) * MAX_BASIS
    room = MAX_ITEMS - MAX_BASIS * MAX_SUBS
    assert room > 0  # so that only ``have`` and the probe together can pass the limit
    Walk(8, b"", (), (H8,) * room, spans, probe)
    with pytest.raises(ProtocolError):
        Walk(8, b"", (), (H8,) * (room + 1), spans, probe)


@pytest.mark.parametrize(
    "body",
    [
        [1, 8, b"", [], b"", [], [b"abc"]],  # a probe without its basis
        [1, 8, b"", [], b"", ["f", 0, 100], [b"abcd"]],  # ragged
        [1, 8, b"", [], b"", ["f", 0, 100], b"abc"],  # not a list of leaves
        [1, 8, b"", [], b"", ["f", 0, 100], [b"abc"], 0],  # digests that are not a list
        [1, 8, b"", [], b"", ["f", 0, 100], [b"abc"], [], 0],  # 8 fields
        [1, 8, b"", [], b""],  # 4 fields
    ],
    ids=["no-basis", "ragged", "bytes", "bad-digests", "eight-fields", "four-fields"],
)
def test_a_hostile_walk_is_refused_when_decoded(body):
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(body, use_bin_type=True))


def _write(*pieces) -> Write:
    return Write("f", KIND_BYTES, 100, H8, pieces)


@pytest.mark.parametrize(
    "piece",
    [
        (0,),
        (0, 1),
        (0, 1, 2, 3),
        (0, -1, 0),
        (0, MAX_BASIS, 0),
        (0, 1, -1),
        (0, 1, MAX_SUBS + 1),
        (0, "x", 0),
        (0, 1, "x"),
        (0, b"k", 0),
        (0, None, 0),
        (0, 1.0, 0),
        (0, True, 0),
        (0, 1, True),
    ],
    ids=repr,
)
def test_a_malformed_probed_leaf_is_refused(piece):
    with pytest.raises(ProtocolError):
        _write(piece)


@pytest.mark.parametrize("piece", [(0, 0, 0), (0, MAX_BASIS - 1, MAX_SUBS), (0, 7, 3)])
def test_a_probed_leaf_in_range_is_valid_and_round_trips(piece):
    m = piece[2]
    apply = Apply(8, b"", (), (), (_write(piece),), (10,) * m, b"x" * 10 * m)
    back = decode(encode(apply))
    assert back == apply
    assert back.writes[0].pieces == (piece,)


@pytest.mark.parametrize(
    "piece", [(0, 1), (0, -1, 0), (0, 1, MAX_SUBS + 1), (0, "x", 0), (0, 1, 2, 3)], ids=repr
)
def test_a_hostile_probed_leaf_is_refused_when_decoded(piece):
    """A peer builds its frames without our checks: decoding applies them."""
    frame = msgpack.packb([3, 8, b"", [], [], [["f", 1, 100, H8, [list(piece)]]], [], b"", []])
    with pytest.raises(ProtocolError):
        decode(frame)


def test_literal_runs_counts_the_literals_a_probed_leaf_takes():
    """``m`` is what lets an apply check its own literal count before the target looks
    at its probe."""
    pieces = ((0, 0, 3), 2, (0, 1, 0), (H8, 1, -1), -3, H8, (0, 2, 1))
    assert literal_runs(pieces) == 3 + 2 + 0 + 1 + 1
    write = Write("f", KIND_BYTES, 100, H8, pieces)
    Apply(8, b"", (), (), (write,), (1,) * 7, b"x" * 7)
    for wrong in (6, 8):  # a probed leaf's m must be paid in literals, no more, no less
        with pytest.raises(ProtocolError):
            Apply(8, b"", (), (), (write,), (1,) * wrong, b"x" * wrong)


# -- the target's answer to a probe -------------------------------------------------------
def _held_target() -> tuple[ReplicatorTarget, list[Span], list[list[bytes]]]:
    """A target holding ``OLD``; a span for each of its leaves and each leaf's sub-chunk
    hashes (a span that is exactly one leaf makes the target cut that leaf alone)."""
    fs = MemoryFileSystem()
    fs.makedirs("/t/d")
    fs.writefile("/t/d/big.txt", OLD)
    data = OLD.encode()
    leaves = _leaves(data)
    spans = [Span("d/big.txt", a, b) for a, b, _ in leaves]
    subs = [[h for h, _, _ in sub_chunks(data[a:b])] for a, b, _ in leaves]
    return ReplicatorTarget(fs, "/t"), spans, subs


def _ask(target: ReplicatorTarget, walk: Walk) -> WalkReply:
    return decode(target.handle_request(encode(walk)))


@pytest.mark.parametrize("leaf", [1, 9])
def test_a_probed_hash_is_looked_up_in_its_own_span_only(leaf):
    """The same sub-chunk hash asked in two spans: found only in the one that holds it
    (which keeps a false match's odds those of one span's sub-chunks)."""
    target, spans, subs = _held_target()
    prefix = subs[leaf][3][:SUB_HASH]
    reply = _ask(target, Walk(8, b"", (), (), (spans[1], spans[9]), (prefix, prefix)))
    assert [reply.has(0), reply.has(1)] == [leaf == 1, leaf == 9]


def test_the_probes_answers_follow_the_have_bits_in_order():
    """One bitmap: ``have`` first, then each leaf's sub-chunks in order, past the bytes
    ``have`` alone needed."""
    target, spans, subs = _held_target()
    held = _leaves(OLD.encode())[0][2][:8]  # a leaf: in the target's index
    have = (held, b"\xee" * 8)
    probe = subs[1][0][:SUB_HASH] + b"\xee" * SUB_HASH + subs[1][-1][:SUB_HASH]
    probe2 = b"\xee" * SUB_HASH * 8 + subs[2][1][:SUB_HASH]  # past the first byte of bits
    reply = _ask(target, Walk(8, b"", (), have, (spans[1], spans[2]), (probe, probe2)))
    bits = [reply.has(i) for i in range(2 + 3 + 9)]
    assert bits == [True, False, True, False, True] + [False] * 8 + [True]
    assert len(reply.have) == 2


def test_a_refine_walk_does_not_confirm_sub_chunks_asked_in_have():
    """With a probe, the basis spans serve the probe only: the apply no longer carries
    them, so a sub-chunk's hash in ``have`` would name nothing the apply could use. Without
    a probe (the older walk), the spans' sub-chunks count as held."""
    target, spans, subs = _held_target()
    sub = subs[1][2]
    reply = _ask(target, Walk(8, b"", (), (sub[:8],), (spans[1],), (sub[:SUB_HASH],)))
    assert [reply.has(0), reply.has(1)] == [False, True]
    reply = _ask(target, Walk(8, b"", (), (sub[:8],), (spans[1],)))
    assert reply.has(0)


# -- watching the frames ------------------------------------------------------------------
class Intercepted(Exception):
    """The tap kept a frame from the target; the source stops there."""


@dataclass
class Tap:
    """Forwards frames to the target, keeping each request and reply decoded.

    ``stop(request)``: keep that frame from the target (``Intercepted``); ``before(request)``:
    called just before the frame is delivered."""

    target: ReplicatorTarget
    stop: object = None
    before: object = None
    requests: list = field(default_factory=list)
    replies: list = field(default_factory=list)
    decoder: StreamDecoder = field(default_factory=StreamDecoder)

    def __call__(self, frame: bytes) -> bytes:
        request = self.decoder.decode(frame)  # apply frames may share a zstd stream
        self.requests.append(request)
        self.replies.append(None)  # no reply: kept from the target, or refused by it
        if self.stop is not None and self.stop(request):
            raise Intercepted(request)
        if self.before is not None:
            self.before(request)
        reply = self.target.handle_request(frame)
        self.replies[-1] = decode(reply)
        return reply

    def walks(self) -> list[Walk]:
        return [r for r in self.requests if isinstance(r, Walk)]

    def applies(self) -> list[Apply]:
        return [r for r in self.requests if isinstance(r, Apply)]

    def refine_walks(self) -> list[tuple[Walk, WalkReply]]:
        return [
            (q, a)
            for q, a in zip(self.requests, self.replies, strict=True)
            if isinstance(q, Walk) and q.refine
        ]


def _is_probed(piece: object) -> bool:
    return isinstance(piece, tuple) and piece[:1] == (0,)


def _probed(apply: Apply) -> list[tuple]:
    return [p for w in apply.writes for p in w.pieces if _is_probed(p)]


def _found(reply: WalkReply, walk: Walk) -> list[list[bool]]:
    """The reply's answers to the probe, leaf by leaf (they follow the ``have`` bits)."""
    at, out = len(walk.have), []
    for leaf in walk.refine:
        n = len(leaf) // SUB_HASH
        out.append([reply.has(at + i) for i in range(n)])
        at += n
    return out


@dataclass
class World:
    fs: object
    src: str
    dst: str
    target: ReplicatorTarget


def _world(tmp_path, kind: str = "memory", old: str = OLD, new: str = NEW, **target_kw) -> World:
    """A target holding ``old`` at ``d/big.txt`` and a source directory with ``new`` there."""
    if kind == "memory":
        fs, src, dst = MemoryFileSystem(), "/src", "/dst"
    else:
        fs, src, dst = DiskFileSystem(), str(tmp_path / "src"), str(tmp_path / "dst")
    for root, text in ((src, new), (dst, old)):
        fs.makedirs(f"{root}/d")
        fs.writefile(f"{root}/d/big.txt", text)
        fs.writefile(f"{root}/small.txt", "small")
    return World(fs, src, dst, ReplicatorTarget(fs, dst, **target_kw))


def _source(world: World, rpc, **kw) -> ReplicatorSource:
    """A new source, walking: kept copies off, so an edit is refined, never a delta."""
    return ReplicatorSource(world.fs, world.src, rpc, keep=0, **kw)


# -- whole syncs --------------------------------------------------------------------------
def _check_probe_frames(tap: Tap, old: str = OLD, new: str = NEW) -> None:
    """One refine walk asking only 4-byte hashes in its probe, an apply naming each probed
    leaf ``(0, k, m)`` with ``m`` what the target lacked, and no basis anywhere."""
    leaves = _changed_leaves(old, new)
    [(walk, reply)] = tap.refine_walks()
    assert walk.have == () and walk.dirs == () and walk.root == b""
    assert walk.refine == tuple(_probe_of(leaf) for leaf in leaves)
    assert len(walk.basis) == len(walk.refine)
    assert all(span.path == "d/big.txt" for span in walk.basis)
    # Sub-chunks never travel as short hashes in ``have`` (as before the probe).
    subs = {h[:8] for leaf in leaves for h, _, _ in sub_chunks(leaf)}
    assert not any(h[:8] in subs for w in tap.walks() for h in w.have)
    found = _found(reply, walk)
    assert all(sum(not hit for hit in leaf) <= 2 for leaf in found)  # most of it was there
    applies = tap.applies()
    assert all(a.basis == () for a in applies)
    probed = [p for a in applies for p in _probed(a)]
    assert sorted(p[1] for p in probed) == list(range(len(leaves)))
    for _, k, m in probed:
        assert m == sum(not hit for hit in found[k])
    legacy = [p for a in applies for w in a.writes for p in w.pieces if isinstance(p, tuple)]
    assert all(_is_probed(p) for p in legacy)  # no sub-chunk hashes repeated in the apply
    assert sum(len(a.literals) for a in applies) < len(leaves) * 2 * SUB_MAX


@pytest.mark.parametrize(
    ("kind", "patch_min"),
    [("memory", None), ("disk", None), ("disk", 1)],
    ids=["memory", "disk-staged", "disk-in-place"],
)
def test_a_walk_refines_scattered_edits_with_the_compact_probe(tmp_path, kind, patch_min):
    """Patched in place (``patch_min=1``), the old sub-chunks are read back from the very
    file being rewritten, where the insertion already moved what follows it."""
    world = _world(tmp_path, kind, patch_min=patch_min)
    tap = Tap(world.target)
    source = _source(world, tap)
    assert same_tree(world.fs, world.src, world.fs, world.dst)
    assert source.stats.delta_files == 0
    assert source.stats.bytes_up < len(NEW) // 20  # 100 KB file: a few KB of hashes and edits
    _check_probe_frames(tap)
    assert len(tap.applies()) == 1
    assert ReplicatorTarget(world.fs, world.dst).tree.hash == world.target.tree.hash


@pytest.mark.parametrize(
    ("kind", "patch_min"),
    [("memory", None), ("disk", None), ("disk", 1)],
    ids=["memory", "disk-staged", "disk-in-place"],
)
def test_probed_leaves_across_many_apply_frames(tmp_path, kind, patch_min):
    """A tiny frame budget spreads the file over several frames: the target keeps its probe
    for the whole apply stream, and (in place) reads old sub-chunks that earlier frames
    already overwrote from the undo journal."""
    world = _world(tmp_path, kind, patch_min=patch_min)
    tap = Tap(world.target)
    _source(world, tap, frame_literals=64)
    assert same_tree(world.fs, world.src, world.fs, world.dst)
    _check_probe_frames(tap)
    frames = [i for i, a in enumerate(tap.applies()) if _probed(a)]
    assert len(frames) == 3  # each probed leaf in a frame of its own


def test_an_event_on_a_running_source_refines_with_the_probe_too():
    """Change mode: the target's state is known, the refine walk carries no root and must
    not make the target forget what it needs for the apply."""
    world = _world(None, old=OLD, new=OLD)
    tap = Tap(world.target)
    source = _source(world, tap)
    assert same_tree(world.fs, world.src, world.fs, world.dst)
    tap.requests.clear()
    tap.replies.clear()
    world.fs.writefile(f"{world.src}/d/big.txt", NEW)
    source.handle_event(
        FileSystemEvent(f"{world.src}/d/big.txt", FileSystemEventType.FILE_MODIFIED)
    )
    assert same_tree(world.fs, world.src, world.fs, world.dst)
    assert not any(w.root for w in tap.walks())  # planned from the known state: no root walk
    _check_probe_frames(tap)


@pytest.mark.parametrize("frame_literals", [None, 64], ids=["one-frame", "many-frames"])
def test_one_probed_leaf_serves_two_files_with_the_same_edit(frame_literals):
    """Two copies, edited alike: the changed leaf is probed once (in the first file's old
    version), and the second write names the same ``(0, 0, m)`` in the same frame, or the
    leaf by its hash once the first file landed in an earlier frame."""
    fs = MemoryFileSystem()
    new = _edit(OLD, 16_000, "EDIT")
    for root, text in (("/src", new), ("/dst", OLD)):
        fs.makedirs(root)
        fs.writefile(f"{root}/a.txt", text)
        fs.writefile(f"{root}/b.txt", text)
    tap = Tap(ReplicatorTarget(fs, "/dst"))
    kw = {} if frame_literals is None else {"frame_literals": frame_literals}
    ReplicatorSource(fs, "/src", tap, keep=0, **kw)
    assert same_tree(fs, "/src", fs, "/dst")
    [(walk, _)] = tap.refine_walks()
    assert len(walk.refine) == 1 and walk.basis[0].path == "a.txt"
    probed = [
        (w.path, p) for a in tap.applies() for w in a.writes for p in w.pieces if _is_probed(p)
    ]
    assert [path for path, _ in probed] == (
        ["a.txt", "b.txt"] if frame_literals is None else ["a.txt"]
    )
    assert {p[1] for _, p in probed} == {0}


# -- hostile applies after an honest refine walk ------------------------------------------
@pytest.fixture
def plain(monkeypatch):
    """Apply frames with their literals as they are: these tests cut and splice them, which
    literals packed against the frame's context (``merkle_sync.context``) would not allow."""
    import merkle_sync.frames

    monkeypatch.setattr(merkle_sync.frames, "pack_literals", lambda *a, **k: None, raising=False)


def _captured(world: World, leaves: int = 3) -> tuple[Tap, Apply]:
    """Run a source through its refine walk; keep its honest apply from the target."""
    tap = Tap(world.target, stop=lambda r: isinstance(r, Apply))
    with pytest.raises(Intercepted):
        _source(world, tap)
    [apply] = tap.applies()
    assert apply.final and len(_probed(apply)) == leaves and len(tap.refine_walks()) == 1
    return tap, apply


def _split(apply: Apply) -> list[tuple[Write, list[tuple[object, list[bytes]]]]]:
    """Each write's pieces, each with the literals it takes, in order."""
    assert not getattr(apply, "packed", False)  # see ``plain``
    chunks, at = [], 0
    for size in apply.literal_sizes:
        chunks.append(apply.literals[at : at + size])
        at += size
    taken = iter(chunks)
    out = [
        (w, [(p, [next(taken) for _ in range(literal_runs((p,)))]) for p in w.pieces])
        for w in apply.writes
    ]
    assert next(taken, None) is None
    return out


def _join(apply: Apply, split) -> Apply:
    writes, literals = [], []
    for w, pieces in split:
        writes.append(replace(w, pieces=tuple(p for p, _ in pieces)))
        literals += [chunk for _, chunks in pieces for chunk in chunks]
    return replace(
        apply,
        writes=tuple(writes),
        literal_sizes=tuple(len(c) for c in literals),
        literals=b"".join(literals),
    )


def _tamper(apply: Apply, change) -> Apply:
    """The apply with ``change(k, m, literals)`` -> ``(piece, literals)`` for each probed
    leaf (``None``: as it was)."""
    split = _split(apply)
    for _, pieces in split:
        for i, (piece, chunks) in enumerate(pieces):
            if _is_probed(piece):
                new = change(piece[1], piece[2], list(chunks))
                if new is not None:
                    pieces[i] = new
    return _join(apply, split)


def _moved_literal(apply: Apply) -> Apply:
    """Leaf 0 declares one literal fewer, leaf 1 one more; the literal stream is unchanged
    (leaf 0's last literal counted as leaf 1's first), so a target that ignored ``m`` would
    rebuild exactly the right file."""
    split = _split(apply)
    probed = [
        (pieces, i) for _, pieces in split for i, (p, _) in enumerate(pieces) if _is_probed(p)
    ]
    (p0, i0), (p1, i1) = probed[0], probed[1]
    (_, k0, m0), chunks0 = p0[i0]
    (_, k1, m1), chunks1 = p1[i1]
    assert m0 >= 1
    p0[i0] = ((0, k0, m0 - 1), chunks0[:-1])
    p1[i1] = ((0, k1, m1 + 1), [chunks0[-1], *chunks1])
    return _join(apply, split)


HOSTILE = {
    "k-past-the-probe": lambda a: _tamper(a, lambda k, m, c: ((0, 3, m), c) if k == 2 else None),
    "k-far-past-the-probe": lambda a: _tamper(
        a, lambda k, m, c: ((0, MAX_BASIS - 1, m), c) if k == 0 else None
    ),
    "m-too-small": lambda a: _tamper(
        a, lambda k, m, c: ((0, k, m - 1), c[:-1]) if k == 1 else None
    ),
    "m-too-large": lambda a: _tamper(
        a, lambda k, m, c: ((0, k, m + 1), [*c, b"x" * 100]) if k == 1 else None
    ),
    "m-zero": lambda a: _tamper(a, lambda k, m, c: ((0, k, 0), []) if k == 0 else None),
    "literal-moved-to-the-next-leaf": _moved_literal,
}


def _assert_refused_unchanged(world: World, frame: bytes, error=ProtocolError, match=None):
    fs, target = world.fs, world.target
    before = snapshot(fs, world.dst)
    ops = (
        {m: fs.get_num_operations(m) for m in MUTATIONS} if isinstance(fs, MemoryFileSystem) else {}
    )
    root = target.tree.hash
    with pytest.raises(error, match=match) as info:
        target.handle_request(frame)
    assert snapshot(fs, world.dst) == before
    if ops:
        assert {m: fs.get_num_operations(m) for m in MUTATIONS} == ops
    assert target.tree.hash == root
    return info.value


def test_the_captured_apply_is_applied_as_it_is(plain):
    """The control for the refusals below: the honest frame, delivered late, is applied."""
    world = _world(None)
    _, apply = _captured(world)
    world.target.handle_request(encode(apply))
    assert same_tree(world.fs, world.src, world.fs, world.dst)


@pytest.mark.parametrize("tamper", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_probed_leaf_is_refused_and_nothing_changes(tamper, plain):
    """Each lie about the probe is refused before anything lands; a new sync then works."""
    world = _world(None)
    _, apply = _captured(world)
    hostile = HOSTILE[tamper](apply)
    assert hostile != apply
    error = _assert_refused_unchanged(world, encode(hostile))
    assert not isinstance(error, StaleContent)  # a lie, not a hand edit
    _source(world, world.target.handle_request)  # and the target carries on
    assert same_tree(world.fs, world.src, world.fs, world.dst)


def test_a_probed_leaf_past_the_largest_leaf_is_refused(plain):
    """Literals of the right count but as large as literals may be: the leaf is cut off at
    ``CHUNK_MAX`` while it is built, before its hash (and the file's) could catch it."""
    world = _world(None)
    _, apply = _captured(world)
    big = _tamper(apply, lambda k, m, c: ((0, k, m), [b"y" * CHUNK_MAX] * m) if k == 0 else None)
    _assert_refused_unchanged(world, encode(big), match="largest leaf")


def test_an_apply_naming_a_probed_leaf_without_a_refine_walk_is_refused(plain):
    """Two identical worlds: one answers the refine walk, the other every walk but that
    one. The first world's honest apply is applied there, and refused by the second (its
    base and confirmed hashes are right: only the probe is missing)."""
    honest = _world(None)
    _, apply = _captured(honest)
    world = _world(None)
    tap = Tap(world.target, stop=lambda r: isinstance(r, Walk) and bool(r.refine))
    with pytest.raises(Intercepted):
        _source(world, tap)
    assert world.target.tree.hash == honest.target.tree.hash
    _assert_refused_unchanged(world, encode(apply))
    fresh = _world(None)  # a target that answered no walk at all
    _assert_refused_unchanged(fresh, encode(apply))
    honest.target.handle_request(encode(apply))  # the control
    assert same_tree(honest.fs, honest.src, honest.fs, honest.dst)


# -- the probe is forgotten ---------------------------------------------------------------
def _copy_of_leaf(apply: Apply, k: int, named: int | None = None) -> Apply:
    """A new file made of probed leaf ``k`` alone, named ``(0, k, m)`` (or ``(0, named, m)``)
    with the literals the honest apply gave it: applied only while the target still holds
    its probe."""
    [(piece, chunks)] = [
        (p, c) for _, pieces in _split(apply) for p, c in pieces if _is_probed(p) and p[1] == k
    ]
    leaf = _changed_leaves(OLD, NEW)[k]
    digest = FileNode.from_data(KIND_BYTES, leaf).hash[: apply.hash_len]
    piece = piece if named is None else (0, named, piece[2])
    write = Write("copy.txt", KIND_BYTES, len(leaf), digest, (piece,))
    return Apply(apply.hash_len, b"", (), (), (write,), tuple(map(len, chunks)), b"".join(chunks))


@pytest.mark.parametrize("k", [0, 2])
def test_a_probed_leaf_may_be_named_by_any_write_while_the_probe_is_held(k, plain):
    """The control for the tests below: the crafted apply is a valid one."""
    world = _world(None)
    _, apply = _captured(world)
    world.target.handle_request(encode(_copy_of_leaf(apply, k)))
    assert world.fs.readfile(f"{world.dst}/copy.txt") == _changed_leaves(OLD, NEW)[k]


def _complete(world: World, apply: Apply) -> None:
    world.target.handle_request(encode(apply))
    assert same_tree(world.fs, world.src, world.fs, world.dst)


def _root_walk(world: World, apply: Apply) -> None:
    world.target.handle_request(encode(Walk(8, b"\x07" * 32, ("",), ())))


def _refused(world: World, apply: Apply) -> None:
    hostile = HOSTILE["k-past-the-probe"](apply)
    with pytest.raises(ProtocolError):
        world.target.handle_request(encode(hostile))


def _stale_base(world: World, apply: Apply) -> None:
    """An apply for another state of the target: answered with its root, nothing applied."""
    reply = world.target.handle_request(encode(replace(apply, base=b"\x09" * 8)))
    assert decode(reply).root == world.target.tree.hash


FORGETTING = {
    "the-sync-completed": _complete,
    "a-walk-with-a-root": _root_walk,
    "an-apply-was-refused": _refused,
    "a-stale-apply-was-answered": _stale_base,
}


@pytest.mark.parametrize("event", list(FORGETTING), ids=list(FORGETTING))
def test_the_probe_is_forgotten(event, plain):
    """Once the sync is over (or starts again), ``(0, k, m)`` names nothing. Even after the
    completed sync, the sub-chunks the target found are still at the same offsets (the
    edits were elsewhere in the file), so a target that kept its probe would apply it."""
    world = _world(None)
    _, apply = _captured(world)
    FORGETTING[event](world, apply)
    _assert_refused_unchanged(world, encode(_copy_of_leaf(apply, 0)))


@pytest.mark.parametrize("named", [0, 2], ids=["as-the-new-leaf-0", "as-the-old-leaf-2"])
def test_a_second_refine_walk_replaces_the_probe(plain, named):
    """The walk probes the old leaf 2 again, alone: it is leaf 0 of the new probe, and 2
    names nothing any more."""
    world = _world(None)
    tap, apply = _captured(world)
    [(walk, _)] = tap.refine_walks()
    again = Walk(walk.hash_len, b"", (), (), walk.basis[2:], walk.refine[2:])
    world.target.handle_request(encode(again))
    copy = _copy_of_leaf(apply, 2, named)
    if named == 2:
        _assert_refused_unchanged(world, encode(copy))
    else:
        world.target.handle_request(encode(copy))
        assert world.fs.readfile(f"{world.dst}/copy.txt") == _changed_leaves(OLD, NEW)[2]


# -- the old file changed between the probe and the apply ---------------------------------
#: One edit in the first leaf, so the probed leaf is the first piece the target builds.
STALE_NEW = _edit(OLD, 5_000, "EDIT")


def _hand_edit(path: Path, how: str) -> None:
    """Same size, other bytes: all of it, or 4 bytes in a sub-chunk the target found."""
    with open(path, "r+b") as f:
        data = f.read()
        f.seek(0)
        if how == "whole":
            f.write(data.upper())
        else:
            f.seek(2_000)
            f.write(b"HAND")


@pytest.mark.parametrize("how", ["whole", "near"])
@pytest.mark.parametrize("patch_min", [None, 1], ids=["staged", "in-place"])
def test_an_old_file_edited_by_hand_after_the_probe_is_stale_content(tmp_path, how, patch_min):
    """The target read those bytes to answer the probe; by the apply they changed. Each
    found sub-chunk is checked against its hash as it is read back: ``StaleContent``,
    nothing written (in place: the undo journal puts the hand-edited bytes back), and the
    next sync ends equal."""
    world = _world(tmp_path, "disk", new=STALE_NEW, patch_min=patch_min)
    _, apply = _captured(world, leaves=1)
    assert _is_probed(apply.writes[0].pieces[0])  # read back before anything else
    path = Path(world.dst, "d", "big.txt")
    _hand_edit(path, how)
    hand = path.read_bytes()
    before = snapshot(world.fs, world.dst)
    with pytest.raises(StaleContent):
        world.target.handle_request(encode(apply))
    assert snapshot(world.fs, world.dst) == before
    assert path.read_bytes() == hand
    tmp = Path(world.dst, ".merkle_sync", "tmp")
    assert not tmp.is_dir() or list(tmp.iterdir()) == []
    _source(world, world.target.handle_request)
    assert same_tree(world.fs, world.src, world.fs, world.dst)


def test_a_running_source_re_plans_after_a_hand_edit_between_probe_and_apply(tmp_path):
    """The hand edit happens while the source is between its refine walk and its apply:
    the target refuses (stale), re-indexes, and the source's retry ends equal."""
    world = _world(tmp_path, "disk", new=STALE_NEW)
    path = Path(world.dst, "d", "big.txt")
    done = []

    def hand(request):
        if isinstance(request, Apply) and not done:
            done.append(request)
            _hand_edit(path, "near")

    tap = Tap(world.target, before=hand)
    _source(world, tap)
    assert done
    assert len(tap.refine_walks()) == 2  # probed again, against the hand-edited version
    assert same_tree(world.fs, world.src, world.fs, world.dst)


# -- a false match in the probe -----------------------------------------------------------
def test_a_false_match_in_the_probe_is_repaired(monkeypatch):
    """``SUB_HASH``: a false match the leaf check misses (one in 65,536; here every one, the
    checks made to always agree) "is left to the file hash and the repair walk with full
    hashes that follows". At 1 byte (both sides) nearly every probe meets one. The retry's
    probe has full hashes, so it cannot meet the same false match (before it did, and the
    sync failed for good). ``tests/test_probe_check.py``: the checks catch them."""
    monkeypatch.setattr(merkle_sync.checks, "SUB_HASH", 1)
    monkeypatch.setattr(merkle_sync.refine, "probe_check", lambda found: b"k")
    monkeypatch.setattr(merkle_sync.target, "probe_check", lambda found: b"k")
    world = _world(None)
    tap = Tap(world.target)
    _source(world, tap)
    assert same_tree(world.fs, world.src, world.fs, world.dst)
    # The 1-byte probe met a false match (the short walk failed), and the repair walked with
    # full hashes, probing with full hashes too.
    widths = [q.hash_len for q, _ in tap.refine_walks()]
    assert widths[0] < FULL_HASH and widths[-1] == FULL_HASH
    assert all(len(leaf) % FULL_HASH == 0 for leaf in tap.refine_walks()[-1][0].refine)
