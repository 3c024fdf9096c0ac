"""Every budget of one request is enforced before the target reads, copies or allocates."""

from __future__ import annotations

import msgpack
import pytest
import zstandard
from blake3 import blake3

from merkle_sync import MemoryFileSystem, ProtocolError, ReplicatorTarget
from merkle_sync.merkle import KIND_BYTES, KIND_STR, FileNode
from merkle_sync.protocol import MAX_BASIS_READ, MAX_FRAME, MAX_REUSE, Apply, Span, Walk, Write
from merkle_sync.testing import snapshot
from merkle_sync.wire import STREAM_START, StreamDecoder, encode

MUTATIONS = ("writefile", "removefile", "removedir", "makedir", "makedirs")


def make_target(size: int = 64 << 10):
    fs = MemoryFileSystem()
    fs.makedirs("/t")
    data = blake3(b"held").digest(length=size)
    fs.writefile("/t/held.bin", data)
    return fs, ReplicatorTarget(fs, "/t"), FileNode.from_data(KIND_BYTES, data)


def assert_refused_untouched(fs, target, request, reads_allowed=0):
    before = snapshot(fs, "/")
    ops = {m: fs.get_num_operations(m) for m in MUTATIONS}
    reads = fs.get_num_operations("readfile")
    with pytest.raises(ProtocolError):
        target.handle_request(request)
    assert fs.get_num_operations("readfile") - reads <= reads_allowed
    assert {m: fs.get_num_operations(m) for m in MUTATIONS} == ops
    assert snapshot(fs, "/") == before


def test_a_small_frame_repeating_a_held_piece_is_refused_before_any_copy():
    fs, target, node = make_target()
    repeats = MAX_REUSE // node.tree.size + 1
    write = Write(
        "copy", KIND_BYTES, repeats * node.tree.size, b"\0" * 8, (node.tree.root[:8],) * repeats
    )
    request = encode(Apply(8, b"", (), (), (write,), (), b""))
    assert len(request) < 4096  # a few KB on the wire asking for more than 1 GiB of work
    assert_refused_untouched(fs, target, request)


def test_basis_spans_past_the_read_budget_are_refused_before_reading():
    fs, target, _ = make_target(MAX_BASIS_READ + (4 << 20))
    spans = tuple(Span("held.bin", i << 17, (i + 1) << 17) for i in range(MAX_BASIS_READ >> 17))
    assert_refused_untouched(fs, target, encode(Walk(8, b"", (), (), spans)))
    fits = tuple(Span("held.bin", i << 17, (i + 1) << 17) for i in range(8))
    target.handle_request(encode(Walk(8, b"", (), (), fits)))  # a modest basis is answered


def test_a_walk_listing_one_directory_twice_is_refused():
    fs, target, _ = make_target()
    frame = msgpack.packb([1, 8, b"", [""] * 1000, b"", []])
    assert_refused_untouched(fs, target, frame)


def test_a_stream_frame_that_inflates_past_the_frame_cap_is_refused():
    fs, target, _ = make_target()
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    zeros = bytes(16 << 20)
    bomb = b"".join(stream.compress(zeros) for _ in range((MAX_FRAME >> 24) + 2))
    bomb += stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert len(bomb) < 1 << 20
    assert_refused_untouched(fs, target, bytes((STREAM_START,)) + bomb)
    with pytest.raises(ProtocolError):  # the broken stream cannot be continued either
        StreamDecoder().decode(b"\x02" + bomb[:100])


def test_frames_out_of_order_are_refused_and_the_open_file_is_dropped():
    fs, target, _ = make_target()
    data = blake3(b"new").digest(length=50_000)
    node = FileNode.from_data(KIND_BYTES, data)
    ends = list(node.tree.leaf_ends())
    first_leaves = [e for e in ends if e <= 30_000]
    cut = first_leaves[-1]
    sizes = [b - a for a, b in zip([0, *first_leaves], first_leaves, strict=False)]
    head = Apply(
        8, b"", (), (), (Write("new", 1, len(data), node.hash[:8], (len(sizes),)),),
        tuple(sizes), data[:cut], (), 0, False,
    )  # fmt: skip
    assert_refused_untouched(fs, target, encode(Apply(8, b"", (), (), (), (), b"", (), 1, True)))
    target.handle_request(encode(head))  # staged, nothing visible yet
    assert not fs.exists("/t/new")
    rest = ends[len(sizes) :]
    rest_sizes = [b - a for a, b in zip([cut, *rest[:-1]], rest, strict=True)]
    skipped = Apply(
        8, b"", (), (), (Write("new", 1, len(data), node.hash[:8], (len(rest_sizes),), cut),),
        tuple(rest_sizes), data[cut:], (), 2, True,
    )  # fmt: skip
    assert_refused_untouched(fs, target, encode(skipped))
    in_order = Apply(*[getattr(skipped, f) for f in skipped.__slots__][:8], 1, True)
    assert_refused_untouched(fs, target, encode(in_order))  # the stream was dropped
    assert not fs.exists("/t/new")


def test_a_str_file_that_is_not_utf8_is_refused_before_anything_lands():
    fs, target, _ = make_target()
    bad = b"\xff\xfe not utf-8"
    node = FileNode.from_data(KIND_STR, bad)
    good = FileNode.from_data(KIND_BYTES, b"fine")
    writes = (
        Write("a_good", KIND_BYTES, 4, good.hash[:8], (1,)),
        Write("b_bad", KIND_STR, len(bad), node.hash[:8], (1,)),
    )
    request = Apply(8, b"", (), (), writes, (4, len(bad)), b"fine" + bad)
    assert_refused_untouched(fs, target, encode(request))


def test_a_piece_named_by_a_position_the_walk_never_confirmed_is_refused():
    fs, target, node = make_target()
    target.handle_request(encode(Walk(8, b"\1" * 32, ("",), ())))  # a new sync: nothing confirmed
    write = Write("copy", KIND_BYTES, node.tree.size, node.hash[:8], (-1,))
    assert_refused_untouched(fs, target, encode(Apply(8, b"", (), (), (write,), (), b"")))
    # Once the walk confirmed the hash, its position names it.
    target.handle_request(encode(Walk(8, b"", (), (node.tree.root[:8],))))
    target.handle_request(encode(Apply(8, b"", (), (), (write,), (), b"")))
    assert fs.readfile("/t/copy") == fs.readfile("/t/held.bin")


def test_a_path_too_long_for_the_target_is_refused_before_anything_lands():
    fs, _, _ = make_target()
    deep = "/".join(["d" * 200] * 20 + ["f" * 74])  # 4,094 bytes: legal in the protocol
    fs.makedirs("/t/" + deep.rsplit("/", 1)[0])  # its directories exist
    target = ReplicatorTarget(fs, "/t")
    first = literal_apply("ok", b"fine")
    request = Apply(
        8, b"", (), (), (first.writes[0], Write(deep, KIND_BYTES, 4, first.writes[0].hash, (1,))),
        (4, 4), b"finefine",
    )  # fmt: skip
    assert_refused_untouched(fs, target, encode(request))


def literal_apply(path: str, data: bytes) -> Apply:
    node = FileNode.from_data(KIND_BYTES, data)
    return Apply(8, b"", (), (), (Write(path, KIND_BYTES, len(data), node.hash[:8], (1,)),),
                 (len(data),), data)  # fmt: skip


def test_a_recorded_apply_replayed_later_changes_nothing():
    """A walk binds its apply to the target state it saw: replaying that apply after the
    target moved on (a file deleted since) is refused and resurrects nothing."""
    from merkle_sync import FileSystemEvent, ReplicatorSource
    from merkle_sync.fs import FileSystemEventType
    from merkle_sync.wire import decode as decode_frame

    fs = MemoryFileSystem()
    fs.makedirs("/src")
    fs.writefile("/src/keep", b"keep")
    fs.writefile("/src/doomed", b"to be deleted")
    target = ReplicatorTarget(fs, "/dst")
    recorded = []

    def recording(frame):
        recorded.append(frame)
        return target.handle_request(frame)

    ReplicatorSource(fs, "/src", recording)  # a walk, then its apply
    walk_apply = recorded[-1]
    fs.removefile("/src/doomed")
    fs.handle_event(FileSystemEvent("/src/doomed", FileSystemEventType.FILE_OR_SUBDIR_REMOVED))
    assert not fs.exists("/dst/doomed")
    before = snapshot(fs, "/")
    reply = decode_frame(target.handle_request(walk_apply))  # the old apply, replayed
    assert snapshot(fs, "/") == before and not fs.exists("/dst/doomed")
    assert reply.root == target.tree.hash  # refused as stale: the source would walk again
