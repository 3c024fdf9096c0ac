"""Literals packed with the frame's context (``merkle_sync.context``): the codec, whole walks
that use it, and packed frames that lie about their context or their size."""

from __future__ import annotations

import random

import pytest

from merkle_sync import MemoryFileSystem, ProtocolError, ReplicatorSource, ReplicatorTarget
from merkle_sync.context import CONTEXT_MIN, pack_literals, unpack_literals
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.protocol import Apply
from merkle_sync.testing import same_tree, snapshot
from merkle_sync.wire import StreamDecoder, decode, encode


def _source_text(seed: int, lines: int) -> str:
    """Lines of code-like text: what an edited source tree's literals look like."""
    rng = random.Random(seed)
    words = ["self", "value", "index", "result", "node", "path", "items", "config", "data"]
    out = []
    for i in range(lines):
        a, b, c = (rng.choice(words) for _ in range(3))
        out.append(f"    def {a}_{b}_{i}(self, {c}):\n        return self.{a}.get({c!r}, {i})\n")
    return "".join(out)


def _annotate(text: str, every: int) -> str:
    """A dense edit, as when a codebase gains type annotations: every ``every``-th def."""
    lines = text.split("\n")
    for i in range(0, len(lines), 2 * every):
        lines[i] = lines[i].replace("):", ") -> object:")
    return "\n".join(lines)


# -- the codec ------------------------------------------------------------------------------
def test_packed_literals_inflate_to_exactly_what_was_packed():
    """Random contexts, and literals that are a piece of one with random bytes around (what
    an edit's literals are to the bytes around them), at the levels a sync uses. Packing may
    decline (then the literals travel plain), so this also checks that it rarely does."""
    rng = random.Random(7)
    packed_count = 0
    for i in range(120):
        context = rng.randbytes(rng.randint(CONTEXT_MIN, 8192))
        start = rng.randint(0, len(context) - 256)
        end = rng.randint(start + 256, len(context))
        literals = rng.randbytes(rng.randint(0, 64)) + context[start:end]
        literals += rng.randbytes(rng.randint(0, 64))
        level = (3, 6, 12, 16, 19)[i % 5]
        packed = pack_literals(context, literals, level)
        if packed is not None:
            packed_count += 1
            assert unpack_literals(context, packed, len(literals)) == literals
    assert packed_count >= 110


def test_a_context_holding_the_literals_neighbours_is_used_and_helps():
    text = _source_text(1, 400).encode()
    literals = text[5000:9000]
    context = text[:5000] + text[9000:]
    packed = pack_literals(context, literals, 12)
    assert packed is not None
    assert unpack_literals(context, packed, len(literals)) == literals


def test_no_context_or_an_unrelated_one_leaves_the_literals_unpacked():
    literals = _source_text(2, 100).encode()
    assert pack_literals(b"", literals, 12) is None
    assert pack_literals(bytes(range(256)) * 8, literals, 12) is None


def test_packed_literals_with_another_context_or_size_are_refused_or_differ():
    """The target never trusts the result: a wrong context gives an error or other bytes,
    which the file hash then refuses."""
    text = _source_text(3, 400).encode()
    literals, context = text[5000:9000], text[:5000] + text[9000:]
    packed = pack_literals(context, literals, 12)
    assert packed is not None
    for size in (len(literals) - 1, len(literals) + 1, 0):
        with pytest.raises(ProtocolError):
            unpack_literals(context, packed, size)
    for garbage in (b"", b"\x28\xb5\x2f\xfd", b"not zstd at all" * 4):
        with pytest.raises(ProtocolError):
            unpack_literals(context, garbage, len(literals))
    try:
        wrong = unpack_literals(context[::-1], packed, len(literals))
    except ProtocolError:
        return
    assert wrong != literals


# -- whole walks ----------------------------------------------------------------------------
def _frames(target):
    """An rpc that records each decoded request on its way to ``target``."""
    seen: list[object] = []
    decoder = StreamDecoder()

    def rpc(frame):
        seen.append(decoder.decode(frame))
        return target.handle_request(frame)

    return rpc, seen


def _tree(fs, root: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = f"{root}/{name}"
        fs.makedirs(path.rsplit("/", 1)[0])
        fs.writefile(path, text)


@pytest.mark.parametrize("disk", [False, True])
def test_a_walk_over_densely_edited_files_packs_its_literals(tmp_path, disk):
    """Old versions on the target, new ones on the source, no record: a walk. The edited
    leaves are refined and their literals packed against the held bytes around them."""
    fs = DiskFileSystem() if disk else MemoryFileSystem()
    base = str(tmp_path) if disk else "/w"
    old = {f"pkg/m{i}.py": _source_text(i, 600) for i in range(6)}
    new = {name: _annotate(text, 7) for name, text in old.items()}
    _tree(fs, f"{base}/dst", old)
    _tree(fs, f"{base}/src", new)
    target = ReplicatorTarget(fs, f"{base}/dst")
    rpc, seen = _frames(target)
    source = ReplicatorSource(fs, f"{base}/src", rpc, keep=0)
    assert same_tree(fs, f"{base}/src", fs, f"{base}/dst")
    applies = [m for m in seen if isinstance(m, Apply)]
    assert any(a.packed for a in applies)
    assert source.stats.bytes_up < sum(len(t) for t in new.values()) // 10


def test_packing_saves_bytes_against_the_same_walk_without_it(monkeypatch):
    """The measured point of it: the same walk with packing turned off sends more."""
    import merkle_sync.frames as frames

    sent = []
    for pack in (True, False):
        if not pack:
            monkeypatch.setattr(frames, "pack_literals", lambda *a: None)
        fs = MemoryFileSystem()
        old = {f"m{i}.py": _source_text(10 + i, 600) for i in range(6)}
        _tree(fs, "/w/dst", old)
        _tree(fs, "/w/src", {n: _annotate(t, 7) for n, t in old.items()})
        target = ReplicatorTarget(fs, "/w/dst")
        source = ReplicatorSource(fs, "/w/src", target.handle_request, keep=0)
        assert same_tree(fs, "/w/src", fs, "/w/dst")
        sent.append(source.stats.bytes_up)
    assert sent[0] < sent[1]


# -- packed frames that lie -----------------------------------------------------------------
def _captured_packed_apply():
    """A target that answered an honest walk, and the packed apply it was about to get."""
    fs = MemoryFileSystem()
    old = {f"m{i}.py": _source_text(20 + i, 600) for i in range(6)}
    _tree(fs, "/w/dst", old)
    _tree(fs, "/w/src", {n: _annotate(t, 7) for n, t in old.items()})
    target = ReplicatorTarget(fs, "/w/dst")
    captured: list[Apply] = []

    def rpc(frame):
        msg = decode(frame) if frame[:1] not in (b"\x01", b"\x02") else None
        if isinstance(msg, Apply) and msg.packed:
            captured.append(msg)
            raise ConnectionError("held back")
        return target.handle_request(frame)

    with pytest.raises(ConnectionError):
        ReplicatorSource(fs, "/w/src", rpc, keep=0, compression=0)
    assert captured
    return fs, target, captured[0]


def _refused_unchanged(fs, target, frame) -> None:
    before = snapshot(fs, "/w/dst")
    root = target.tree.hash
    with pytest.raises(ProtocolError):
        target.handle_request(frame)
    assert snapshot(fs, "/w/dst") == before
    assert target.tree.hash == root


def test_packed_literals_that_do_not_match_their_context_change_nothing():
    fs, target, apply = _captured_packed_apply()
    flipped = bytearray(apply.literals)
    flipped[len(flipped) // 2] ^= 0xFF
    tampered = _replace(apply, literals=bytes(flipped))
    _refused_unchanged(fs, target, encode(tampered))


def test_packed_literals_that_claim_another_size_change_nothing():
    fs, target, apply = _captured_packed_apply()
    sizes = list(apply.literal_sizes)
    sizes[0] += 1
    _refused_unchanged(fs, target, encode(_replace(apply, literal_sizes=tuple(sizes))))


def test_the_honest_packed_apply_is_applied():
    """The control for the two refusals above."""
    fs, target, apply = _captured_packed_apply()
    target.handle_request(encode(apply))
    assert same_tree(fs, "/w/src", fs, "/w/dst")


def _replace(apply: Apply, **changes) -> Apply:
    fields = {name: getattr(apply, name) for name in apply.__slots__}
    fields.update(changes)
    return Apply(**fields)


def test_a_packed_frame_naming_a_huge_held_node_reads_nothing_of_it():
    """The context is bounded before anything is read: a small file's recipe that names a
    20 MiB node the target confirmed would make a naive target read it all into memory."""
    from merkle_sync.context import CONTEXT_MAX
    from merkle_sync.merkle import FileNode
    from merkle_sync.protocol import Walk, Write

    fs = MemoryFileSystem()
    big = random.Random(5).randbytes(CONTEXT_MAX + (1 << 20))
    fs.makedirs("/t")
    fs.writefile("/t/big.bin", big)
    target = ReplicatorTarget(fs, "/t")
    tree = FileNode.from_data(1, big).tree
    root = tree.hash(tree.height - 1, 0)
    target.handle_request(encode(Walk(8, b"", (), (root[:8],))))  # confirmed: position -1
    reads = fs.get_num_operations("readfile")
    literals = b"x" * 100
    write = Write("small.bin", 1, 100, b"\0" * 8, (-1, 1))
    hostile = Apply(8, b"", (), (), (write,), (100,), literals, packed=True)
    with pytest.raises(ProtocolError):
        target.handle_request(encode(hostile))
    assert fs.get_num_operations("readfile") == reads
    assert not fs.exists("/t/small.bin")
