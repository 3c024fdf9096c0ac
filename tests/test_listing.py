"""Compact walk listings: below the root, a walk sends a short digest of each child of the
directories it asks about (``Walk.sums``), and the target lists only the entries it did not
match, answering a bit per digest. The wire rules, the digest width, the target's answer,
whole walks over every kind of change (memory and disk, with the frames inspected), the
bytes saved, false matches repaired by the full-hash retry, and targets that lie."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import pytest

import merkle_sync.checks
import merkle_sync.listing
import merkle_sync.protocol
import merkle_sync.session
from merkle_sync import MemoryFileSystem, ProtocolError, ReplicatorSource, ReplicatorTarget
from merkle_sync.checks import FULL_HASH, MIN_HASH, SUB_HASH, digest_width
from merkle_sync.chunking import sub_chunks
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.merkle import DirNode, entry_digest, lookup
from merkle_sync.protocol import MAX_ITEMS, Span, Walk, WalkReply
from merkle_sync.session import SyncSession
from merkle_sync.source import SyncError
from merkle_sync.testing import same_tree, snapshot
from merkle_sync.wire import StreamDecoder, decode, encode, pack
from tests.test_cli import tree

H8 = b"\x01" * 8


def _item(width: int, count: int, fill: int = 7) -> bytes:
    """One directory's digest list: the width byte, then ``count`` digests of that width."""
    return bytes((width,)) + bytes((fill + i) % 256 for i in range(width * count))


# -- the wire rules -----------------------------------------------------------------------
def test_a_walk_with_digests_is_valid_and_round_trips():
    """The control for the refusals below: one item per directory (an empty one: list it
    all), widths from 1 to 32, and the 7-field walk on the wire (refine travels empty)."""
    sums = (_item(3, 2), b"", _item(32, 1), _item(1, 0))
    walk = Walk(8, b"", ("a", "a/b", "c", "d"), (H8,), (), (), sums)
    back = decode(encode(walk))
    assert back == walk and back.sums == sums and back.refine == ()
    assert len(msgpack.unpackb(pack(walk))) == 8  # the type and 7 fields
    plain = Walk(8, b"", ("a",), ())  # no digests: still the 5-field walk
    assert decode(encode(plain)) == plain
    assert len(msgpack.unpackb(pack(plain))) == 6
    # The hashes asked about travel joined in one string, nil (one byte) when there are none.
    assert msgpack.unpackb(pack(walk))[4] == H8
    assert msgpack.unpackb(pack(plain))[4] is None
    two = Walk(8, b"", (), (H8, b"\x02" * 8))
    assert msgpack.unpackb(pack(two))[4] == H8 + b"\x02" * 8
    assert decode(encode(two)) == two
    # With a probe as well: the digests come after it on the wire.
    probe = Walk(8, b"", ("a",), (), (Span("f", 0, 100),), (b"abc",), (_item(4, 3),))
    assert decode(encode(probe)) == probe


@pytest.mark.parametrize(
    ("dirs", "sums", "refine"),
    [
        (("a", "b"), (_item(3, 1),), ()),  # fewer lists than directories
        (("a",), (_item(3, 1), _item(3, 1)), ()),  # more
        ((), (_item(3, 1),), ()),  # digests with no directory at all
        (("a",), (b"\x00",), ()),  # width 0
        (("a",), (b"\x00abc",), ()),
        (("a",), (bytes((33,)) + bytes(33),), ()),  # wider than a full hash
        (("a",), (bytes((255,)) + bytes(255),), ()),
        (("a",), (b"\x03abcd",), ()),  # ragged: 4 bytes of 3-byte digests
        (("a",), (b"\x02abc",), ()),
        (("a",), ("\x03abc",), ()),  # not bytes
        (("a",), (3,), ()),
        (("a",), (None,), ()),
        (("a",), (bytearray(b"\x03abc"),), ()),
        (("a",), ((b"\x03abc",),), ()),
        (("a",), [b"\x03abc"], ()),  # not a tuple
        (("a",), b"\x03abc", ()),
        (("a",), [], ()),  # an empty list is no tuple either
        (("a",), (), []),  # nor is an empty list of refined leaves
    ],
    ids=[
        "fewer",
        "more",
        "no-dirs",
        "width-0",
        "width-0-ragged",
        "width-33",
        "width-255",
        "ragged",
        "ragged-2",
        "str",
        "int",
        "none",
        "bytearray",
        "nested",
        "list",
        "bytes",
        "empty-list",
        "refine-list",
    ],
)
def test_a_malformed_digest_list_is_refused(dirs, sums, refine):
    with pytest.raises(ProtocolError):
        Walk(8, b"", dirs, (), (), refine, sums)


def test_digests_count_toward_max_items_with_have():
    """The reply's bitmap answers ``have`` and then every digest: both count, and the
    bound is inclusive."""
    have = (H8,) * 3
    Walk(8, b"", ("a",), have, (), (), (_item(1, MAX_ITEMS - 3),))
    with pytest.raises(ProtocolError):
        Walk(8, b"", ("a",), have, (), (), (_item(1, MAX_ITEMS - 2),))
    with pytest.raises(ProtocolError):  # split over two directories: still too many
        Walk(8, b"", ("a", "b"), have, (), (), (_item(1, MAX_ITEMS // 2), _item(1, MAX_ITEMS // 2)))


#: Hand-built walk bodies: [type, hash_len, root, dirs, have, basis, refine, sums].
HOSTILE_BODIES = {
    "fewer": [1, 8, b"", ["a", "b"], None, [], [], [_item(3, 1)]],
    "more": [1, 8, b"", ["a"], None, [], [], [_item(3, 1), b""]],
    "no-dirs": [1, 8, b"", [], None, [], [], [_item(3, 1)]],
    "width-0": [1, 8, b"", ["a"], None, [], [], [b"\x00abc"]],
    "width-33": [1, 8, b"", ["a"], None, [], [], [bytes((33,)) + bytes(33)]],
    "ragged": [1, 8, b"", ["a"], None, [], [], [b"\x03abcd"]],
    "str-item": [1, 8, b"", ["a"], None, [], [], ["\x03abc"]],
    "int-item": [1, 8, b"", ["a"], None, [], [], [3]],
    "nil-item": [1, 8, b"", ["a"], None, [], [], [None]],
    "list-item": [1, 8, b"", ["a"], None, [], [], [[b"\x03abc"]]],
    "sums-bytes": [1, 8, b"", ["a"], None, [], [], b"\x03abc"],
    "sums-int": [1, 8, b"", ["a"], None, [], [], 0],
    "sums-nil": [1, 8, b"", ["a"], None, [], [], None],
    "refine-bytes": [1, 8, b"", ["a"], None, [], b"", [_item(3, 1)]],
    "refine-nil": [1, 8, b"", ["a"], None, [], None, [_item(3, 1)]],
    "eight-fields": [1, 8, b"", ["a"], None, [], [], [_item(3, 1)], []],
}


@pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
def test_a_hostile_digest_list_is_refused_when_decoded(body):
    """A peer builds its frames without our checks: decoding applies them."""
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(body, use_bin_type=True))


def test_a_hand_built_walk_with_digests_decodes():
    """The control for the bodies above: the same shape with valid values is a walk."""
    body = [1, 8, b"", ["a", "b"], H8 * 2, [], [], [_item(3, 2), b""]]
    walk = decode(msgpack.packb(body, use_bin_type=True))
    assert walk == Walk(8, b"", ("a", "b"), (H8, H8), (), (), (_item(3, 2), b""))


# -- the digest width ---------------------------------------------------------------------
SIZES = sorted({*range(0, 2100), *(1 << k for k in range(40)), *((1 << k) - 1 for k in range(40))})


@pytest.mark.parametrize("hash_len", [MIN_HASH, 12, 16, 24, FULL_HASH - 1])
def test_the_digest_width_grows_with_the_directory_within_bounds(hash_len):
    """Never narrower for a larger directory, at least 3 bytes, never wider than the walk's
    hashes; and wide enough, unless the walk's hashes cap it, that comparing ``n`` digests
    with about ``n`` of the target's falsely matches with odds under 2**-20."""
    widths = [digest_width(hash_len, n) for n in SIZES]
    assert widths == sorted(widths)
    assert min(widths) >= 3
    assert max(widths) <= hash_len
    assert widths[-1] == min(hash_len, 13)  # 2**39 entries: 100 bits, capped by short hashes
    for n, w in zip(SIZES, widths, strict=True):
        if w < hash_len:
            assert max(n, 1) ** 2 <= 2 ** (8 * w - 20), (n, w)


def test_the_digest_width_is_a_full_hash_in_the_full_hash_walk():
    """The retry after any failure must not meet the same false match again."""
    assert {digest_width(FULL_HASH, n) for n in SIZES} == {FULL_HASH}
    assert digest_width(MIN_HASH, 0) == digest_width(MIN_HASH, 1) == 3
    assert digest_width(MIN_HASH, 3000) > digest_width(MIN_HASH, 10)


# -- the target's answer ------------------------------------------------------------------
BIG = bytes(range(256)) * 20  # one leaf, a few sub-chunks


def _listing_target() -> ReplicatorTarget:
    fs = MemoryFileSystem()
    fs.makedirs("/t/d/sub")
    for name in ("x", "y", "z"):
        fs.writefile(f"/t/d/{name}", f"content of {name}")
    fs.writefile("/t/d/sub/inner", "inner")
    fs.writefile("/t/d/big.bin", BIG)
    fs.writefile("/t/plain", "not a directory")
    return ReplicatorTarget(fs, "/t")


def _digest_of(target: ReplicatorTarget, rel: str, width: int) -> bytes:
    dirname, name = rel.rsplit("/", 1)
    node = lookup(target.tree, dirname)
    assert isinstance(node, DirNode)
    child = node.children[name]
    return entry_digest(name, child.kind, child.hash, child.meta)[:width]


def test_the_target_lists_only_what_it_did_not_match_and_answers_in_order():
    """One bitmap: the ``have`` bits, then a bit per digest, directory by directory (a path
    that is no directory answers ``None`` and "unmatched" for each of its digests), then the
    probe's sub-chunks."""
    target = _listing_target()
    w = 4
    held = lookup(target.tree, "d/x").tree.hash(0, 0)[:8]  # a leaf the target holds
    have = (held, b"\xee" * 8)
    # "plain" is a file: 9 digests answered False, pushing d's answers past a byte boundary.
    plain = _item(w, 9)
    mine = [_digest_of(target, f"d/{n}", w) for n in ("x", "sub", "big.bin")]
    theirs = [*mine[:1], b"\xaa" * w, *mine[1:]]  # x, a digest of nothing, sub, big.bin
    subs = [h[:SUB_HASH] for h, _, _ in sub_chunks(BIG)]
    probe = b"".join(subs) + b"\xee" * SUB_HASH
    walk = Walk(
        8,
        b"",
        ("plain", "d"),
        have,
        (Span("d/big.bin", 0, len(BIG)),),
        (probe,),
        (plain, bytes((w,)) + b"".join(theirs)),
    )
    reply = decode(target.handle_request(encode(walk)))
    assert reply.listings[0] is None
    assert sorted(e.name for e in reply.listings[1]) == ["y", "z"]  # not matched: listed
    bits = [reply.has(i) for i in range(2 + 9 + 4 + len(subs) + 1)]
    assert bits[:2] == [True, False]
    assert bits[2:11] == [False] * 9
    assert bits[11:15] == [True, False, True, True]
    assert bits[15:] == [True] * len(subs) + [False]


def test_an_empty_digest_list_asks_for_the_whole_listing():
    """Per directory: ``d`` with an empty item is listed whole and answers no bits, while
    ``d/sub`` beside it, with digests, lists nothing it matched."""
    target = _listing_target()
    inner = _digest_of(target, "d/sub/inner", 3)
    walk = Walk(8, b"", ("d", "d/sub"), (), (), (), (b"", b"\x03" + inner))
    reply = decode(target.handle_request(encode(walk)))
    assert sorted(e.name for e in reply.listings[0]) == ["big.bin", "sub", "x", "y", "z"]
    assert reply.listings[1] == ()
    assert reply.has(0) and not reply.has(1)


def test_a_digest_covers_name_kind_content_and_metadata():
    """A digest matches only the same entry: another name, content or metadata is listed."""
    target = _listing_target()
    x = lookup(target.tree, "d/x")
    others = [
        entry_digest("x2", x.kind, x.hash, x.meta),
        entry_digest("x", x.kind, b"\x00" * 32, x.meta),
        entry_digest("x", x.kind, x.hash, (0o644, 1)),
        entry_digest("x", 3, x.hash, x.meta),  # a link with the same hash
    ]
    for other in others:
        walk = Walk(8, b"", ("d",), (), (), (), (b"\x20" + other,))
        reply = decode(target.handle_request(encode(walk)))
        assert "x" in [e.name for e in reply.listings[0]]
        assert not reply.has(0)


# -- watching the frames ------------------------------------------------------------------
@dataclass
class Tap:
    """Forwards frames to the target, keeping each request and reply decoded and counting
    the bytes each way; ``rewrite(request, reply)`` may replace a reply (a lying target)."""

    target: ReplicatorTarget
    rewrite: Callable[[object, object], object] | None = None
    requests: list = field(default_factory=list)
    replies: list = field(default_factory=list)
    sizes: list = field(default_factory=list)  # (bytes up, bytes down) per request
    decoder: StreamDecoder = field(default_factory=StreamDecoder)

    def __call__(self, frame: bytes) -> bytes:
        request = self.decoder.decode(frame)  # apply frames may share a zstd stream
        self.requests.append(request)
        self.replies.append(None)
        self.sizes.append((len(frame), 0))
        raw = self.target.handle_request(frame)
        reply = decode(raw)
        if self.rewrite is not None:
            new = self.rewrite(request, reply)
            if new is not None:
                reply, raw = new, encode(new)
        self.replies[-1] = reply
        self.sizes[-1] = (len(frame), len(raw))
        return raw

    def walks(self) -> list[tuple[Walk, WalkReply]]:
        return [
            (q, a)
            for q, a in zip(self.requests, self.replies, strict=True)
            if isinstance(q, Walk) and q.dirs
        ]

    def asked(self, rel: str) -> list[tuple[Walk, WalkReply]]:
        return [(q, a) for q, a in self.walks() if rel in q.dirs]

    def walk_bytes_down(self) -> int:
        return sum(d for q, (_, d) in zip(self.requests, self.sizes, strict=True) if _walk(q))

    def total(self) -> int:
        return sum(u + d for u, d in self.sizes)


def _walk(q: object) -> bool:
    return isinstance(q, Walk)


def _count(packed: bytes) -> int:
    return (len(packed) - 1) // packed[0] if packed else 0


def _answer(walk: Walk, reply: WalkReply, rel: str) -> tuple[list[str], list[bool]]:
    """The names the target listed at ``rel`` and its answer to each digest sent there."""
    i = walk.dirs.index(rel)
    at = len(walk.have) + sum(_count(walk.sums[j]) for j in range(i)) if walk.sums else 0
    n = _count(walk.sums[i]) if walk.sums else 0
    listing = reply.listings[i]
    assert listing is not None
    return [e.name for e in listing], [reply.has(at + j) for j in range(n)]


def _sent(walk: Walk, rel: str) -> tuple[int, int]:
    """(width, count) of the digests a walk sent for ``rel``."""
    packed = walk.sums[walk.dirs.index(rel)]
    return packed[0], _count(packed)


# -- whole walks --------------------------------------------------------------------------
DEEP = "a/b/c/d"
#: Each level: a few files beside the next level; "a" has a sibling directory too, and the
#: deepest directory a subdirectory with files.
LEVELS = ("", "a", "a/b", "a/b/c", DEEP)


@dataclass
class World:
    fs: object
    src: str
    dst: str
    disk: bool
    target: ReplicatorTarget | None = None

    def path(self, rel: str, root: str | None = None) -> str:
        return f"{root or self.src}/{rel}" if rel else root or self.src

    def source(self, rpc, **kw) -> ReplicatorSource:
        """A new source, walking: no record of the target, kept copies off."""
        return ReplicatorSource(self.fs, self.src, rpc, keep=0, index=False, **kw)

    def equal(self) -> bool:
        if not same_tree(self.fs, self.src, self.fs, self.dst):
            return False
        return not self.disk or tree(Path(self.src)) == tree(Path(self.dst))


def _world(tmp_path, kind: str) -> World:
    if kind == "memory":
        return World(MemoryFileSystem(), "/src", "/dst", False)
    return World(DiskFileSystem(), str(tmp_path / "src"), str(tmp_path / "dst"), True)


def _populate(world: World) -> None:
    fs = world.fs
    for rel in LEVELS:
        fs.makedirs(world.path(rel))
        for i in range(6 if rel == DEEP else 4):
            text = f"{rel} {i}\n" * i
            content = text.encode() if i % 2 else text  # bytes beside str: two kinds
            fs.writefile(world.path(f"{rel}/f{i}.txt" if rel else f"f{i}.txt"), content)
    fs.makedirs(world.path("a/side"))
    fs.writefile(world.path("a/side/s.txt"), "side")
    fs.makedirs(world.path(f"{DEEP}/sub"))
    for i in range(3):
        fs.writefile(world.path(f"{DEEP}/sub/s{i}.txt"), f"sub {i}\n" * (i + 5))


def _synced(tmp_path, kind: str) -> World:
    """Source and target equal after a first sync (the target state the walks then meet)."""
    world = _world(tmp_path, kind)
    _populate(world)
    world.fs.makedirs(world.dst)
    world.target = ReplicatorTarget(world.fs, world.dst)
    world.source(world.target.handle_request)
    assert world.equal()
    return world


def _rename(world: World, old: str, new: str) -> None:
    fs = world.fs
    if world.disk:
        os.rename(world.path(old), world.path(new))
    else:
        fs.writefile(world.path(new), fs.readfile(world.path(old)))
        fs.removefile(world.path(old))


def _file_to_dir(world: World) -> None:
    world.fs.removefile(world.path(f"{DEEP}/f1.txt"))
    world.fs.makedirs(world.path(f"{DEEP}/f1.txt"))
    world.fs.writefile(world.path(f"{DEEP}/f1.txt/inner.txt"), "now a directory")


def _dir_to_file(world: World) -> None:
    world.fs.removedir(world.path(f"{DEEP}/sub"))
    world.fs.writefile(world.path(f"{DEEP}/sub"), "now a file")


def _mtime(world: World) -> None:
    path = world.path(f"{DEEP}/f2.txt")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 3_600_000_000_123))


#: change -> (mutate the source, what the target lists at DEEP, source digests it does
#: not match there, disk only).
CHANGES: dict[str, tuple[Callable[[World], None], set[str], int, bool]] = {
    "edit": (lambda w: w.fs.writefile(w.path(f"{DEEP}/f2.txt"), "edited"), {"f2.txt"}, 1, False),
    "add": (lambda w: w.fs.writefile(w.path(f"{DEEP}/new.txt"), "new"), set(), 1, False),
    "remove-file": (lambda w: w.fs.removefile(w.path(f"{DEEP}/f3.txt")), {"f3.txt"}, 0, False),
    "remove-dir": (lambda w: w.fs.removedir(w.path(f"{DEEP}/sub")), {"sub"}, 0, False),
    "file-to-dir": (_file_to_dir, {"f1.txt"}, 1, False),
    "dir-to-file": (_dir_to_file, {"sub"}, 1, False),
    "rename": (lambda w: _rename(w, f"{DEEP}/f4.txt", f"{DEEP}/g4.txt"), {"f4.txt"}, 1, False),
    "chmod": (lambda w: os.chmod(w.path(f"{DEEP}/f2.txt"), 0o600), {"f2.txt"}, 1, True),
    "mtime": (_mtime, {"f2.txt"}, 1, True),
}
CASES = [
    (kind, change)
    for kind in ("memory", "disk")
    for change, (_, _, _, disk_only) in CHANGES.items()
    if kind == "disk" or not disk_only
]


@pytest.mark.parametrize(("kind", "change"), CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_a_change_deep_in_the_tree_is_found_with_partial_listings(tmp_path, kind, change):
    """The root walk lists it all (no digests); each walk below sends a digest per child of
    each directory it asks about (as wide as ``digest_width`` says), and the target lists
    only what differs: the next directory on the way down, then the changed entries."""
    world = _synced(tmp_path, kind)
    mutate, listed, unmatched, _ = CHANGES[change]
    mutate(world)
    tap = Tap(world.target)
    source = world.source(tap)
    assert world.equal()
    first = tap.walks()[0][0]
    assert first.dirs == ("",) and first.sums == () and first.root == source.tree.hash
    walks = tap.walks()[1:]
    assert walks and all(w.sums and len(w.sums) == len(w.dirs) for w, _ in walks)
    assert all(w.hash_len == MIN_HASH for w in tap.requests if _walk(w))  # no false match
    for w, _ in walks:
        for rel in w.dirs:
            node = lookup(source.tree, rel)
            assert isinstance(node, DirNode)
            n = len(node.children)
            assert _sent(w, rel) == (digest_width(w.hash_len, n), n)
    # On the way down, each level lists one entry (the next level) and matches the rest.
    for rel, below in itertools.pairwise(LEVELS[1:]):
        [(w, reply)] = tap.asked(rel)
        names, bits = _answer(w, reply, rel)
        held = lookup(world.target.tree, rel)
        assert names == [below.rsplit("/", 1)[1]]
        assert len(names) < len(held.children)
        assert bits.count(False) == 1 and len(bits) >= 4
    [(w, reply)] = tap.asked(DEEP)
    names, bits = _answer(w, reply, DEEP)
    assert set(names) == listed
    assert bits.count(False) == unmatched
    assert len(names) < len(lookup(world.target.tree, DEEP).children)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_several_changes_in_several_directories_at_once(tmp_path, kind):
    """Changes at every level together, two directories asked in one walk: every one of them
    is found, and each listing holds exactly its directory's changed entries."""
    world = _synced(tmp_path, kind)
    fs = world.fs
    fs.writefile(world.path("a/f0.txt"), "edited at a")
    fs.writefile(world.path("a/side/s.txt"), "edited at a/side")
    fs.removefile(world.path("a/b/f1.txt"))
    fs.writefile(world.path("a/b/c/new.txt"), "new at a/b/c")
    _file_to_dir(world)
    _dir_to_file(world)
    tap = Tap(world.target)
    world.source(tap)
    assert world.equal()
    [(w, reply)] = tap.asked("a/side")
    assert "a/b" in w.dirs  # one walk per level
    expect = {
        "a": ({"f0.txt", "b", "side"}, 3),
        "a/side": ({"s.txt"}, 1),
        "a/b": ({"f1.txt", "c"}, 1),
        "a/b/c": ({"d"}, 2),
        DEEP: ({"f1.txt", "sub"}, 2),
    }
    for rel, (listed, unmatched) in expect.items():
        [(w, reply)] = tap.asked(rel)
        names, bits = _answer(w, reply, rel)
        assert (set(names), bits.count(False)) == (listed, unmatched), rel


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_a_directory_emptied_sends_a_width_and_no_digests(tmp_path, kind):
    """The source's directory holds nothing: its item is the width byte alone, and the
    target lists (and the source removes) everything it holds there."""
    world = _synced(tmp_path, kind)
    for i in range(3):
        world.fs.removefile(world.path(f"{DEEP}/sub/s{i}.txt"))
    tap = Tap(world.target)
    world.source(tap)
    assert world.equal()
    [(w, reply)] = tap.asked(f"{DEEP}/sub")
    assert _sent(w, f"{DEEP}/sub") == (3, 0)
    names, bits = _answer(w, reply, f"{DEEP}/sub")
    assert sorted(names) == ["s0.txt", "s1.txt", "s2.txt"] and bits == []


def test_siblings_of_every_kind_are_matched_on_disk(tmp_path):
    """Both sides must digest an entry alike, or every walk lists it again: links (one
    dangling), a name that is not UTF-8, an empty directory, an executable file, all
    unchanged beside an edited file, are matched; only the edited file is listed."""
    world = _world(tmp_path, "disk")
    b = Path(world.src, "a", "b")
    b.mkdir(parents=True)
    (b / "plain.txt").write_text("plain")
    (b / "edit.txt").write_text("edit me")
    os.symlink("plain.txt", b / "link")
    os.symlink("/nonexistent/dangling", b / "dangling")
    (b / "empty").mkdir()
    Path(os.fsdecode(os.fsencode(b) + b"/bad-\xff-name")).write_bytes(b"not UTF-8")
    (b / "exec.sh").write_text("#!/bin/sh\n")
    os.chmod(b / "exec.sh", 0o755)
    world.target = ReplicatorTarget(world.fs, world.dst)
    world.source(world.target.handle_request)
    assert world.equal()
    (b / "edit.txt").write_text("edited")
    tap = Tap(world.target)
    world.source(tap)
    assert world.equal()
    [(w, reply)] = tap.asked("a/b")
    names, bits = _answer(w, reply, "a/b")
    assert names == ["edit.txt"]
    assert len(bits) == 7 and bits.count(False) == 1


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_a_no_op_sync_stays_one_small_round_trip(tmp_path, kind):
    """The root walk carries no digests: equal roots answer at once."""
    world = _synced(tmp_path, kind)
    tap = Tap(world.target)
    source = world.source(tap)
    assert len(tap.requests) == 1 and tap.requests[0].sums == ()
    assert tap.replies[0].equal
    assert source.stats.round_trips == 1
    assert tap.total() < 120


# -- the bytes ----------------------------------------------------------------------------
def _chain(fs, root: str, depth: int = 20, files: int = 50) -> str:
    """``depth`` nested directories of ``files`` files each; the deepest one's path."""
    rel = ""
    for level in range(depth):
        rel = f"{rel}/d{level:02}" if rel else f"d{level:02}"
        fs.makedirs(f"{root}/{rel}")
        for i in range(files):
            fs.writefile(f"{root}/{rel}/file-{i:03}.txt", f"level {level} file {i}\n" * 3)
    return rel


def _chain_walk(monkeypatch, full: bool) -> tuple[Tap, ReplicatorSource]:
    fs = MemoryFileSystem()
    deepest = _chain(fs, "/src")
    target = ReplicatorTarget(fs, "/dst")
    ReplicatorSource(fs, "/src", target.handle_request, keep=0)
    fs.writefile(f"/src/{deepest}/file-025.txt", "edited deep down")
    if full:

        def whole(self, dirs, have=0):
            self._asked_names = [[] for _ in dirs]
            return tuple(b"" for _ in dirs)

        monkeypatch.setattr(SyncSession, "_sums", whole)
    tap = Tap(target)
    source = ReplicatorSource(fs, "/src", tap, keep=0)
    assert same_tree(fs, "/src", fs, "/dst")
    return tap, source


def test_digests_cost_far_fewer_bytes_down_than_full_listings(monkeypatch):
    """20 nested directories of 50 files, one file edited at the bottom: each level's reply
    lists one entry instead of 51, for 51 digests of 4 bytes up. The same walk with every
    digest list empty (the whole listing asked) is the comparison."""
    compact, _ = _chain_walk(monkeypatch, full=False)
    whole, _ = _chain_walk(monkeypatch, full=True)
    assert len(compact.walks()) == len(whole.walks()) == 21
    for w, reply in whole.walks()[1:]:  # the comparison did list everything
        assert all(p == b"" for p in w.sums) and len(reply.listings[0]) >= 50
    for w, reply in compact.walks()[1:]:
        assert len(reply.listings[0]) == 1 and _sent(w, w.dirs[0])[0] == 4
    down, full_down = compact.walk_bytes_down(), whole.walk_bytes_down()
    assert down * 8 < full_down, (down, full_down)  # measured: 694 B against 11,120 B
    assert compact.total() < whole.total() * 0.7, (compact.total(), whole.total())  # 0.48


# -- false matches ------------------------------------------------------------------------
def _narrow(monkeypatch, full: int | None = None) -> None:
    """1-byte digests in the short walks (a directory of hundreds of entries then matches
    nearly every digest falsely); ``full``: the full-hash walk's width (default: as it is)."""
    real = merkle_sync.checks.digest_width

    def width(hash_len: int, children: int) -> int:
        if hash_len >= FULL_HASH and full is None:
            return real(hash_len, children)
        return full if hash_len >= FULL_HASH else 1

    monkeypatch.setattr(merkle_sync.checks, "digest_width", width)
    monkeypatch.setattr(merkle_sync.listing, "digest_width", width)


CROWD = 1000


def _crowded(tmp_path, kind: str, files: int = CROWD) -> World:
    """A synced world whose directory ``a/many`` holds ``files`` files."""
    world = _world(tmp_path, kind)
    fs = world.fs
    fs.makedirs(world.path("a/many"))
    fs.writefile(world.path("top.txt"), "top")
    for i in range(files):
        fs.writefile(world.path(f"a/many/m{i:04}.txt"), f"many {i}")
    fs.makedirs(world.dst)
    world.target = ReplicatorTarget(fs, world.dst)
    world.source(world.target.handle_request)
    assert world.equal()
    return world


CROWD_CHANGES = {
    "edit": lambda w: w.fs.writefile(w.path("a/many/m0500.txt"), "edited"),
    "add": lambda w: w.fs.writefile(w.path("a/many/zz-new.txt"), "new"),
    "remove": lambda w: w.fs.removefile(w.path("a/many/m0300.txt")),
    "rename": lambda w: _rename(w, "a/many/m0700.txt", "a/many/m0700-renamed.txt"),
}


@pytest.mark.parametrize("change", list(CROWD_CHANGES))
def test_a_false_match_of_short_digests_is_repaired_by_the_full_hash_walk(
    tmp_path, monkeypatch, change
):
    """With 1-byte digests the changed entry's digest is "matched" by some other entry (or
    the removed entry's hides among the source's): the short walk misses the change, the
    root check catches it, and the walk with full hashes sends 32-byte digests, which
    cannot meet the same false match."""
    world = _crowded(tmp_path, "memory")
    CROWD_CHANGES[change](world)
    _narrow(monkeypatch)
    tap = Tap(world.target)
    world.source(tap)
    assert world.equal()
    asked = tap.asked("a/many")
    assert [(w.hash_len, _sent(w, "a/many")[0]) for w, _ in asked] == [(MIN_HASH, 1), (32, 32)]
    # The full-hash walk sends the digest of every child.
    assert _sent(asked[-1][0], "a/many")[1] == len(lookup(world.target.tree, "a/many").children)


def test_a_false_match_is_repaired_on_disk(tmp_path, monkeypatch):
    """The same on disk, metadata included (3,000 entries: the short walk's false match has
    odds of about 1 - 1e-5, whatever the mtimes)."""
    world = _crowded(tmp_path, "disk", files=3000)
    CROWD_CHANGES["edit"](world)
    os.chmod(world.path("a/many/m0001.txt"), 0o600)
    _narrow(monkeypatch)
    tap = Tap(world.target)
    world.source(tap)
    assert world.equal()
    widths = [(w.hash_len, _sent(w, "a/many")[0]) for w, _ in tap.asked("a/many")]
    assert widths == [(MIN_HASH, 1), (32, 32)]


def test_a_false_match_that_the_full_hash_walk_repeats_is_an_error_not_a_loss(monkeypatch):
    """The control for the repair above: were the full-hash walk's digests as narrow, it
    would meet the same false match and the sync would fail (loudly, with the target's
    files intact) instead of ending equal."""
    world = _crowded(None, "memory")
    CROWD_CHANGES["edit"](world)
    before = snapshot(world.fs, world.dst)
    _narrow(monkeypatch, full=1)
    tap = Tap(world.target)
    with pytest.raises(SyncError):
        world.source(tap)
    assert snapshot(world.fs, world.dst) == before
    assert [w.hash_len for w, _ in tap.asked("a/many")] == [MIN_HASH, 32]


# -- lying targets ------------------------------------------------------------------------
def _all_matched(request: object, reply: object, only_short: bool = False) -> object:
    """A reply to a walk with digests that lists nothing there and claims every digest
    matched (its ``have`` answers and anything after the digests kept as they were)."""
    if not isinstance(request, Walk) or not request.sums or not isinstance(reply, WalkReply):
        return None
    if only_short and request.hash_len >= FULL_HASH:
        return None
    n = len(request.have)
    digests = sum(_count(p) for p in request.sums)
    bits = [reply.has(i) for i in range(n)] + [True] * digests
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    listings = tuple(None if x is None else () for x in reply.listings)
    return WalkReply(False, listings, bytes(out), reply.indexed, reply.root)


def _lost(world: World, before: dict) -> list[str]:
    """Target files the source holds too that the target no longer has, or holds with
    content that is neither its old content nor the source's."""
    src, now = snapshot(world.fs, world.src), snapshot(world.fs, world.dst)
    return [
        rel
        for rel, old in before.items()
        if rel in src and (rel not in now or now[rel] not in (old, src[rel]))
    ]


def _lied_to(tmp_path, kind: str) -> World:
    world = _synced(tmp_path, kind)
    fs = world.fs
    fs.writefile(world.path(f"{DEEP}/f2.txt"), "edited")
    fs.removefile(world.path(f"{DEEP}/f3.txt"))
    fs.writefile(world.path(f"{DEEP}/new.txt"), "new")
    fs.writefile(world.path("a/b/f0.txt"), "edited higher up")
    fs.writefile(world.path("f0.txt"), "edited at the root")
    return world


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_a_target_claiming_every_digest_matched_gets_a_loud_failure_not_a_loss(tmp_path, kind):
    """Every reply to a walk with digests lies "all matched, nothing to list": the source
    skips those directories, so nothing below the root is removed or rewritten; the root
    check fails after the short walk and again after the full-hash one, and the caller gets
    a ``SyncError``. Only the root's own change (a full listing, no digests) landed."""
    world = _lied_to(tmp_path, kind)
    before = snapshot(world.fs, world.dst)
    tap = Tap(world.target, rewrite=_all_matched)
    with pytest.raises(SyncError):
        world.source(tap)
    assert _lost(world, before) == []
    after = snapshot(world.fs, world.dst)
    assert after == {**before, "f0.txt": after["f0.txt"]}
    assert after["f0.txt"] in ("edited at the root", b"edited at the root")
    assert {w.hash_len for w, _ in tap.walks()} == {MIN_HASH, FULL_HASH}


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_a_target_lying_only_to_short_walks_ends_equal_after_the_retry(tmp_path, kind):
    """The lie misleads only the short walk: the end-to-end root check sends the source
    round again with full hashes, which the target answers honestly."""
    world = _lied_to(tmp_path, kind)
    tap = Tap(world.target, rewrite=lambda q, a: _all_matched(q, a, only_short=True))
    world.source(tap)
    assert world.equal()
    assert [w.hash_len for w, _ in tap.asked(DEEP)] == [FULL_HASH]
    assert [w.hash_len for w, _ in tap.asked("a")] == [MIN_HASH, FULL_HASH]


def _none_matched(request: object, reply: object) -> object:
    """A reply to a walk with digests that lists nothing there and matches none of them:
    "I hold nothing in these directories"."""
    if not isinstance(request, Walk) or not request.sums or not isinstance(reply, WalkReply):
        return None
    out = bytearray((len(request.have) + 7) // 8)
    for i in range(len(request.have)):
        if reply.has(i):
            out[i // 8] |= 1 << (i % 8)
    listings = tuple(None if x is None else () for x in reply.listings)
    return WalkReply(False, listings, bytes(out), reply.indexed, reply.root)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_a_target_claiming_to_hold_nothing_refuses_the_apply_and_loses_nothing(tmp_path, kind):
    """The opposite lie: the source plans to create every directory below the root again,
    and the target, which does hold them, refuses that apply (``ProtocolError``) before
    anything changes, at both hash lengths."""
    world = _lied_to(tmp_path, kind)
    before = snapshot(world.fs, world.dst)
    tap = Tap(world.target, rewrite=_none_matched)
    with pytest.raises(ProtocolError):
        world.source(tap)
    assert snapshot(world.fs, world.dst) == before
    applies = [q for q in tap.requests if not _walk(q)]
    assert [a.hash_len for a in applies] == [MIN_HASH, FULL_HASH]
    assert all("a/b" in a.mkdirs for a in applies)


# -- a large directory beside a small one -------------------------------------------------
def test_a_large_directory_gets_wider_digests_than_a_small_one_in_the_same_walk():
    """3,000 entries: each of its digests meets about 3,000 of the target's, so it is
    wider (6 bytes) than the 10-entry directory's (4 bytes), asked in the same walk; each
    lists only its edited file."""
    fs = MemoryFileSystem()
    for rel, n in (("big", 3000), ("small", 10)):
        fs.makedirs(f"/src/{rel}")
        for i in range(n):
            fs.writefile(f"/src/{rel}/f{i:04}", f"{rel} {i}")
    target = ReplicatorTarget(fs, "/dst")
    ReplicatorSource(fs, "/src", target.handle_request, keep=0)
    fs.writefile("/src/big/f1234", "edited")
    fs.writefile("/src/small/f0007", "edited")
    tap = Tap(target)
    ReplicatorSource(fs, "/src", tap, keep=0)
    assert same_tree(fs, "/src", fs, "/dst")
    [(w, reply)] = tap.walks()[1:]
    assert set(w.dirs) == {"big", "small"}
    assert _sent(w, "big") == (digest_width(MIN_HASH, 3000), 3000) == (6, 3000)
    assert _sent(w, "small") == (digest_width(MIN_HASH, 10), 10) == (4, 10)
    assert _answer(w, reply, "big")[0] == ["f1234"]
    assert _answer(w, reply, "small")[0] == ["f0007"]
    assert _answer(w, reply, "big")[1].count(False) == 1


# -- the wire's limit on one walk ---------------------------------------------------------
def _two_dirs_edited(monkeypatch, full: bool) -> tuple[MemoryFileSystem, ReplicatorTarget]:
    """Two directories of 100 files, one file edited in each, walked with the wire's limit
    on the items of one walk lowered to 150 (both sides read it from ``protocol``)."""
    fs = MemoryFileSystem()
    for rel in ("x", "y"):
        fs.makedirs(f"/src/{rel}")
        for i in range(100):
            fs.writefile(f"/src/{rel}/f{i:03}", f"{rel} {i}")
    target = ReplicatorTarget(fs, "/dst")
    ReplicatorSource(fs, "/src", target.handle_request, keep=0)
    fs.writefile("/src/x/f005", "edited")
    fs.writefile("/src/y/f007", "edited")
    monkeypatch.setattr(merkle_sync.protocol, "MAX_ITEMS", 150)
    if full:

        def whole(self, dirs, have=0):
            self._asked_names = [[] for _ in dirs]
            return tuple(b"" for _ in dirs)

        monkeypatch.setattr(SyncSession, "_sums", whole)
    return fs, target


def test_full_listings_of_more_children_than_max_items_are_a_valid_walk(monkeypatch):
    """The control for the test below: without digests, the same walk (200 children in the
    directories of one level, past the lowered limit) is valid and the sync ends equal."""
    fs, target = _two_dirs_edited(monkeypatch, full=True)
    ReplicatorSource(fs, "/src", target.handle_request, keep=0)
    assert same_tree(fs, "/src", fs, "/dst")


def test_a_walk_level_with_more_children_than_max_items_still_syncs(monkeypatch):
    """At the real limit (4,000,000) this takes directories of more than 4,000,000 entries
    in all at one level of the walk, all of them changed (e.g. many large directories of a
    target that fell behind); the limit lowered to 150 shows it with 200."""
    fs, target = _two_dirs_edited(monkeypatch, full=False)
    ReplicatorSource(fs, "/src", target.handle_request, keep=0)
    assert same_tree(fs, "/src", fs, "/dst")
