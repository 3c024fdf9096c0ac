"""What content the target holds and where: its files' trees, plus removed files kept for reuse.

Every node of every file tree (leaves and inner nodes) is found by the first 8 bytes of its
hash. Entries are packed ints (file id, level, index) in an open-addressing table of two
``array('Q')``: 16 bytes a slot, at most half of them in use, so a 4 GiB file (560,000
nodes) costs 17-34 MiB of index where a dict of ints cost about 80 MiB.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from merkle_sync.merkle import FileNode

_Ref = int  # file id << 40 | level << 32 | index
Location = tuple[str, FileNode, int, int]  # (rel path or grave key, file, level, index)
_EMPTY, _TOMB = 0, 1
_MIN_SLOTS = 1 << 10


def _key(h: bytes) -> int:
    key = int.from_bytes(h[:8], "little")
    return key if key > _TOMB else key + 2  # 0 and 1 mark free slots; hashes are checked


class _Table:
    """uint64 key -> uint64 refs, linear probing. A key held in several places (the same
    content twice) keeps its further refs in ``extra``, so no probe run grows with copies."""

    def __init__(self) -> None:
        self.extra: dict[int, set[int]] = {}
        self.count = 0
        self._alloc(_MIN_SLOTS)

    def _alloc(self, slots: int) -> None:
        self.keys = array("Q", bytes(8 * slots))
        self.refs = array("Q", bytes(8 * slots))
        self.mask = slots - 1
        self.used = 0  # live keys and tombstones

    def get(self, key: int) -> list[int]:
        keys, mask = self.keys, self.mask
        i = key & mask
        while (k := keys[i]) != _EMPTY:
            if k == key:
                return [self.refs[i], *self.extra.get(key, ())]
            i = (i + 1) & mask
        return []

    def add(self, key: int, ref: int) -> None:
        keys, mask = self.keys, self.mask
        i = key & mask
        tomb = -1
        while (k := keys[i]) != _EMPTY:
            if k == key:
                self.extra.setdefault(key, set()).add(ref)
                return
            if k == _TOMB and tomb < 0:
                tomb = i
            i = (i + 1) & mask
        if tomb >= 0:
            i = tomb
        else:
            self.used += 1
        keys[i] = key
        self.refs[i] = ref
        self.count += 1
        if 2 * self.used > len(keys):
            self._resize()

    def remove(self, key: int, ref: int) -> None:
        keys, mask = self.keys, self.mask
        i = key & mask
        while (k := keys[i]) != _EMPTY:
            if k == key:
                more = self.extra.get(key)
                if self.refs[i] != ref:
                    if more is not None:
                        more.discard(ref)
                elif more:
                    self.refs[i] = more.pop()
                else:
                    keys[i] = _TOMB
                    self.count -= 1
                if more is not None and not more:
                    del self.extra[key]
                return  # tombstones are dropped by the next resize
            i = (i + 1) & mask

    def _resize(self) -> None:
        """Room for four times the live keys (tombstones dropped), filled slot by slot."""
        old_keys, old_refs = self.keys, self.refs
        slots = _MIN_SLOTS
        while slots < 4 * self.count:
            slots *= 2
        self._alloc(slots)
        keys, refs, mask = self.keys, self.refs, self.mask
        for j, k in enumerate(old_keys):
            if k > _TOMB:
                i = k & mask
                while keys[i] != _EMPTY:
                    i = (i + 1) & mask
                keys[i] = k
                refs[i] = old_refs[j]
        self.used = self.count


class ContentIndex:
    """Short hash -> a place in a held file where that content lives."""

    def __init__(self) -> None:
        self._table = _Table()
        self._ids: dict[str, int] = {}
        self._files: dict[int, tuple[str, FileNode]] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return self._table.count

    def add(self, rel: str, node: FileNode) -> None:
        if rel in self._ids:
            self.remove(rel)
        fid = self._next_id
        self._next_id += 1
        self._ids[rel] = fid
        self._files[fid] = (rel, node)
        add = self._table.add
        for h, level, index in node.tree.nodes():
            add(_key(h), fid << 40 | level << 32 | index)

    def remove(self, rel: str) -> None:
        fid = self._ids.pop(rel, None)
        if fid is None:
            return
        _, node = self._files.pop(fid)
        remove = self._table.remove
        for h, level, index in node.tree.nodes():
            remove(_key(h), fid << 40 | level << 32 | index)

    def rename(self, rel: str, new: str) -> None:
        """The same file now lives at ``new`` (a grave): nothing is re-keyed."""
        fid = self._ids.pop(rel, None)
        if fid is not None:
            self._ids[new] = fid
            self._files[fid] = (new, self._files[fid][1])

    def find(self, short: bytes) -> Location | None:
        """A node whose full hash starts with ``short``, wherever it is."""
        for ref in self._table.get(_key(short)):
            rel, node = self._files[ref >> 40]
            level, index = ref >> 32 & 0xFF, ref & 0xFFFFFFFF
            if node.tree.hash(level, index).startswith(short):
                return rel, node, level, index
        return None


class Graves:
    """Removed files whose content stays reusable, oldest first, within a byte budget.

    A rename arrives as a removal and then an addition, and an apply stream may overwrite a
    file whose old pieces a later frame names, so removed content is kept a while. Keys start
    with NUL, which no real name contains. ``keep(key, node)`` stores the content (in memory
    or, on a disk, by moving the file aside) and ``drop(key)`` frees it.
    """

    def __init__(self, index: ContentIndex, budget: int, drop: Callable[[str], None]) -> None:
        self.index = index
        self.budget = budget
        self._drop = drop
        self._sizes: dict[str, int] = {}
        self.used = 0
        self._seq = 0

    def new_key(self) -> str:
        self._seq += 1
        return f"\0{self._seq}"

    def fits(self, size: int) -> bool:
        return 0 < size <= self.budget

    def add(self, key: str, node: FileNode) -> None:
        """Count a grave already in the index (moved there with ``ContentIndex.rename``)."""
        self._sizes[key] = node.tree.size
        self.used += node.tree.size

    def trim(self, budget: int) -> None:
        """Forget the oldest graves until at most ``budget`` bytes are kept."""
        while self.used > budget and self._sizes:
            key = next(iter(self._sizes))
            self.used -= self._sizes.pop(key)
            self.index.remove(key)
            self._drop(key)

    def __contains__(self, key: str) -> bool:
        return key in self._sizes
