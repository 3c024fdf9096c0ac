"""The source's record of what the target held after the last good sync, across restarts.

After a sync that ended with equal roots, every directory whose hash changed is written to
the source's index database with its listing (name, kind, full hash, metadata of each
entry). When the source starts again and its tree differs from the recorded root, the
change is planned against the record, as an event's would be (no walk: a ``chmod`` after a
restart is one round trip and a few hundred bytes). The plan is bound to the recorded root:
a target that changed since (another source, a hand edit, another directory) refuses it, and
the source walks as before. So the record only ever saves round trips; it is never trusted
for the result, which the end-to-end root check confirms.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import msgpack

from merkle_sync.contenttree import ContentTree
from merkle_sync.merkle import KIND_DIR, DirNode, FileNode, Node, file_hash, join, lookup

_Loader = Callable[[str], list | None]


class StoredDir(DirNode):
    """A directory as recorded: its hash, and its entries loaded only if the plan asks."""

    __slots__ = ("_load", "_rel")

    def __init__(self, digest: bytes, meta: object, rel: str, load: _Loader) -> None:
        super().__init__(None, meta)  # type: ignore[arg-type]
        self._hash = digest
        self._rel, self._load = rel, load

    @property  # type: ignore[override]
    def children(self) -> dict[str, Node]:
        loaded = DirNode.children.__get__(self)  # type: ignore[attr-defined]
        if self._load is not None:
            load, self._load = self._load, None
            for name, kind, digest, meta in load(self._rel) or ():
                meta = tuple(meta) if meta is not None else None
                if kind == KIND_DIR:
                    loaded[name] = StoredDir(digest, meta, join(self._rel, name), load)
                else:  # the plan reads only kind, hash and metadata of a recorded file
                    loaded[name] = FileNode(kind, None, digest, meta)  # type: ignore[arg-type]
        return loaded

    @children.setter
    def children(self, value: dict[str, Node]) -> None:
        DirNode.children.__set__(self, value)  # type: ignore[attr-defined]


class SyncedRecord:
    """Listings of the synced tree, one row per directory, in the source's index database."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS synced (rel BLOB PRIMARY KEY, hash BLOB, listing BLOB)"
        )

    def root(self) -> bytes | None:
        row = self._db.execute("SELECT hash FROM synced WHERE rel=?", (b"",)).fetchone()
        return row[0] if row else None

    def tree(self, root: DirNode) -> StoredDir | None:
        """The recorded tree (loaded as the plan walks it), with ``root``'s own metadata,
        which is not mirrored."""
        digest = self.root()
        return None if digest is None else StoredDir(digest, root.meta, "", self._listing)

    def _listing(self, rel: str) -> list | None:
        row = self._db.execute("SELECT listing FROM synced WHERE rel=?", (_b(rel),)).fetchone()
        return msgpack.unpackb(row[0], unicode_errors="surrogateescape") if row else None

    def record(self, root: DirNode) -> None:
        """The target now equals ``root``: rewrite the rows of directories that changed
        (a directory whose hash is already recorded is skipped with all below it)."""
        db = self._db
        stack: list[tuple[str, DirNode]] = [("", root)]
        while stack:
            rel, node = stack.pop()
            row = db.execute("SELECT hash, listing FROM synced WHERE rel=?", (_b(rel),)).fetchone()
            if row is not None and row[0] == node.hash:
                continue
            if row is not None:  # subdirectories that went: their rows go too
                old = msgpack.unpackb(row[1], unicode_errors="surrogateescape")
                now = {n for n, c in node.children.items() if isinstance(c, DirNode)}
                for name in {e[0] for e in old if e[1] == KIND_DIR} - now:
                    low = _b(join(rel, name))
                    db.execute(
                        "DELETE FROM synced WHERE rel = ? OR (rel >= ? AND rel < ?)",
                        (low, low + b"/", low + b"0"),
                    )
            listing = []
            for name, child in node.children.items():
                listing.append([name, child.kind, child.hash, child.meta])
                if isinstance(child, DirNode):
                    stack.append((join(rel, name), child))
            packed = msgpack.packb(listing, unicode_errors="surrogateescape")
            db.execute("INSERT OR REPLACE INTO synced VALUES (?,?,?)", (_b(rel), node.hash, packed))

    def forget(self) -> None:
        self._db.execute("DELETE FROM synced")


def _b(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


def recorded_versions(
    record: DirNode, replaced: list[tuple[str, ContentTree]]
) -> list[ContentTree]:
    """Of the old versions the source's index replaced since, those the record says the
    target holds: a row stored by a run that synced nothing (a dry run, a refused plan, a
    broken link) is no version the target has."""
    out = []
    for rel, tree in replaced:
        node = lookup(record, rel)
        if isinstance(node, FileNode) and file_hash(node.kind, tree.root) == node.hash:
            out.append(tree)
    return out
