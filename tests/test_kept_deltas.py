"""Edits as zstd deltas against the version the source kept: the codec, the wire rule, the
kept copies, and whole syncs, including targets that lie or were edited by hand."""

from __future__ import annotations

import os
import random
import sqlite3

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from merkle_sync import (
    FileSystemEvent,
    FileSystemEventType,
    MemoryFileSystem,
    ProtocolError,
    ReplicatorSource,
    ReplicatorTarget,
)
from merkle_sync.chunking import CHUNK_MAX
from merkle_sync.delta import apply_delta, make_delta
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.freshness import StaleContent
from merkle_sync.kept import KeptCopies
from merkle_sync.merkle import KIND_BYTES, KIND_LINK, FileNode, lookup
from merkle_sync.protocol import DELTA_MAX, Apply, Write, trusted
from merkle_sync.testing import MeteredRpc, same_tree, snapshot
from merkle_sync.wire import decode, encode
from tests.texts import H8, MUTATIONS
from tests.texts import edited as _edit
from tests.texts import source_text as _text

MODIFIED = FileSystemEventType.FILE_MODIFIED


# -- the codec ----------------------------------------------------------------------------
@st.composite
def _versions(draw):
    """An old version and a new one: unrelated bytes, or the old one with a splice."""
    old = draw(st.binary(max_size=4096))
    if draw(st.booleans()):
        return old, draw(st.binary(max_size=4096))
    a = draw(st.integers(0, len(old)))
    b = draw(st.integers(a, len(old)))
    return old, old[:a] + draw(st.binary(max_size=300)) + old[b:]


@settings(max_examples=200, deadline=None)
@given(_versions(), st.sampled_from([1, 6, 19]))
def test_a_delta_expands_to_exactly_the_new_version(versions, level):
    """Empty versions included: an empty old version is an empty dictionary, still legal."""
    old, new = versions
    delta = make_delta(old, new, level)
    assert apply_delta(old, delta, len(new)) == new
    assert apply_delta(old, memoryview(delta), len(new)) == new  # as literals arrive


def test_a_small_edit_makes_a_small_delta():
    """The point of the feature: the old version is a dictionary, so an edit costs bytes."""
    old = os.urandom(200_000)
    new = old[:100_000] + b"edit" + old[100_004:]
    assert len(make_delta(old, new)) < 200


def test_make_delta_refuses_versions_past_delta_max():
    with pytest.raises(ValueError):
        make_delta(b"", b"\0" * (DELTA_MAX + 1))
    with pytest.raises(ValueError):
        make_delta(b"\0" * (DELTA_MAX + 1), b"")


OLD = _text(5000).encode()
NEW = _edit(OLD.decode(), 2500).encode()


@pytest.mark.parametrize(
    "delta",
    [
        b"",
        b"\x28\xb5",  # a magic number cut short
        os.urandom(64),
        make_delta(OLD, NEW)[:-3],  # truncated
        zstandard.ZstdCompressor(write_content_size=False).compress(NEW),  # no declared size
        bytes.fromhex("502a4d18") + (4).to_bytes(4, "little") + b"skip",  # a skippable frame
    ],
    ids=["empty", "short", "garbage", "truncated", "undeclared", "skippable"],
)
def test_a_broken_delta_is_a_protocol_error(delta):
    with pytest.raises(ProtocolError):
        apply_delta(OLD, delta, len(NEW))


@pytest.mark.parametrize("size", [len(NEW) - 1, len(NEW) + 1, 0])
def test_a_delta_whose_declared_size_is_not_the_writes_is_refused(size):
    """Checked before decompressing: the write's size bounds the output."""
    with pytest.raises(ProtocolError, match="declares"):
        apply_delta(OLD, make_delta(OLD, NEW), size)


def test_sizes_past_delta_max_or_negative_are_refused_before_decoding():
    delta = make_delta(OLD, NEW)
    for old, size in ((OLD, DELTA_MAX + 1), (OLD, -1), (b"\0" * (DELTA_MAX + 1), len(NEW))):
        with pytest.raises(ProtocolError, match="DELTA_MAX"):
            apply_delta(old, delta, size)


def test_a_delta_applied_to_other_old_bytes_never_yields_the_new_version():
    """zstd cannot tell a wrong dictionary of the right kind: the result may be another file
    of the right size (so the target must check the result's hash), or an error."""
    delta = make_delta(OLD, NEW)
    rng = random.Random(7)
    for wrong in (rng.randbytes(len(OLD)), OLD[::-1], b"", OLD[: len(OLD) // 2]):
        try:
            got = apply_delta(wrong, delta, len(NEW))
        except ProtocolError:
            continue
        assert got != NEW
        assert len(got) == len(NEW)


# -- the write on the wire ----------------------------------------------------------------
def _write(**kw) -> Write:
    fields = {"path": "f", "kind": KIND_BYTES, "size": 100, "hash": H8, "pieces": (1,)}
    return Write(**{**fields, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {"pieces": (1, 2)},
        {"pieces": (H8,)},
        {"pieces": ((H8, 1),)},
        {"pieces": (DELTA_MAX // CHUNK_MAX + 3,)},
        {"offset": 5},
        {"kind": KIND_LINK, "size": 10},
        {"size": DELTA_MAX + 1},
    ],
    ids=["two-runs", "a-hash", "refined", "too-many-runs", "offset", "link", "too-big"],
)
def test_a_delta_write_is_one_run_of_literals_for_a_whole_small_file(kw):
    """Each of these is a legal plain write: only as a delta is it refused."""
    _write(**kw)
    with pytest.raises(ProtocolError):
        _write(**kw, delta_from=H8)


@pytest.mark.parametrize("delta_from", [b"\x01" * 7, b"\x01" * 9, "x" * 8, 5])
def test_delta_from_must_be_a_hash_as_long_as_the_writes(delta_from):
    with pytest.raises(ProtocolError):
        _write(delta_from=delta_from)


@pytest.mark.parametrize("meta", [None, (0o644, 1_700_000_000_000_000_000)])
def test_a_delta_write_round_trips_inside_an_apply(meta):
    write = _write(pieces=(2,), meta=meta, delta_from=b"\x07" * 8)
    apply = Apply(8, b"", (), (), (write,), (CHUNK_MAX, 5), b"\0" * (CHUNK_MAX + 5))
    back = decode(encode(apply))
    assert back == apply
    assert back.writes[0].delta_from == b"\x07" * 8
    assert back.writes[0].meta == meta


@pytest.mark.parametrize(
    "kw",
    [{"pieces": (1, 1)}, {"offset": 3}, {"size": DELTA_MAX + 1}, {"kind": KIND_LINK, "size": 9}],
    ids=["two-runs", "offset", "too-big", "link"],
)
def test_a_hostile_delta_write_is_refused_when_decoded(kw):
    """A peer builds its frames without our checks: decoding applies them."""
    fields = {"path": "f", "kind": KIND_BYTES, "size": 100, "hash": H8, "pieces": (1,)}
    write = trusted(Write, **{**fields, **kw}, delta_from=H8)
    runs = sum(kw.get("pieces", (1,)))
    apply = trusted(Apply, 8, b"", (), (), (write,), (1,) * runs, b"x" * runs)
    with pytest.raises(ProtocolError):
        decode(encode(apply))


def test_a_write_with_too_many_fields_is_refused():
    frame = msgpack.packb([3, 8, b"", [], [], [["f", 1, 1, H8, [1], 0, None, H8, 0]], [1], b"x"])
    with pytest.raises(ProtocolError):
        decode(frame)


# -- kept copies --------------------------------------------------------------------------
def _hash(i: int) -> bytes:
    return bytes([i]) * 32


def test_a_kept_copy_is_found_by_a_prefix_of_its_hash():
    kept = KeptCopies()
    a, b = b"\x10" + b"\x00" * 31, b"\x10\x01" + b"\x00" * 30
    kept.put([(a, b"version a"), (b, b"version b")])
    assert kept.get(a[:8]) == b"version a"
    assert kept.get(b[:2]) == b"version b"
    assert kept.get(b"\x10") in (b"version a", b"version b")  # ambiguous, but one of them
    assert kept.has(a[:8]) and kept.has(b[:8])
    # A neighbour in hash order is not a match.
    assert not kept.has(b"\x10\x02") and kept.get(b"\x10\x02") is None
    assert not kept.has(b"\x0f") and kept.get(b"\x11") is None
    assert not kept.has(b"") and kept.get(b"") is None


def test_keeping_the_same_version_twice_counts_its_bytes_once():
    kept = KeptCopies()
    kept.put([(_hash(1), os.urandom(1000))])
    once = kept.stored
    kept.put([(_hash(1), os.urandom(1000))])
    assert kept.stored == once
    assert len(kept.get(_hash(1))) == 1000


def test_past_the_budget_the_copy_used_least_recently_goes_first():
    """Random bytes do not compress: each copy costs a little more than 1000 bytes."""
    data = {i: os.urandom(1000) for i in range(1, 5)}
    kept = KeptCopies(budget=2500)
    kept.put([(_hash(1), data[1])])
    kept.put([(_hash(2), data[2])])
    assert kept.get(_hash(1)) == data[1]  # 1 is used after 2 was kept
    kept.put([(_hash(3), data[3])])
    assert not kept.has(_hash(2))  # least recently used, though kept after 1
    assert kept.get(_hash(1)) == data[1] and kept.get(_hash(3)) == data[3]
    assert kept.stored <= 2500
    kept.put([(_hash(4), data[4])])  # 1 and 3: 3 was used last
    assert not kept.has(_hash(1)) and kept.has(_hash(3)) and kept.has(_hash(4))


def test_a_copy_larger_than_the_budget_is_not_kept():
    kept = KeptCopies(budget=500)
    kept.put([(_hash(1), os.urandom(1000))])
    assert not kept.has(_hash(1)) and kept.stored == 0


def test_budget_zero_keeps_nothing():
    kept = KeptCopies(budget=0)
    kept.put([(_hash(1), b"x" * 100)])
    assert not kept.has(_hash(1)) and kept.get(_hash(1)) is None and kept.stored == 0


def test_budget_zero_ignores_copies_an_index_already_holds(tmp_path):
    db = sqlite3.connect(tmp_path / "kept.sqlite", isolation_level=None)
    KeptCopies(db).put([(_hash(1), b"x" * 100)])
    assert not KeptCopies(db, budget=0).has(_hash(1))


def test_files_past_delta_max_are_not_kept():
    """Zeros compress to almost nothing: it is the size, not the budget, that refuses."""
    kept = KeptCopies()
    kept.put([(_hash(1), b"\0" * (DELTA_MAX + 1)), (_hash(2), b"\0" * DELTA_MAX)])
    assert not kept.has(_hash(1))
    assert kept.get(_hash(2)) == b"\0" * DELTA_MAX


def test_kept_copies_and_their_order_of_use_survive_reopening(tmp_path):
    path = tmp_path / "kept.sqlite"
    data = {i: os.urandom(1000) for i in range(1, 4)}
    kept = KeptCopies(sqlite3.connect(path, isolation_level=None), budget=2500)
    kept.put([(_hash(1), data[1])])
    kept.put([(_hash(2), data[2])])
    kept.get(_hash(1))
    again = KeptCopies(sqlite3.connect(path, isolation_level=None), budget=2500)
    assert again.stored == kept.stored
    again.put([(_hash(3), data[3])])
    assert not again.has(_hash(2))
    assert again.get(_hash(1)) == data[1] and again.get(_hash(3)) == data[3]


# -- whole syncs in memory ----------------------------------------------------------------
def _world(content, keep=None):
    """A source and a target on separate filesystems, so each side's operations count alone."""
    src, dst = MemoryFileSystem(), MemoryFileSystem()
    src.makedirs("/src/d")
    src.writefile("/src/d/big.txt", content)
    src.writefile("/src/small.txt", "small")
    target = ReplicatorTarget(dst, "/dst")
    rpc = MeteredRpc(target.handle_request)
    kw = {} if keep is None else {"keep": keep}
    source = ReplicatorSource(src, "/src", rpc, **kw)
    assert same_tree(src, "/src", dst, "/dst")
    return src, dst, target, rpc, source


def _change(src, source, content, rel="d/big.txt"):
    src.writefile(f"/src/{rel}", content)
    source.handle_event(FileSystemEvent(f"/src/{rel}", MODIFIED))


def test_an_edit_in_the_middle_of_a_text_file_travels_as_a_small_delta():
    text = _text(50_000)
    src, dst, _, rpc, source = _world(text)
    stats = source.stats
    up, trips, writes = stats.bytes_up, stats.round_trips, dst.get_num_operations("writefile")
    rpc.reset()
    _change(src, source, _edit(text, 25_000))
    assert stats.delta_files == 1
    assert stats.bytes_up - up < 1024 and rpc.bytes_up < 1024  # of a 50 KB file
    assert stats.round_trips - trips == 1 and rpc.round_trips == 1  # no probe, no refinement
    assert dst.get_num_operations("writefile") - writes == 1
    assert same_tree(src, "/src", dst, "/dst")
    assert type(dst.readfile("/dst/d/big.txt")) is str  # a str file stays one


def test_with_nothing_kept_the_same_edit_goes_as_chunks_and_still_ends_equal():
    text = _text(50_000)
    src, dst, _, rpc, source = _world(text, keep=0)
    writes = dst.get_num_operations("writefile")
    rpc.reset()
    _change(src, source, _edit(text, 25_000))
    assert source.stats.delta_files == 0
    assert rpc.round_trips > 1  # the changed leaf is refined first
    assert dst.get_num_operations("writefile") - writes == 1
    assert same_tree(src, "/src", dst, "/dst")


def test_each_edit_of_a_series_is_a_delta_against_the_one_before():
    """After a delta sync, what is kept is the new version (the one the target now holds)."""
    text = _text(50_000)
    src, dst, _, _, source = _world(text)
    for i, at in enumerate((1_000, 20_000, 45_000), 1):
        text = _edit(text, at, f"edit {i}")
        up = source.stats.bytes_up
        _change(src, source, text)
        assert source.stats.delta_files == i
        assert source.stats.bytes_up - up < 1024
        assert same_tree(src, "/src", dst, "/dst")


def test_a_rewrite_goes_as_literals_not_as_a_delta():
    """Nothing shared with the old version: a delta gains nothing (``DELTA_GAIN``)."""
    old = os.urandom(50_000)
    src, dst, _, _, source = _world(old)
    _change(src, source, os.urandom(50_000))
    assert source.stats.delta_files == 0
    assert same_tree(src, "/src", dst, "/dst")


def test_a_file_past_delta_max_is_never_a_delta():
    data = os.urandom(DELTA_MAX + 50_000)
    src, dst, _, _, source = _world(data)
    _change(src, source, data[:500_000] + b"edit" + data[500_004:])
    assert source.stats.delta_files == 0
    assert same_tree(src, "/src", dst, "/dst")


def test_an_empty_file_filled_with_text_ends_equal():
    """The kept old version is empty: an empty dictionary; the text compresses well enough
    to go as a delta against it."""
    src, dst, _, _, source = _world("")
    _change(src, source, "abc " * 20_000)
    assert source.stats.delta_files == 1
    assert same_tree(src, "/src", dst, "/dst")


def test_a_str_file_edited_into_bytes_ends_a_bytes_file():
    """The delta's old version is the str file; the new one has another kind."""
    text = _text(50_000)
    src, dst, _, _, source = _world(text)
    _change(src, source, _edit(text, 25_000).encode())
    assert same_tree(src, "/src", dst, "/dst")
    assert type(dst.readfile("/dst/d/big.txt")) is bytes


def test_a_file_sent_across_frames_is_kept_after_the_sync():
    """Split over frames, its bytes never passed through whole: it is read again once the
    sync succeeded (``kept_rest``), so its next edit is a delta all the same."""
    text = _text(50_000)
    src, dst = MemoryFileSystem(), MemoryFileSystem()
    src.makedirs("/src")
    src.writefile("/src/f.txt", text)
    source = ReplicatorSource(
        src, "/src", ReplicatorTarget(dst, "/dst").handle_request, frame_literals=4096
    )
    assert source.stats.frames > 2
    _change(src, source, _edit(text, 25_000), "f.txt")
    assert source.stats.delta_files == 1
    assert same_tree(src, "/src", dst, "/dst")


def test_many_deltas_share_and_span_apply_frames():
    texts = {f"f{i:02}.txt": _text(20_000, seed=i) for i in range(20)}
    src, dst = MemoryFileSystem(), MemoryFileSystem()
    src.makedirs("/src")
    for name, text in texts.items():
        src.writefile(f"/src/{name}", text)
    target = ReplicatorTarget(dst, "/dst")
    source = ReplicatorSource(src, "/src", target.handle_request, frame_literals=100)
    for name, text in texts.items():
        src.writefile(f"/src/{name}", _edit(text, 10_000))
    frames, sent = source.stats.frames, source.stats.literal_bytes
    source.rescan()
    assert source.stats.delta_files == 20
    sent = source.stats.literal_bytes - sent  # the deltas, some 30 bytes each
    assert 20 * 10 < sent < 20 * 100
    assert source.stats.frames - frames >= sent // 100  # a few deltas per 100-byte frame
    assert same_tree(src, "/src", dst, "/dst")


def test_a_target_edited_by_hand_under_a_running_target_gets_no_delta_on_wrong_bytes():
    """The running target's tree still lists the old version; the delta's base is read and
    its tree checked (``StaleContent``), the target re-indexes, the source re-plans."""
    text = _text(50_000)
    src, dst, _, _, source = _world(text)
    dst.writefile("/dst/d/big.txt", _edit(text, 10_000, "HAND"))  # same size
    _change(src, source, _edit(text, 25_000))
    assert snapshot(dst, "/dst") == snapshot(src, "/src")
    assert same_tree(src, "/src", dst, "/dst")


# -- a target sent hostile deltas ---------------------------------------------------------
HELD = _text(20_000, seed=2).encode()


@pytest.fixture
def target():
    fs = MemoryFileSystem()
    fs.makedirs("/t/d")
    fs.writefile("/t/d/f", HELD)
    fs.writefile("/t/d/g", b"another file")
    return fs, ReplicatorTarget(fs, "/t")


def _delta_apply(
    path: str, old: bytes, new: bytes, delta_from: bytes, size: int | None = None, removes=()
) -> bytes:
    """An encoded apply writing ``path`` as a delta from ``old`` to ``new``."""
    blob = make_delta(old, new)
    sizes = tuple(min(CHUNK_MAX, len(blob) - at) for at in range(0, len(blob), CHUNK_MAX))
    node = FileNode.from_data(KIND_BYTES, new)
    size = len(new) if size is None else size
    write = Write(path, KIND_BYTES, size, node.hash[:8], (len(sizes),), 0, None, delta_from)
    return encode(Apply(8, b"", tuple(removes), (), (write,), sizes, blob))


def _assert_refused_unchanged(fs, target, frame, error=ProtocolError):
    before = snapshot(fs, "/")
    ops = {m: fs.get_num_operations(m) for m in MUTATIONS}
    root = target.tree.hash
    with pytest.raises(error) as info:
        target.handle_request(frame)
    assert snapshot(fs, "/") == before
    assert {m: fs.get_num_operations(m) for m in MUTATIONS} == ops
    assert target.tree.hash == root
    return info.value


NEW_HELD = HELD[:10_000] + b"delta" + HELD[10_005:]


def test_a_well_formed_delta_is_applied(target):
    """The control for the refusals below: the same frames, honest, are applied."""
    fs, t = target
    held = FileNode.from_data(KIND_BYTES, HELD)
    t.handle_request(_delta_apply("d/f", HELD, NEW_HELD, held.hash[:8]))
    assert fs.readfile("/t/d/f") == NEW_HELD
    assert t.tree.hash == ReplicatorTarget(fs, "/t").tree.hash  # its tree is the truth


def test_a_delta_from_another_version_than_the_targets_is_refused(target):
    fs, t = target
    other = FileNode.from_data(KIND_BYTES, HELD + b"x")
    error = _assert_refused_unchanged(fs, t, _delta_apply("d/f", HELD, NEW_HELD, other.hash[:8]))
    assert not isinstance(error, StaleContent)  # a lie, not a hand edit: nothing re-indexed


@pytest.mark.parametrize("path", ["d/none", "d", "d/g/x"])
def test_a_delta_at_a_path_without_a_file_is_refused(target, path):
    fs, t = target
    held = FileNode.from_data(KIND_BYTES, HELD)
    _assert_refused_unchanged(fs, t, _delta_apply(path, HELD, NEW_HELD, held.hash[:8]))


def test_a_delta_against_a_file_the_same_apply_removes_is_refused(target):
    fs, t = target
    held = FileNode.from_data(KIND_BYTES, HELD)
    frame = _delta_apply("d/f", HELD, NEW_HELD, held.hash[:8], removes=("d/f",))
    _assert_refused_unchanged(fs, t, frame)


def test_a_delta_made_against_other_bytes_is_caught_by_the_files_hash(target):
    """The target's version is the one named, but the delta was made against other bytes
    (mostly matches into them), so it expands to another file than its write's hash."""
    fs, t = target
    held = FileNode.from_data(KIND_BYTES, HELD)
    wrong = os.urandom(len(HELD))
    edited = wrong[:10_000] + b"delta" + wrong[10_005:]
    assert apply_delta(HELD, make_delta(wrong, edited), len(edited)) != edited
    _assert_refused_unchanged(fs, t, _delta_apply("d/f", wrong, edited, held.hash[:8]))


def test_a_delta_whose_size_is_not_its_writes_is_refused(target):
    fs, t = target
    held = FileNode.from_data(KIND_BYTES, HELD)
    frame = _delta_apply("d/f", HELD, NEW_HELD, held.hash[:8], size=len(NEW_HELD) + 1)
    _assert_refused_unchanged(fs, t, frame)


def test_a_delta_against_a_version_changed_by_hand_reindexes_it(target):
    """Named right, but the bytes under the target's tree are not those any more."""
    fs, t = target
    held = FileNode.from_data(KIND_BYTES, HELD)
    hand = HELD[:5000] + b"HAND" + HELD[5004:]
    fs.writefile("/t/d/f", hand)
    before = snapshot(fs, "/")
    with pytest.raises(StaleContent):
        t.handle_request(_delta_apply("d/f", HELD, NEW_HELD, held.hash[:8]))
    assert snapshot(fs, "/") == before
    assert t.tree.hash == ReplicatorTarget(fs, "/t").tree.hash  # re-indexed: the truth


@pytest.mark.parametrize("patch_min", [None, 1])
def test_a_disk_target_refusing_a_delta_keeps_its_file(tmp_path, patch_min):
    """Patched in place (``patch_min=1``), the wrong result was already written over the old
    version when its hash is checked: the undo journal must bring the old one back."""
    dst = tmp_path / "dst"
    (dst / "d").mkdir(parents=True)
    (dst / "d" / "f").write_bytes(HELD)
    t = ReplicatorTarget(DiskFileSystem(), str(dst), patch_min=patch_min)
    held = FileNode.from_data(KIND_BYTES, HELD)
    wrong = random.Random(4).randbytes(len(HELD))
    edited = wrong[:10_000] + b"delta" + wrong[10_005:]
    with pytest.raises(ProtocolError):
        t.handle_request(_delta_apply("d/f", wrong, edited, held.hash[:8]))
    assert (dst / "d" / "f").read_bytes() == HELD
    assert os.listdir(dst / ".merkle_sync" / "tmp") == []
    t.handle_request(_delta_apply("d/f", HELD, NEW_HELD, held.hash[:8]))  # and carries on
    assert (dst / "d" / "f").read_bytes() == NEW_HELD


@pytest.mark.parametrize("hand", ["delete", "directory"])
def test_a_delta_against_a_file_gone_from_a_disk_target_is_stale_content(tmp_path, hand):
    """The target's tree still lists the file: it went behind the target's back."""
    dst = tmp_path / "dst"
    (dst / "d").mkdir(parents=True)
    (dst / "d" / "f").write_bytes(HELD)
    t = ReplicatorTarget(DiskFileSystem(), str(dst))
    held = FileNode.from_data(KIND_BYTES, HELD)
    (dst / "d" / "f").unlink()
    if hand == "directory":
        (dst / "d" / "f").mkdir()
    with pytest.raises(StaleContent):
        t.handle_request(_delta_apply("d/f", HELD, NEW_HELD, held.hash[:8]))
    assert not isinstance(lookup(t.tree, "d/f"), FileNode)  # re-indexed: no file there


def test_a_delta_against_a_link_is_refused(tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    os.symlink("elsewhere", dst / "link")
    fs = DiskFileSystem()
    t = ReplicatorTarget(fs, str(dst))
    link = FileNode.from_data(KIND_LINK, b"elsewhere")
    assert link.hash == t.tree.children["link"].hash
    with pytest.raises(ProtocolError):
        t.handle_request(_delta_apply("link", b"elsewhere", b"elsewhere" * 100, link.hash[:8]))
    assert os.readlink(dst / "link") == "elsewhere"


# -- whole syncs on a disk ----------------------------------------------------------------
def _disk_world(tmp_path, text: str):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "big.txt").write_text(text)
    (src / "small.txt").write_text("small")
    return src, dst, DiskFileSystem()


def _restart(fs, src, dst, **kw) -> ReplicatorSource:
    return ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request, **kw)


def _hand_edit_same_size(path, at: int) -> None:
    """Another version of the same size, with the old mtime back."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[at : at + 4] = b"HAND"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("restart", [False, True])
def test_a_target_copy_edited_by_hand_never_gets_a_delta_applied_to_it(tmp_path, restart):
    """Running: the target's tree still lists the old version. Restarted: the stat identity
    (ctime) shows the edit. Either way the end result is the source, byte for byte."""
    text = _text(50_000)
    src, dst, fs = _disk_world(tmp_path, text)
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request)
    _hand_edit_same_size(dst / "d" / "big.txt", 10_000)
    (src / "d" / "big.txt").write_text(_edit(text, 25_000))
    if restart:
        source = _restart(fs, src, dst)
    else:
        source.handle_event(FileSystemEvent(str(src / "d" / "big.txt"), MODIFIED))
    assert (dst / "d" / "big.txt").read_bytes() == (src / "d" / "big.txt").read_bytes()
    assert same_tree(fs, str(src), fs, str(dst))


def test_a_target_copy_deleted_by_hand_under_a_running_target_is_replaced(tmp_path):
    text = _text(50_000)
    src, dst, fs = _disk_world(tmp_path, text)
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), target.handle_request)
    (dst / "d" / "big.txt").unlink()
    (src / "d" / "big.txt").write_text(_edit(text, 25_000))
    source.handle_event(FileSystemEvent(str(src / "d" / "big.txt"), MODIFIED))
    assert same_tree(fs, str(src), fs, str(dst))


@pytest.mark.parametrize("patch_min", [None, 1])
def test_an_edit_on_a_disk_target_goes_as_a_delta(tmp_path, patch_min):
    """Staged and renamed, or (``patch_min=1``) patched in place, where the old version is
    read back from the file being patched."""
    text = _text(50_000)
    src, dst, fs = _disk_world(tmp_path, text)
    target = ReplicatorTarget(fs, str(dst), patch_min=patch_min)
    source = ReplicatorSource(fs, str(src), target.handle_request)
    for i, at in enumerate((25_000, 49_000, 0), 1):
        text = _edit(text, at, f"e{i}")
        (src / "d" / "big.txt").write_text(text)
        source.handle_event(FileSystemEvent(str(src / "d" / "big.txt"), MODIFIED))
        assert source.stats.delta_files == i
        assert (dst / "d" / "big.txt").read_text() == text
    assert same_tree(fs, str(src), fs, str(dst))


def test_kept_copies_survive_a_restart_of_the_source(tmp_path):
    """They live in the source's index: a restarted source still sends the edit as a delta,
    twice in a row (the second against the version the first restart sent)."""
    text = _text(50_000)
    src, dst, fs = _disk_world(tmp_path, text)
    _restart(fs, src, dst)
    for i, at in enumerate((25_000, 40_000)):
        text = _edit(text, at, f"edit {i}")
        (src / "d" / "big.txt").write_text(text)
        source = _restart(fs, src, dst)
        assert source.stats.delta_files == 1
        assert source.stats.bytes_up < 1024
        assert same_tree(fs, str(src), fs, str(dst))


def test_a_restarted_source_keeping_nothing_sends_no_delta(tmp_path):
    """The control for the test above: it is the kept copy that makes the delta."""
    text = _text(50_000)
    src, dst, fs = _disk_world(tmp_path, text)
    _restart(fs, src, dst)
    (src / "d" / "big.txt").write_text(_edit(text, 25_000))
    source = _restart(fs, src, dst, keep=0)
    assert source.stats.delta_files == 0
    assert same_tree(fs, str(src), fs, str(dst))


def test_a_source_without_an_index_keeps_copies_in_memory_only(tmp_path):
    text = _text(50_000)
    src, dst, fs = _disk_world(tmp_path, text)
    source = ReplicatorSource(
        fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request, index=False
    )
    (src / "d" / "big.txt").write_text(_edit(text, 25_000))
    source.rescan()
    assert source.stats.delta_files == 1
    (src / "d" / "big.txt").write_text(_edit(text, 30_000))
    restarted = _restart(fs, src, dst, index=False)
    assert restarted.stats.delta_files == 0
    assert same_tree(fs, str(src), fs, str(dst))
