"""A malicious or broken peer: every bad frame raises ProtocolError and changes nothing."""

from __future__ import annotations

import contextlib
import pickle

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from merkle_sync import MemoryFileSystem, ProtocolError, ReplicatorTarget
from merkle_sync.chunking import leaf_hash
from merkle_sync.merkle import KIND_BYTES, FileNode
from merkle_sync.protocol import MAX_FRAME, Apply, ApplyReply, Entry, Span, Walk, WalkReply, Write
from merkle_sync.testing import snapshot
from merkle_sync.wire import decode, encode

H8 = b"\x01" * 8
H32 = b"\x02" * 32


def valid_messages():
    node = FileNode.from_data(KIND_BYTES, b"hello")
    write = Write("d/f", KIND_BYTES, 5, node.hash[:8], (1,))
    return [
        Walk(8, H32, ("", "a/b"), (H8,), (Span("a/f", 0, 10),)),
        WalkReply(False, ((Entry("x", 1, H8),), None), b"\x01", 3),
        Apply(8, b"", ("old",), ("d",), (write,), (5,), b"hello", (Span("d/f", 4, 9),)),
        ApplyReply(H32),
    ]


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: type(m).__name__)
def test_round_trip_through_msgpack_and_pickle(msg):
    assert decode(encode(msg)) == msg
    assert pickle.loads(pickle.dumps(msg)) == msg


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: type(m).__name__)
def test_every_truncation_is_rejected(msg):
    frame = encode(msg)
    for cut in range(len(frame)):
        with pytest.raises(ProtocolError):
            decode(frame[:cut])


BAD_VALUES = [None, -1, 2**63, "x", b"", b"\x00" * 7, (), ("..",), True, 3.5, {"a": 1}, [[1]]]


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: type(m).__name__)
def test_every_field_flipped_to_a_wrong_value_is_rejected(msg):
    """Each field rejects most wrong values; none of them escapes as another exception."""
    body = msgpack.unpackb(encode(msg), raw=False, strict_map_key=False)
    for i in range(1, len(body)):
        rejected = 0
        for bad in BAD_VALUES:
            flipped = [*body[:i], bad, *body[i + 1 :]]
            try:
                decoded = decode(msgpack.packb(flipped, use_bin_type=True))
            except ProtocolError:
                rejected += 1
            else:  # a value that happens to be legal here must survive a round trip
                assert decode(encode(decoded)) == decoded
        assert rejected >= len(BAD_VALUES) - 3, f"field {i} of {type(msg).__name__} is lax"


@pytest.mark.parametrize(
    ("msg", "field", "what"),
    [(valid_messages()[1], 2, "listing entry"), (valid_messages()[2], 5, "write")],
    ids=["Entry", "Write"],
)
def test_every_nested_field_flipped_is_rejected(msg, field, what):
    """The records inside messages (listing entries, writes) check every field too."""
    body = msgpack.unpackb(encode(msg), raw=False, strict_map_key=False)
    record = body[field][0]
    for j in range(len(record)):
        rejected = 0
        for bad in BAD_VALUES:
            nested = [*record[:j], bad, *record[j + 1 :]]
            flipped = [*body[:field], [nested, *body[field][1:]], *body[field + 1 :]]
            try:
                decode(msgpack.packb(flipped, use_bin_type=True))
            except ProtocolError:
                rejected += 1
        assert rejected >= len(BAD_VALUES) - 4, f"{what} field {j} is lax"


def test_unknown_type_and_non_frames():
    for frame in (msgpack.packb([99, 1]), msgpack.packb([]), msgpack.packb({"a": 1}), b"", b"\xc1"):
        with pytest.raises(ProtocolError):
            decode(frame)
    with pytest.raises(ProtocolError):
        decode("not bytes")  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(frame):
    try:
        msg = decode(frame)
    except ProtocolError:
        return
    assert decode(encode(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.binary(max_size=40),
            st.text(max_size=8),
            st.none(),
            st.lists(st.binary(max_size=9), max_size=3),
        ),
        max_size=9,
    ),
    st.integers(1, 4),
)
def test_arbitrary_bodies_never_crash_the_decoder(fields, code):
    with contextlib.suppress(ProtocolError):
        decode(msgpack.packb([code, *fields], use_bin_type=True))


# -- the target under attack ------------------------------------------------------------------
@pytest.fixture
def target():
    fs = MemoryFileSystem()
    fs.makedirs("/t/d")
    fs.writefile("/t/d/f", b"hello world")
    fs.makedirs("/outside")
    fs.writefile("/outside/secret", "secret")
    return fs, ReplicatorTarget(fs, "/t")


MUTATIONS = ("writefile", "removefile", "removedir", "makedir", "makedirs")


def assert_rejected_without_change(fs, target, request):
    before = snapshot(fs, "/")
    ops = {m: fs.get_num_operations(m) for m in MUTATIONS}
    root = target.tree.hash
    with pytest.raises(ProtocolError):
        target.handle_request(request)
    assert snapshot(fs, "/") == before
    assert {m: fs.get_num_operations(m) for m in MUTATIONS} == ops
    assert target.tree.hash == root


def literal_write(path: str, data: bytes) -> Apply:
    node = FileNode.from_data(KIND_BYTES, data)
    return Apply(
        8,
        b"",
        (),
        (),
        (Write(path, KIND_BYTES, len(data), node.hash[:8], (1,)),),
        (len(data),),
        data,
    )


ESCAPES = [
    "/etc/passwd",
    "../outside/secret",
    "d/../../outside",
    "a//b",
    "./x",
    "d/.",
    "x/",
    "a\0b",
    "",
    "..",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_that_leave_the_target_are_rejected(target, path):
    fs, t = target
    frames = [
        msgpack.packb([3, 8, b"", [path], [], [], [], b"", []]),
        msgpack.packb([3, 8, b"", [], [path], [], [], b"", []]),
        msgpack.packb([3, 8, b"", [], [], [[path, 1, 1, H8, [1]]], [1], b"x", []]),
        msgpack.packb([3, 8, b"", [], [], [], [], b"", [path, 0, 10]]),
        msgpack.packb([1, 8, b"", [], b"", [path, 0, 10]]),
    ]
    if path != "":  # the empty path names the root in a walk's directory list: legal
        frames.append(msgpack.packb([1, 8, b"", [path], b"", []]))
    for frame in frames:
        assert_rejected_without_change(fs, t, frame)
    # The same frames with a safe path are well-formed, so the path alone was refused.
    assert decode(msgpack.packb([1, 8, b"", ["d"], b"", ["d/f", 0, 10]])).dirs == ("d",)


def test_inconsistent_applies_change_nothing(target):
    fs, t = target
    good = literal_write("d/new", b"payload")
    assert good.writes[0].pieces == (1,)
    w = good.writes[0]
    bad = [
        # declared size does not match the pieces
        Apply(8, b"", (), (), (Write("d/new", 1, 99, w.hash, (1,)),), (7,), b"payload"),
        # the file hash does not match the bytes
        Apply(8, b"", (), (), (Write("d/new", 1, 7, b"\x00" * 8, (1,)),), (7,), b"payload"),
        # a piece the target does not have
        Apply(8, b"", (), (), (Write("d/new", 1, 7, w.hash, (H8,)),), (), b""),
        # parent directory missing, removal of something absent, directory over a file
        literal_write("nodir/new", b"payload"),
        Apply(8, b"", ("absent",), (), (), (), b""),
        Apply(8, b"", (), ("d/f",), (), (), b""),
        # a good write followed by an impossible one: the good one must not land either
        Apply(8, b"", (), (), (w, Write("d", 1, 7, w.hash, (1,))), (7, 7), b"payloadpayload"),
    ]
    for request in bad:
        assert_rejected_without_change(fs, t, request)
        assert_rejected_without_change(fs, t, encode(request))
    with pytest.raises(ProtocolError):  # literal sizes that do not add up fail at construction
        Apply(8, b"", (), (), (w,), (8,), b"payload")
    assert t.handle_request(good) == ApplyReply(t.tree.hash)
    assert fs.readfile("/t/d/new") == b"payload"


def test_oversized_or_broken_compressed_frames_are_rejected_before_use(target):
    fs, t = target
    body = msgpack.packb(
        [3, 8, b"", [], [], [["d/n", 1, 10**6, H8, [1]]], [10**6], b"\0" * 10**6, []]
    )
    packed = zstandard.ZstdCompressor().compress(body)
    assert_rejected_without_change(fs, t, packed)  # well-formed frame, inconsistent content
    huge = zstandard.ZstdCompressor().compress(b"\x90" + b"\0" * (MAX_FRAME + 1))
    assert zstandard.frame_content_size(huge) > MAX_FRAME
    assert_rejected_without_change(fs, t, huge)  # refused from the header, never inflated
    assert_rejected_without_change(fs, t, packed[:-5])  # truncated
    assert_rejected_without_change(fs, t, b"\x28\xb5\x2f\xfd garbage")


def test_frames_are_compressed_when_it_pays():
    names = tuple(f"some/long/directory/name/number/{i}" for i in range(50))
    frame = encode(Walk(8, b"", names, ()))
    assert frame.startswith(b"\x28\xb5\x2f\xfd")
    assert len(frame) < len(msgpack.packb([1, 8, b"", names, b""])) / 4
    assert decode(frame) == Walk(8, b"", names, ())


def test_literal_reused_by_hash_within_one_apply(target):
    fs, t = target
    node = FileNode.from_data(KIND_BYTES, b"abc")
    short = leaf_hash(b"abc")[:8]
    req = Apply(
        8,
        b"",
        (),
        (),
        (Write("a", 1, 3, node.hash[:8], (1,)), Write("b", 1, 3, node.hash[:8], (short,))),
        (3,),
        b"abc",
    )
    t.handle_request(req)
    assert fs.readfile("/t/a") == fs.readfile("/t/b") == b"abc"


@pytest.mark.parametrize("msg", valid_messages(), ids=lambda m: type(m).__name__)
def test_a_message_built_trusted_equals_the_checked_one(msg):
    """What a side builds from its own state skips the checks, and nothing else differs."""
    from dataclasses import fields

    from merkle_sync.protocol import trusted

    copy = trusted(type(msg), *(getattr(msg, f.name) for f in fields(msg)))
    assert copy == msg and encode(copy) == encode(msg)


def test_bytes_after_a_compressed_frame_are_refused():
    frame = encode(Walk(8, b"", tuple(f"some/long/dir/{i}" for i in range(50)), ()))
    assert frame.startswith(b"\x28\xb5\x2f\xfd")
    for tail in (b"x", b"junk" * 1000, frame):
        with pytest.raises(ProtocolError):
            decode(frame + tail)


@pytest.mark.parametrize("have", [b"\x01" * 7, b"\x01" * 9, [b"\x01" * 8], "text"])
def test_hashes_asked_about_must_be_one_string_of_whole_hashes(have):
    """A walk's hashes travel joined: a length that is not a multiple, or another type, is
    refused before anything is looked up."""
    with pytest.raises(ProtocolError):
        decode(msgpack.packb([1, 8, b"", [], have, []]))
    assert decode(msgpack.packb([1, 8, b"", [], b"\x01" * 16, []])).have == (b"\x01" * 8,) * 2


def test_the_targets_unread_paths_are_checked_and_capped():
    from merkle_sync.checks import MAX_UNREAD

    reply = WalkReply(True, (), b"", 0, unread=("a/b", "c"))
    assert decode(encode(reply)) == reply
    for bad in (("../x",), ("/abs",), ("a",) * (MAX_UNREAD + 1), ("ok", 3)):
        with pytest.raises(ProtocolError):
            WalkReply(True, (), b"", 0, unread=bad)
    assert encode(WalkReply(True, (), b"", 0)) == b"\x95\x02\xc3\x90\xc4\x00\x00"  # as before


def test_a_frame_touching_what_the_target_excludes_is_refused_and_changes_nothing(tmp_path):
    """The source leaves out what the target does, so no sync sends these; a peer that does
    would replace or delete what the target's user excluded (found by fuzzing the target)."""
    from merkle_sync.diskfs import DiskFileSystem
    from merkle_sync.ignore import Ignore
    from merkle_sync.protocol import Attr

    dst = tmp_path / "dst"
    (dst / "build").mkdir(parents=True)
    (dst / "note.log").write_text("mine")
    target = ReplicatorTarget(DiskFileSystem(), str(dst), ignore=Ignore(["*.log", "build/"]))
    before = snapshot(DiskFileSystem(), str(dst))
    node = FileNode.from_data(KIND_BYTES, b"x")
    write = Write("note.log", KIND_BYTES, 1, node.hash[:8], (1,))
    below = Write("build/out", KIND_BYTES, 1, node.hash[:8], (1,))
    frames = [
        Apply(8, b"", (), (), (write,), (1,), b"x"),
        Apply(8, b"", (), (), (below,), (1,), b"x"),
        Apply(8, b"", (), ("note.log/d",), (), (), b""),
        Apply(8, b"", ("build",), (), (), (), b""),
        Apply(8, b"", (), (), (), (), b"", attrs=(Attr("note.log", 0o600, 0),)),
    ]
    for frame in frames:  # (the excluded directory is not in the tree: "nothing is there")
        with pytest.raises(ProtocolError, match=r"excluded on this target|nothing is there"):
            decode(target.handle_request(encode(frame)))
        assert snapshot(DiskFileSystem(), str(dst)) == before
    # A file named like a directory-only pattern is no directory: it is mirrored, so it may
    # be removed (it was refused as excluded, and every later sync failed).
    (dst / "out").write_text("a file")
    target = ReplicatorTarget(DiskFileSystem(), str(dst), ignore=Ignore(["out/"]))
    assert decode(target.handle_request(encode(Apply(8, b"", ("out",), (), (), (), b""))))
    assert not (dst / "out").exists()


def test_a_link_of_4096_bytes_is_refused_before_anything_lands():
    """Linux's PATH_MAX counts the closing NUL: such a link failed at its commit, after the
    frame's removals and directories had landed (found by fuzzing the target)."""
    node = FileNode.from_data(3, b"x" * 4095)
    Write("l", 3, 4095, node.hash[:8], (1,))
    with pytest.raises(ProtocolError):
        Write("l", 3, 4096, node.hash[:8], (1,))


def test_a_clients_options_are_checked_and_its_patterns_cannot_backtrack_for_ever():
    """The exclude patterns of a client's hello become regular expressions the target runs
    on every entry: adjacent ``*`` are one wildcard (git's rule; 11 of them took 11 s on one
    name), and more than ``MAX_WILDCARDS`` are refused. A flag is no count."""
    from merkle_sync.ignore import MAX_WILDCARDS, Ignore
    from merkle_sync.serve import target_options

    slow = Ignore(["*" * 20 + "x", "a/**/b", "a**b"])
    assert slow.patterns == ("*x", "a/**/b", "a*b")
    assert not slow("a" * 250, False)  # at once: one wildcard, not twenty
    assert slow("a/c/d/b", False) and slow("azzb", False)
    many = MAX_WILDCARDS + 1
    for bad in ("*a" * many, "a/**/" * many + "y", "\\\\*" * many + "x"):  # \\* is \ then *
        with pytest.raises(ValueError, match="wildcards"):
            Ignore([bad])
    for bad in ({"max_delete": True}, {"max_delete": -1}, {"exclude": "*.log"}, {"nope": 1}):
        with pytest.raises(ProtocolError):
            target_options(bad)
    assert target_options({"max_delete": 0, "exclude": ["*.log"]})["max_delete"] == 0


def test_a_preflight_is_answered_with_the_apply_checks_and_changes_nothing(tmp_path):
    from merkle_sync.checks import Refused
    from merkle_sync.diskfs import DiskFileSystem
    from merkle_sync.preflight import Preflight
    from merkle_sync.protocol import Ack

    dst = tmp_path / "dst"
    (dst / "d").mkdir(parents=True)
    (dst / "d" / "f").write_text("f")
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst), max_delete=1, guard_unmarked=False)
    before = snapshot(fs, str(dst))
    assert decode(target.handle_request(encode(Preflight(("d/f",))))) == Ack(0)
    with pytest.raises(Refused, match="more than 1"):
        target.handle_request(encode(Preflight(("d",))))  # the directory and its file
    assert snapshot(fs, str(dst)) == before
    assert decode(encode(Preflight(("a", "b/c")))) == Preflight(("a", "b/c"))
    for bad in (("../x",), ("/x",), "d"):
        with pytest.raises(ProtocolError):
            Preflight(bad)  # type: ignore[arg-type]
