"""The source's copies of what it last synced: small files, compressed, within a budget.

A change of a file the target holds is sent as a zstd delta against the old version
(``merkle_sync.delta``), which only works if the source still has that old version. So after
each good sync the source keeps the files it wrote there, up to ``DELTA_MAX`` bytes each,
zstd-compressed, keyed by file hash: in its persistent index (sqlite) beside the file rows,
or in memory when it has none. The budget counts compressed bytes; past it the copies used
least recently go first. A copy is found by the target's file hash, so it also serves a
walk whose listing shows that the target still holds a version the source once sent.

Turning it off (budget 0) only makes changed files travel as chunk deltas again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import zstandard

from merkle_sync.merkle import KIND_LINK, FileNode
from merkle_sync.protocol import DELTA_MAX


class Kept(Protocol):
    """What a session needs of kept copies: found by a short file hash."""

    def has(self, short: bytes) -> bool: ...

    def get(self, short: bytes) -> bytes | None: ...


#: Compressed bytes of kept copies, by default, in the source's index on disk (Django 5.1's
#: 44.5 MB keep in 14.2 MB).
KEEP_BUDGET = 256 << 20
#: The default without an index, where the copies are held in memory.
KEEP_MEMORY = 32 << 20
#: Kept copies are stored fast: they are written for every file a sync sends.
_STORE_LEVEL = 3


class KeptCopies:
    """File hash -> the file's bytes, as of the last sync that sent it."""

    def __init__(self, db: sqlite3.Connection | None = None, budget: int | None = None) -> None:
        """``db``: the source's index (the copies then persist); ``None``: memory.
        ``budget``: compressed bytes (``None``: ``KEEP_BUDGET``, or ``KEEP_MEMORY`` in memory)."""
        if budget is None:
            budget = KEEP_BUDGET if db is not None else KEEP_MEMORY
        self.budget = budget
        self._db = db if db is not None else sqlite3.connect(":memory:", isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kept (hash BLOB PRIMARY KEY, stored INTEGER,"
            " used INTEGER, data BLOB)"
        )
        # Eviction takes the least recently used first: without this, each eviction sorts
        # every row.
        self._db.execute("CREATE INDEX IF NOT EXISTS kept_used ON kept (used)")
        row = self._db.execute("SELECT coalesce(sum(stored), 0), coalesce(max(used), 0) FROM kept")
        self.stored, self._clock = row.fetchone()
        self._compress = zstandard.ZstdCompressor(level=_STORE_LEVEL)
        self._decompress = zstandard.ZstdDecompressor()

    def _find(self, short: bytes) -> tuple[bytes, bytes] | None:
        """The full hash and stored blob of the copy whose hash starts with ``short``."""
        if not short:
            return None
        row = self._db.execute(
            "SELECT hash, data FROM kept WHERE hash >= ? ORDER BY hash LIMIT 1", (short,)
        ).fetchone()
        return row if row is not None and row[0].startswith(short) else None

    def has(self, short: bytes) -> bool:
        return self.budget > 0 and self._find(short) is not None

    def get(self, short: bytes) -> bytes | None:
        """The kept bytes of the file whose hash starts with ``short``, if any."""
        found = self._find(short) if self.budget > 0 else None
        if found is None:
            return None
        self._clock += 1
        self._db.execute("UPDATE kept SET used=? WHERE hash=?", (self._clock, found[0]))
        data = self._decompress.decompress(found[1], max_output_size=DELTA_MAX)
        return data if len(data) <= DELTA_MAX else None

    def put(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Keep ``(file hash, bytes)`` pairs, then evict down to the budget."""
        if self.budget <= 0:
            return
        for digest, data in items:
            if len(data) > DELTA_MAX:
                continue
            blob = self._compress.compress(data)
            self._clock += 1
            old = self._db.execute("SELECT stored FROM kept WHERE hash=?", (digest,)).fetchone()
            self.stored += len(blob) - (old[0] if old else 0)
            self._db.execute(
                "INSERT OR REPLACE INTO kept VALUES (?, ?, ?, ?)",
                (digest, len(blob), self._clock, blob),
            )
        self._evict()

    def _evict(self) -> None:
        """Past the budget, the least recently used go until a tenth of it is free, so a
        source at its budget does not evict on every file it sends."""
        if self.stored <= self.budget:
            return
        goal = self.budget * 9 // 10
        while self.stored > goal:
            rows = self._db.execute(
                "SELECT hash, stored FROM kept ORDER BY used LIMIT 1024"
            ).fetchall()
            if not rows:
                self.stored = 0
                return
            gone = []
            for digest, stored in rows:
                if self.stored <= goal:
                    break
                gone.append((digest,))
                self.stored -= stored
            self._db.executemany("DELETE FROM kept WHERE hash=?", gone)


def kept_rest(
    session: Any, read: Callable[[str, int, int], bytes]
) -> Iterator[tuple[bytes, bytes]]:
    """After a good sync: the small files it wrote whose bytes did not all pass through the
    frames (edits sent as chunk deltas), read again and kept if they still hash the same."""
    cutter = session.cutter
    for rel, node in session.writes.items():
        if cutter is None or rel in cutter.whole:
            continue
        if node.kind == KIND_LINK or node.tree.size > DELTA_MAX:
            continue
        try:
            data = read(rel, 0, node.tree.size)
        except OSError:
            continue
        if FileNode.from_data(node.kind, data).hash == node.hash:
            yield node.hash, data
