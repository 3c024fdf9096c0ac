"""Chunk boundaries and content-tree hashes are wire format: pinned here with fixed vectors."""

from __future__ import annotations

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from merkle_sync.chunking import CHUNK_MAX, build_tree, chunk_ends, leaf_hash, node_hash

VECTOR = blake3(b"merkle_sync vector").digest(length=1 << 17)
VECTOR_ENDS = [
    2306, 4999, 7185, 10687, 12670, 14874, 16977, 19386, 22542, 24612, 27787, 29709, 32069,
    34750, 37716, 39927, 41978, 42964, 45278, 47914, 50264, 52718, 54871, 59149, 61560, 63963,
    64975, 67052, 69424, 71518, 76025, 78163, 79763, 82153, 84507, 86864, 89325, 92951, 95476,
    98205, 100349, 102254, 104334, 105191, 108089, 109511, 111248, 111636, 116261, 118490,
    120588, 123552, 125606, 127835, 130428, 131072,
]  # fmt: skip


def test_chunk_boundaries_are_pinned():
    assert chunk_ends(VECTOR) == VECTOR_ENDS


def test_tree_hashes_are_pinned():
    tree = build_tree(VECTOR)
    assert [len(level) for level in tree.levels] == [56, 2, 1]
    assert tree.root.hex() == "f4b4cbcdb1778ac1f8229a970dd42cb02220749b65b0c41ea8c2cf7f333a63c2"
    assert build_tree(b"").root.hex() == (
        "280e9b8db25be7a48a9a338e0bc1015bdd25cfc29672a069dc1cf31a5ef9ca83"
    )
    assert build_tree(b"hello").root == leaf_hash(b"hello")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=40_000), st.data())
def test_tree_structure_is_consistent(data, draw):
    tree = build_tree(data)
    assert tree.size == len(data)
    assert (
        all(0 < b - a <= CHUNK_MAX for a, b in zip([0, *tree.ends[0]], tree.ends[0], strict=False))
        or not data
    )
    for level in range(1, tree.height):
        for i, h in enumerate(tree.levels[level]):
            kids = tree.children(level, i)
            assert h == node_hash([tree.levels[level - 1][c] for c in kids])
            assert tree.span(level, i) == (
                tree.span(level - 1, kids[0])[0],
                tree.span(level - 1, kids[-1])[1],
            )
    for i, h in enumerate(tree.levels[0]):
        a, b = tree.span(0, i)
        assert h == leaf_hash(data[a:b])


def test_an_edit_changes_one_path_and_keeps_the_rest():
    data = blake3(b"edit").digest(length=4 << 20)
    edited = data[: 2 << 20] + b"X" + data[(2 << 20) + 1 :]
    before, after = build_tree(data), build_tree(edited)
    for level in range(min(before.height, after.height)):
        changed = set(after.levels[level]) - set(before.levels[level])
        assert 1 <= len(changed) <= 2, (level, len(changed))
    inserted = build_tree(b"y" * 100 + data)
    assert len(set(inserted.levels[0]) - set(before.levels[0])) == 1
