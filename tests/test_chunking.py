"""Chunk boundaries and content-tree hashes are wire format: pinned here with fixed vectors."""

from __future__ import annotations

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from merkle_sync.chunking import CHUNK_MAX, leaf_hash, node_hash, sub_chunks
from merkle_sync.contenttree import build_tree

VECTOR = blake3(b"merkle_sync vector").digest(length=1 << 20)
VECTOR_ENDS = [
    10231, 22793, 29709, 40875, 42964, 52508, 64975, 73460, 74685, 79763, 88593, 100451,
    109511, 111248, 124368, 137035, 145355, 153752, 161708, 169914, 178230, 187179, 202334,
    213575, 222838, 225478, 234166, 243926, 253665, 262144,
]  # fmt: skip
SUB_ENDS = [
    201, 269, 1107, 1245, 1664, 2232, 3256, 3413, 4437, 4618, 4778, 4924, 5476, 5623, 5861,
    6722, 6987, 7176, 7844, 8169, 8192,
]  # fmt: skip


def test_chunk_boundaries_are_pinned():
    assert list(build_tree(VECTOR[: 1 << 18]).leaf_ends()) == VECTOR_ENDS
    assert [end for _, _, end in sub_chunks(VECTOR[:8192])] == SUB_ENDS


def test_tree_hashes_are_pinned():
    tree = build_tree(VECTOR)
    assert [tree.count(level) for level in range(tree.height)] == [121, 7, 1]
    assert tree.root.hex() == "fc2bce9c41e466921040b6421764776071007a3c858047e39b7c12099965eff3"
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
        all(
            0 < b - a <= CHUNK_MAX
            for a, b in zip([0, *tree.leaf_ends()], tree.leaf_ends(), strict=False)
        )
        or not data
    )
    for level in range(1, tree.height):
        for i, h in enumerate(tree.level(level)):
            kids = tree.children(level, i)
            assert h == node_hash(b"".join(tree.hash(level - 1, c) for c in kids))
            assert tree.span(level, i) == (
                tree.span(level - 1, kids[0])[0],
                tree.span(level - 1, kids[-1])[1],
            )
    for i, h in enumerate(tree.level(0)):
        a, b = tree.span(0, i)
        assert h == leaf_hash(data[a:b])


def test_an_edit_changes_one_path_and_keeps_the_rest():
    data = blake3(b"edit").digest(length=4 << 20)
    edited = data[: 2 << 20] + b"X" + data[(2 << 20) + 1 :]
    before, after = build_tree(data), build_tree(edited)
    for level in range(min(before.height, after.height)):
        changed = set(after.level(level)) - set(before.level(level))
        assert 1 <= len(changed) <= 2, (level, len(changed))
    inserted = build_tree(b"y" * 100 + data)
    assert len(set(inserted.level(0)) - set(before.level(0))) == 1
