"""What a scan learned, kept on disk: each file's stat identity and content tree (sqlite, WAL).

A restart whose files did not change reads no file content: it stats each entry and takes
the tree from here. A file whose stat identity (size, mtime, ctime, inode, device) changed
is hashed again; the ctime catches a change whose mtime was set back. Like git's index, a
file modified less than ``RACY_NS`` before it was hashed is not remembered (it may change
again within the same timestamp tick), so it is hashed again on the next scan. The index
is a cache: deleting it, or finding it corrupt, only costs one full hash; ``verify``
ignores it (rsync's ``--checksum``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from array import array
from collections.abc import Iterable
from functools import partial

from merkle_sync.contenttree import ContentTree, LazyTree, tree_from_leaves
from merkle_sync.dirstamp import StampStore
from merkle_sync.merkle import file_hash

#: A stat identity: (size, mtime_ns, ctime_ns, inode, device).
StatKey = tuple[int, int, int, int, int]
#: Entries of files changed this recently when stored are hashed again next time: the file
#: may change again within the same timestamp tick and keep its stat identity.
RACY_NS = 1_000_000_000
_SCHEMA = 5
#: A stat identity no file has (see ``store``).
_NEVER = (-1, -1, -1, -1, -1)
#: Bytes of replaced rows' leaves kept for the source's restart (see ``replaced``).
REPLACED_MAX = 64 << 20


def _b(rel: str) -> bytes:
    """Paths are stored as the bytes of the name on disk: any name, UTF-8 or not."""
    return rel.encode("utf-8", "surrogateescape")


#: A full scan reads the whole index in one query up to this many rows (Django: 6,834).
PRELOAD_MAX = 200_000
#: Lookups one by one before a deferred preload reads the whole table instead.
LOOKUPS_FIRST = 2_000


class FileIndex:
    """Path -> (stat identity, content tree); one sqlite file, written in transactions."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError:  # corrupt or foreign: a cache, so start over
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path + suffix)
            self._db = self._open()
        #: Directory stamps (``merkle_sync.dirstamp``), kept in step with the file rows.
        self.stamps = StampStore(self._db)
        self._rows: dict[str, tuple] | None = None
        #: Rows at the last preload, and how many of them the scan since found unchanged:
        #: all of them means no row is stale, and ``keep_only`` has nothing to compare.
        self._preloaded = -1
        self._hits = 0
        self._later = 0
        #: When a dict: the leaves of rows about to be replaced or forgotten, by path, up
        #: to ``REPLACED_MAX`` bytes. The source's restart plans with them (the old version
        #: of an edited file is what the target still holds).
        self.replaced: dict[str, tuple[bytes, bytes]] | None = None
        self._replaced_bytes = 0

    @property
    def db(self) -> sqlite3.Connection:
        """The database, for other records kept beside the files (``merkle_sync.synced``)."""
        return self._db

    def preload(self, limit: int = PRELOAD_MAX, later: bool = False) -> None:
        """Read every row in one query (a full scan then looks up in memory), when there are
        at most ``limit`` rows; past that, each file is looked up on its own. ``later``: only
        once ``LOOKUPS_FIRST`` files were looked up one by one (directory stamps spare most
        lookups of a restart, so most restarts never read the whole table)."""
        self._preloaded, self._hits = -1, 0
        self._later = LOOKUPS_FIRST if later else 0
        if later:
            return
        count = self._db.execute("SELECT count(*) FROM files").fetchone()[0]
        if count <= limit:
            self._preloaded = count
            rows = self._db.execute(
                "SELECT rel, size, mtime, ctime, ino, dev, kind, hash FROM files"
            )
            self._rows = {
                row[0].decode("utf-8", "surrogateescape"): (row[1:6], row[6], row[7])
                for row in rows
            }

    def release(self) -> None:
        self._rows = None
        self._later = 0

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != _SCHEMA:
            db.execute("DROP TABLE IF EXISTS files")
            db.execute("DROP TABLE IF EXISTS synced")
            db.execute("DROP TABLE IF EXISTS kept")
            db.execute("DROP TABLE IF EXISTS dirs")
            db.execute(f"PRAGMA user_version={_SCHEMA}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS files (rel BLOB PRIMARY KEY, size INTEGER,"
            " mtime INTEGER, ctime INTEGER, ino INTEGER, dev INTEGER, kind INTEGER,"
            " hash BLOB, leaves BLOB, ends BLOB)"
        )
        db.execute("SELECT count(*) FROM files").fetchone()  # fails early when corrupt
        db.execute("BEGIN")
        return db

    def lookup(self, rel: str, key: StatKey) -> tuple[int, bytes, LazyTree] | None:
        """``(kind, file hash, tree)`` of an unchanged file; the tree is read from here only
        if something asks for it (a no-op restart never does)."""
        if self._later:
            self._later -= 1
            if not self._later:
                self.preload()
        if self._rows is not None:
            row = self._rows.get(rel)
        else:
            found = self._db.execute(
                "SELECT size, mtime, ctime, ino, dev, kind, hash FROM files WHERE rel=?", (_b(rel),)
            ).fetchone()
            row = None if found is None else (found[:5], found[5], found[6])
        if row is None or row[0] != key:
            return None
        self._hits += 1  # (a row matched once per scan: see ``keep_only``)
        return row[1], row[2], LazyTree(partial(self.tree, rel, row[2]))

    def key(self, rel: str) -> StatKey | None:
        """The stat identity recorded for ``rel`` (``None``: none recorded)."""
        if self._rows is not None and rel in self._rows:
            return self._rows[rel][0]  # type: ignore[return-value]
        found = self._db.execute(
            "SELECT size, mtime, ctime, ino, dev FROM files WHERE rel=?", (_b(rel),)
        ).fetchone()
        return None if found is None else tuple(found)  # type: ignore[return-value]

    def tree(self, rel: str, digest: bytes) -> ContentTree:
        """The content tree stored for ``rel``, which must still be the file hashing to
        ``digest`` (a lazy tree is never built from a newer row)."""
        row = self._db.execute(
            "SELECT kind, hash, leaves, ends FROM files WHERE rel=?", (_b(rel),)
        ).fetchone()
        if row is None or row[1] != digest:
            raise LookupError(f"the index no longer holds the tree of {rel!r}")
        ends = array("Q")
        ends.frombytes(row[3])
        tree = tree_from_leaves(row[2], ends)
        if file_hash(row[0], tree.root) != digest:
            raise LookupError(f"the index entry of {rel!r} is damaged")
        return tree

    def store(
        self, rel: str, key: StatKey, kind: int, tree: ContentTree, own: bool = False
    ) -> None:
        """Remember a file's tree. ``own``: the caller just wrote this content itself and
        stat-ed it after the rename, so a recent timestamp is no reason for doubt."""
        self.stamps.touch(rel)
        if self.replaced is not None:
            self._stash(rel)
        if not own and time.time_ns() - key[1] < RACY_NS:
            if self.replaced is None:
                self.forget(rel)  # racily clean: hash it again next time
                return
            # The same, but the leaves stay for the next restart's stash: an identity no
            # file has never matches, so the file is hashed again all the same.
            key = _NEVER
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                _b(rel),
                *key,
                kind,
                file_hash(kind, tree.root),
                tree.leaf_hashes(),
                tree.leaf_ends().tobytes(),
            ),
        )

    def _stash(self, rel: str) -> None:
        assert self.replaced is not None
        row = self._db.execute("SELECT leaves, ends FROM files WHERE rel=?", (_b(rel),)).fetchone()
        if row is not None and rel not in self.replaced:
            size = len(row[0]) + len(row[1])
            if self._replaced_bytes + size <= REPLACED_MAX:
                self.replaced[rel] = (row[0], row[1])
                self._replaced_bytes += size

    def replaced_trees(self) -> list[tuple[str, ContentTree]]:
        """The content trees of the rows stashed in ``replaced``, by path."""
        trees = []
        for rel, (leaves, ends_blob) in (self.replaced or {}).items():
            ends = array("Q")
            ends.frombytes(ends_blob)
            trees.append((rel, tree_from_leaves(leaves, ends)))
        return trees

    def forget(self, rel: str) -> None:
        self.stamps.touch(rel)
        self._db.execute("DELETE FROM files WHERE rel=?", (_b(rel),))

    def forget_below(self, rel: str) -> None:
        """Forget ``rel`` and everything under it (a removed directory)."""
        self.stamps.touch_below(rel)
        if not rel:
            self._db.execute("DELETE FROM files")
            return
        low = _b(rel)
        self._db.execute(
            "DELETE FROM files WHERE rel=? OR (rel >= ? AND rel < ?)", (low, low + b"/", low + b"0")
        )

    def keep_only(
        self,
        seen: Iterable[str],
        below: str = "",
        clean: Iterable[str] = (),
        dirs: set[str] | None = None,
        settled: bool = False,
    ) -> None:
        """After scanning ``below`` (all of the tree by default): drop entries of paths there
        that the scan did not see. ``clean``: directories whose stamp matched, so their files
        are there as recorded (not in ``seen``); ``dirs``: every directory the scan found
        (the stamp rows of others go); ``settled``: every directory matched its stamp, so
        nothing can have gone (an entry that goes changes its directory's stamp)."""
        if settled:
            return
        if dirs is not None:
            self.stamps.keep_only(dirs, below)
        if not below and self._hits == self._preloaded:
            return  # every row was looked up by this scan: none is stale
        keep = {_b(rel) for rel in seen}
        kept_dirs = {_b(rel) for rel in clean}
        if below:
            low = _b(below)
            rows = self._db.execute(
                "SELECT rel FROM files WHERE rel=? OR (rel >= ? AND rel < ?)",
                (low, low + b"/", low + b"0"),
            )
        else:
            rows = self._db.execute("SELECT rel FROM files")
        gone = [r for (r,) in rows if r not in keep and r.rpartition(b"/")[0] not in kept_dirs]
        self._db.executemany("DELETE FROM files WHERE rel=?", ((r,) for r in gone))

    def commit(self) -> None:
        self.stamps.flush()
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.stamps.flush()
            self._db.execute("COMMIT")
        self._db.close()


def default_source_index(source_dir: str) -> str:
    """Where a source keeps its index: the user's cache directory, never the source tree
    (which may be read-only, and must not change because it is being mirrored)."""
    from blake3 import blake3

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = blake3(os.fsencode(os.path.realpath(source_dir))).hexdigest()[:20]
    return os.path.join(cache, "merkle_sync", "sources", f"{name}.sqlite")
