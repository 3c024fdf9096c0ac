"""What content the target holds and where: its files' trees, plus removed files kept for reuse.

Every node of every file tree (leaves and inner nodes) is found by the first 8 bytes of its
hash. Entries are packed ints (file id, level, index), about 100 bytes per node, so a 4 GiB
file costs about 55 MiB of index and a one-leaf file a few hundred bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from merkle_sync.merkle import FileNode

_Ref = int  # file id << 40 | level << 32 | index
Location = tuple[str, FileNode, int, int]  # (rel path or grave key, file, level, index)


def _key(h: bytes) -> int:
    return int.from_bytes(h[:8], "little")


class ContentIndex:
    """Short hash -> a place in a held file where that content lives."""

    def __init__(self) -> None:
        self._by_key: dict[int, _Ref | set[_Ref]] = {}
        self._ids: dict[str, int] = {}
        self._files: dict[int, tuple[str, FileNode]] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, rel: str, node: FileNode) -> None:
        if rel in self._ids:
            self.remove(rel)
        fid = self._next_id
        self._next_id += 1
        self._ids[rel] = fid
        self._files[fid] = (rel, node)
        by_key = self._by_key
        for h, level, index in node.tree.nodes():
            key = _key(h)
            ref = fid << 40 | level << 32 | index
            old = by_key.get(key)
            if old is None:
                by_key[key] = ref
            elif isinstance(old, set):
                old.add(ref)
            else:
                by_key[key] = {old, ref}

    def remove(self, rel: str) -> None:
        fid = self._ids.pop(rel, None)
        if fid is None:
            return
        _, node = self._files.pop(fid)
        by_key = self._by_key
        for h, level, index in node.tree.nodes():
            key = _key(h)
            ref = fid << 40 | level << 32 | index
            old = by_key.get(key)
            if old == ref:
                del by_key[key]
            elif isinstance(old, set):
                old.discard(ref)
                if len(old) == 1:
                    by_key[key] = next(iter(old))

    def rename(self, rel: str, new: str) -> None:
        """The same file now lives at ``new`` (a grave): nothing is re-keyed."""
        fid = self._ids.pop(rel, None)
        if fid is not None:
            self._ids[new] = fid
            self._files[fid] = (new, self._files[fid][1])

    def find(self, short: bytes) -> Location | None:
        """A node whose full hash starts with ``short``, wherever it is."""
        refs = self._by_key.get(_key(short))
        if refs is None:
            return None
        for ref in (refs,) if isinstance(refs, int) else refs:
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
