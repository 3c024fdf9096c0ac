"""The content-defined hash tree of one file, stored compactly (pure, no I/O).

Each level is one ``bytes`` of packed 32-byte hashes and an ``array('Q')`` of byte offsets,
so a tree costs about 40 bytes per leaf (a 4 GiB file: about 21 MiB) and a one-leaf file a
few hundred bytes, instead of a Python object per node. A node closes after a child whose
hash has its low four bits clear (average fanout 16, at most 64), so an edit anywhere changes
one leaf-to-root path only.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator

from merkle_sync.chunking import Reader, cut_leaves, leaf_hash, node_hash, stream_leaves

HASH = 32
#: A node closes after a child whose hash has these low bits clear: average fanout 16.
FANOUT_MASK = 0x0F
#: A node never takes more children than this, so one node's listing stays bounded.
FANOUT_MAX = 64
#: Leaves have no children: one shared empty array (never written) for every tree.
_NO_FIRSTS = array("Q")


class ContentTree:
    """Levels of hashes from leaves (level 0) to the single root."""

    __slots__ = ("_ends", "_firsts", "_hashes")

    def __init__(
        self, hashes: tuple[bytes, ...], ends: tuple[array, ...], firsts: tuple[array, ...]
    ) -> None:
        self._hashes = hashes
        #: ``_ends[k][i]``: byte offset where node ``i`` of level ``k`` ends.
        self._ends = ends
        #: ``_firsts[k][i]`` (k >= 1): index in level ``k-1`` of node ``i``'s first child.
        self._firsts = firsts

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyTree):
            return other == self
        return isinstance(other, ContentTree) and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def root(self) -> bytes:
        return self._hashes[-1]

    @property
    def size(self) -> int:
        return self._ends[0][-1]

    @property
    def height(self) -> int:
        return len(self._hashes)

    def count(self, level: int) -> int:
        return len(self._ends[level])

    def hash(self, level: int, index: int) -> bytes:
        return self._hashes[level][index * HASH : index * HASH + HASH]

    def level(self, level: int) -> list[bytes]:
        """All hashes of one level (for tests and small trees)."""
        packed = self._hashes[level]
        return [packed[i : i + HASH] for i in range(0, len(packed), HASH)]

    def leaf_ends(self) -> array:
        return self._ends[0]

    def leaf_hashes(self) -> bytes:
        """The leaf level, packed: with ``leaf_ends`` all a tree needs to be rebuilt."""
        return self._hashes[0]

    def span(self, level: int, index: int) -> tuple[int, int]:
        """Byte range ``[start, end)`` that a node covers."""
        ends = self._ends[level]
        return (ends[index - 1] if index else 0), ends[index]

    def children(self, level: int, index: int) -> range:
        """Indices in ``level - 1`` of a node's children."""
        firsts = self._firsts[level]
        stop = firsts[index + 1] if index + 1 < len(firsts) else len(self._ends[level - 1])
        return range(firsts[index], stop)

    def leaf_range(self, level: int, index: int) -> range:
        """Indices of the leaves below a node."""
        start, end = self.span(level, index)
        ends = self._ends[0]
        return range(bisect_right(ends, start), bisect_right(ends, end))

    def leaf_at(self, offset: int) -> int:
        """Index of the leaf holding byte ``offset``."""
        return bisect_right(self._ends[0], offset)

    def nodes(self) -> Iterator[tuple[bytes, int, int]]:
        """Every ``(hash, level, index)``, root first, for indexing."""
        for level in range(len(self._hashes) - 1, -1, -1):
            packed = self._hashes[level]
            for index in range(len(packed) // HASH):
                yield packed[index * HASH : index * HASH + HASH], level, index

    def nbytes(self) -> int:
        """Memory held by the packed levels, for reports."""
        return sum(len(h) + 16 * len(e) for h, e in zip(self._hashes, self._ends, strict=True))


class LazyTree:
    """A content tree loaded on first use: a restart keeps unchanged files' trees on disk.

    Behaves as the ``ContentTree`` it loads (every attribute is forwarded to it).
    """

    __slots__ = ("_load", "_tree")

    def __init__(self, load: Callable[[], ContentTree]) -> None:
        self._load: Callable[[], ContentTree] | None = load
        self._tree: ContentTree | None = None

    def __getattr__(self, name: str) -> object:
        tree = self._tree
        if tree is None:
            assert self._load is not None
            tree = self._tree = self._load()
            self._load = None
        return getattr(tree, name)

    def __eq__(self, other: object) -> bool:
        return self.root == getattr(other, "root", None)

    def __hash__(self) -> int:
        return hash(self.root)


class TreeBuilder:
    """Collects leaves in order (hashed here, or taken from another tree) and builds the tree."""

    __slots__ = ("_ends", "_hashes", "size")

    def __init__(self) -> None:
        self._hashes = bytearray()
        self._ends = array("Q")
        self.size = 0

    def leaf(self, digest: bytes, length: int) -> None:
        self._hashes += digest
        self.size += length
        self._ends.append(self.size)

    def data(self, data: bytes | memoryview) -> None:
        """One leaf made of exactly these bytes."""
        self.leaf(leaf_hash(data), len(data))

    def graft(self, tree: ContentTree, level: int, index: int) -> None:
        """The leaves below a node of another tree, without touching their bytes."""
        leaves = tree.leaf_range(level, index)
        start = tree.span(level, index)[0]
        ends = tree.leaf_ends()
        packed = tree._hashes[0]
        self._hashes += packed[leaves.start * HASH : leaves.stop * HASH]
        shift = self.size - start
        self._ends.extend(ends[i] + shift for i in leaves)
        self.size = self._ends[-1] if len(self._ends) else 0

    def finish(self) -> ContentTree:
        if not self._ends:
            self.leaf(leaf_hash(b""), 0)
        return tree_from_leaves(bytes(self._hashes), self._ends)


def tree_from_leaves(level: bytes, leaf_ends: array) -> ContentTree:
    """The tree above a leaf level: only node hashes are computed, no content is read."""
    hashes, ends, firsts = [level], [leaf_ends], [_NO_FIRSTS]
    while len(level) > HASH:
        starts = _group(level)
        child_ends = ends[-1]
        stops = [*starts[1:], len(level) // HASH]
        level = b"".join(
            node_hash(level[a * HASH : b * HASH]) for a, b in zip(starts, stops, strict=True)
        )
        hashes.append(level)
        ends.append(array("Q", (child_ends[b - 1] for b in stops)))
        firsts.append(array("Q", starts))
    return ContentTree(tuple(hashes), tuple(ends), tuple(firsts))


def _group(packed: bytes) -> list[int]:
    """Start indices of parent groups, decided by the children's hashes alone."""
    lasts = packed[HASH - 1 :: HASH]  # the last byte of every hash
    firsts = [0]
    count = 0
    final = len(lasts) - 1
    for i, byte in enumerate(lasts):
        count += 1
        if i != final and (byte & FANOUT_MASK == 0 or count == FANOUT_MAX):
            firsts.append(i + 1)
            count = 0
    return firsts


def build_tree(data: bytes | memoryview) -> ContentTree:
    """Chunk and hash an in-memory buffer into its content tree."""
    builder = TreeBuilder()
    for digest, length in cut_leaves(data):
        builder.leaf(digest, length)
    return builder.finish()


def stream_tree(read: Reader) -> ContentTree:
    """The same tree as :func:`build_tree`, reading the content a window at a time."""
    builder = TreeBuilder()
    for digest, length in stream_leaves(read):
        builder.leaf(digest, length)
    return builder.finish()
