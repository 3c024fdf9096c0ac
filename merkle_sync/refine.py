"""Refining a changed leaf into sub-chunks the target may still hold nearby (pure).

A leaf is about 8 KiB; a one-line edit changes one leaf, and sending it whole would send
8 KiB for a few bytes. So the leaf is cut into sub-chunks (about 256 bytes, content-defined,
see ``merkle_sync.chunking``) and the target is asked which of them it has in its old
version of the same file around the same place: the span of the old file it cuts is named in
the request, so the target never searches more than it is told. What the target would read
for all spans of one request stays within ``MAX_BASIS_READ``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from blake3 import blake3

from merkle_sync.checks import PROBE_CHECK, probe_hash_len
from merkle_sync.chunking import CHUNK_AVG, CHUNK_MAX, sub_chunks
from merkle_sync.cover import missing_leaves
from merkle_sync.merkle import FileNode
from merkle_sync.protocol import MAX_BASIS, MAX_BASIS_READ, Span

#: Missing leaves at least this large are refined into sub-chunks against the old leaves
#: around the same place, when the file changed in at most REFINE_MAX_LEAVES leaves.
REFINE_MIN = 2048
REFINE_MAX_LEAVES = 64
#: What the target reads for one basis span at most: the span widened to whole leaves.
_SPAN_READ = 2 * CHUNK_AVG + 2 * CHUNK_MAX

SubChunk = tuple[bytes, int, int]  # (hash, start, end) of a sub-chunk


@dataclass
class Probed:
    """One refined leaf: the ``k``-th of the probe, its sub-chunks and which the target has.

    The apply names it ``(0, k, m)``: the target rebuilds it from its own answer to the
    probe, so neither the sub-chunk hashes nor their positions travel a second time.
    """

    k: int
    parts: list[SubChunk]
    found: list[bool] = field(default_factory=list)

    def literals(self) -> list[tuple[int, int]]:
        """The ranges of the sub-chunks the target lacks, in order."""
        return [(a, b) for (_, a, b), hit in zip(self.parts, self.found, strict=True) if not hit]


def refine(
    edited: Iterable[tuple[str, FileNode]],
    hash_len: int,
    held: Callable[[bytes], bool],
    read: Callable[[str, int, int], bytes],
    refined: dict[bytes, Probed],
) -> tuple[tuple[bytes, ...], tuple[Span, ...]]:
    """The probe (per leaf, its sub-chunks' ``probe_hash_len`` hashes) and the old spans to
    look in, one per leaf; ``refined`` gets each leaf's ``Probed`` by its short hash.

    The span around each leaf is wide enough for small shifts; the target widens it to whole
    leaves of its own file and cuts those, just as each new leaf is cut here.
    """
    n = hash_len
    width = probe_hash_len(hash_len)
    probe: list[bytes] = []
    spans: list[Span] = []
    budget = MAX_BASIS_READ
    for rel, node in edited:
        missing = missing_leaves(node.tree, n, held)
        big = [(i, a, b) for i, a, b in missing if b - a >= REFINE_MIN]
        if not big or len(missing) > REFINE_MAX_LEAVES:
            continue
        for i, a, b in big:
            budget -= b - a + _SPAN_READ
            key = node.tree.hash(0, i)[:n]
            if budget < 0 or len(spans) == MAX_BASIS:
                return tuple(probe), tuple(spans)
            if key in refined:
                continue  # the same leaf in another file: one probe serves both
            parts = [(h, a + s, a + e) for h, s, e in sub_chunks(read(rel, a, b))]
            refined[key] = Probed(len(probe), parts)
            probe.append(b"".join(h[:width] for h, _, _ in parts))
            spans.append(Span(rel, max(a - CHUNK_AVG, 0), b + CHUNK_AVG))
    return tuple(probe), tuple(spans)


def answer(
    refined: dict[bytes, Probed], bits: Callable[[int], bool], first: int, checks: bytes
) -> int:
    """Record the target's answers, which start at bit ``first`` of its bitmap, in order.

    A leaf whose check (``WalkReply.checks``: one for each leaf with hits) disagrees with the
    sub-chunks found for it had a short hash meet the wrong old bytes: it leaves ``refined``
    and is sent as a whole leaf of literals (the target's answer for it is never named).
    Returns how many leaves that was."""
    at, wrong = first, []
    for key, probed in sorted(refined.items(), key=lambda item: item[1].k):
        probed.found = [bits(at + i) for i in range(len(probed.parts))]
        at += len(probed.parts)
        hits = [h for (h, _, _), hit in zip(probed.parts, probed.found, strict=True) if hit]
        if hits:  # a check for each leaf with hits, in order
            theirs, checks = checks[:PROBE_CHECK], checks[PROBE_CHECK:]
            if theirs != probe_check(hits):
                wrong.append(key)
    for key in wrong:
        del refined[key]
    return len(wrong)


def probe_check(found: list[bytes]) -> bytes:
    """What both sides compute of the full hashes of the sub-chunks found for one refined
    leaf (``WalkReply.checks``)."""
    return blake3(b"".join(found)).digest()[:PROBE_CHECK]
