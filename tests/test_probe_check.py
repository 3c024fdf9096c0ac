"""Short probe hashes are checked per refined leaf, so a false match costs that leaf's bytes,
not a repair walk with full hashes."""

from __future__ import annotations

import random

import pytest

from merkle_sync import (
    MemoryFileSystem,
    ReplicatorSource,
    ReplicatorTarget,
    checks,
    protocol,
    refine,
    session,
)
from merkle_sync.protocol import FULL_HASH, WalkReply
from merkle_sync.refine import Probed, answer, probe_check
from merkle_sync.testing import MeteredRpc, same_tree

WORDS = [f"w{i}" for i in range(400)]


def text(rng: random.Random, size: int) -> bytes:
    out = []
    while sum(map(len, out)) < size:
        out.append(" ".join(rng.choice(WORDS) for _ in range(12)) + "\n")
    return "".join(out).encode()[:size]


def edited(data: bytes, rng: random.Random, edits: int) -> bytes:
    buf = bytearray(data)
    for _ in range(edits):
        at = rng.randrange(len(buf) - 8)
        buf[at : at + 4] = b"EDIT"
    return bytes(buf)


def walk_after_edits(width: int, monkeypatch) -> tuple[list[int], list[int], MeteredRpc]:
    """A target holding old versions, a source with edited ones, probe hashes of ``width``
    bytes; returns the leaves each answer found wrong and the hash lengths of the sessions."""
    monkeypatch.setattr(checks, "SUB_HASH", width)
    rng = random.Random(5)
    src, dst = MemoryFileSystem(), MemoryFileSystem()
    src.makedirs("/src")
    dst.makedirs("/dst")
    for i in range(6):
        old = text(rng, 60_000)
        dst.writefile(f"/dst/f{i}.txt", old)
        src.writefile(f"/src/f{i}.txt", edited(old, rng, 6))
    wrong: list[int] = []

    def counted(*args):
        wrong.append(answer(*args))
        return wrong[-1]

    monkeypatch.setattr(session, "answer", counted)
    lengths: list[int] = []
    make = ReplicatorSource._session

    def recorded(self, hash_len):
        lengths.append(hash_len)
        return make(self, hash_len)

    monkeypatch.setattr(ReplicatorSource, "_session", recorded)
    rpc = MeteredRpc(ReplicatorTarget(dst, "/dst").handle_request)
    ReplicatorSource(src, "/src", rpc)
    assert same_tree(src, "/src", dst, "/dst")
    return wrong, lengths, rpc


def test_one_byte_probes_meet_wrong_sub_chunks_and_the_check_catches_them(monkeypatch):
    # so many false matches would let one in 256 through a 1-byte check: checks of 4 here
    monkeypatch.setattr(refine, "PROBE_CHECK", 4)
    monkeypatch.setattr(protocol, "PROBE_CHECK", 4)
    wrong, lengths, _ = walk_after_edits(1, monkeypatch)
    assert sum(wrong) >= 3  # one byte among ~60 sub-chunks per span: false matches abound
    assert FULL_HASH not in lengths  # caught by the checks, not by the file hash


def test_three_byte_probes_send_fewer_bytes_than_four(monkeypatch):
    wrong3, lengths3, rpc3 = walk_after_edits(3, monkeypatch)
    wrong4, lengths4, rpc4 = walk_after_edits(4, monkeypatch)
    assert sum(wrong3) == sum(wrong4) == 0 and FULL_HASH not in lengths3 + lengths4
    assert rpc3.total < rpc4.total


def test_a_leaf_whose_check_disagrees_is_sent_whole():
    parts = [(bytes([i]) * 32, i * 10, i * 10 + 10) for i in range(4)]
    refined = {b"k": Probed(0, list(parts))}
    found = {0, 2}
    right = probe_check([parts[0][0], parts[2][0]])
    assert answer(refined, lambda i: i in found, 0, right) == 0
    assert refined[b"k"].found == [True, False, True, False]
    wrong = bytes([right[0] ^ 1])
    assert answer(refined, lambda i: i in found, 0, wrong) == 1
    assert refined == {}  # the leaf goes whole, as if it had not been refined


@pytest.mark.parametrize("checks_value", [b"\x00" * (4096 + 1), "ab", [b"a"]])
def test_a_reply_with_malformed_checks_is_refused(checks_value):
    from merkle_sync.protocol import ProtocolError

    with pytest.raises(ProtocolError):
        WalkReply(False, (), b"", 0, b"", checks_value)
