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

from merkle_sync.chunking import CHUNK_AVG, CHUNK_MAX, sub_chunks
from merkle_sync.cover import missing_leaves
from merkle_sync.merkle import FileNode
from merkle_sync.protocol import MAX_BASIS_READ, Span

#: Missing leaves at least this large are refined into sub-chunks against the old leaves
#: around the same place, when the file changed in at most REFINE_MAX_LEAVES leaves.
REFINE_MIN = 2048
REFINE_MAX_LEAVES = 64
#: What the target reads for one basis span at most: the span widened to whole leaves.
_SPAN_READ = 2 * CHUNK_AVG + 2 * CHUNK_MAX

SubChunk = tuple[bytes, int, int]  # (short hash, start, end) of a sub-chunk


def refine(
    edited: Iterable[tuple[str, FileNode]],
    hash_len: int,
    held: Callable[[bytes], bool],
    read: Callable[[str, int, int], bytes],
    refined: dict[bytes, list[SubChunk]],
) -> tuple[list[bytes], tuple[Span, ...]]:
    """The sub-chunk hashes to ask about and the old spans to look in; ``refined`` gets each
    refined leaf's sub-chunks by the leaf's short hash.

    The span around each leaf is wide enough for small shifts; the target widens it to whole
    leaves of its own file and cuts those, just as each new leaf is cut here.
    """
    n = hash_len
    wants: dict[bytes, None] = {}
    spans: list[Span] = []
    budget = MAX_BASIS_READ
    for rel, node in edited:
        missing = missing_leaves(node.tree, n, held)
        big = [(i, a, b) for i, a, b in missing if b - a >= REFINE_MIN]
        if not big or len(missing) > REFINE_MAX_LEAVES:
            continue
        for i, a, b in big:
            budget -= b - a + _SPAN_READ
            if budget < 0:
                break
            data = read(rel, a, b)
            parts = [(h[:n], a + s, a + e) for h, s, e in sub_chunks(data)]
            refined[node.tree.hash(0, i)[:n]] = parts
            wants.update((p[0], None) for p in parts)
            spans.append(Span(rel, max(a - CHUNK_AVG, 0), b + CHUNK_AVG))
    return list(wants), tuple(spans)
