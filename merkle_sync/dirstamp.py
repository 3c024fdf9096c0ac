"""Directory stamps: a restart that finds a directory's entries as they were builds nothing for
its files.

A scan through the persistent index still costs, per unchanged file, an ``lstat`` (which it
cannot avoid) and a node and an index lookup in Python (which it can). After a scan, each
directory whose direct entries are all known gets a row: a *stamp* (a hash of every direct
entry's name, kind, stat identity and metadata), the hashes of its subdirectories, its own
hash, and its file entries' listing. The next scan still stats every entry, but when a
directory's stamp matches and its subdirectories hash as they did, it takes the stored hash
and builds its file nodes only if something asks for them (a walk that lists it, an event
under it). A no-op restart of 100,000 files then builds a thousand directory nodes instead of
a hundred thousand file nodes and lookups.

A stamp trusts what the file index trusts (a file whose stat identity did not change did
not change), and no more: a directory with an entry changed less than ``RACY_NS`` before the
scan, an unreadable entry, or a special file (reported at every scan) gets no stamp; the
exclude rules are part of the stamp; a file row stored or forgotten unstamps its directory
(the listing stays, for a node of the old tree still to be filled); ``verify`` ignores
stamps as it ignores the index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from functools import partial

import msgpack
from blake3 import blake3

from merkle_sync.contenttree import ContentTree, LazyTree
from merkle_sync.merkle import KIND_LINK, DirNode, FileNode, Node, join

#: Bytes of a stamp and of a subdirectory digest: collisions would need a chosen stat.
STAMP_BYTES = 16

#: What a stored row gives back: ``(stamp, subdirectory digest, hash, file count)``.
StampRow = tuple[bytes, bytes, bytes, int]


def stamp(infos: list, salt: bytes) -> bytes:
    """The hash of a directory's direct entries as one listing stat-ed them (sorted
    ``EntryInfo`` tuples), salted with what else decides the tree (the exclude rules)."""
    packed = msgpack.packb(infos, unicode_errors="surrogateescape")
    return blake3(salt + packed).digest(STAMP_BYTES)


def salt(ignore: Callable[[str, bool], bool] | None) -> bytes | None:
    """What a stamp must also cover: the exclude rules (``None``: rules it cannot name, so
    no stamps)."""
    if ignore is None:
        return b""
    patterns = getattr(ignore, "patterns", None)
    if patterns is None:
        return None
    return blake3("\0".join(patterns).encode("utf-8", "surrogateescape")).digest()


def subdirs_digest(subdirs: Iterable[tuple[str, DirNode]]) -> bytes:
    """The names and hashes of a directory's subdirectories: the part of its hash a stamp of
    its direct entries cannot vouch for."""
    flat = [(name, node.hash) for name, node in sorted(subdirs, key=lambda item: item[0])]
    return blake3(msgpack.packb(flat, unicode_errors="surrogateescape")).digest(STAMP_BYTES)


def file_listing(node: DirNode, links: dict[str, bytes]) -> list:
    """The file and link entries of a directory, as a stamp row keeps them: name, kind,
    hash, metadata, and a link's text (``links``, by name; a file's tree stays in the file
    index)."""
    out = []
    for name, child in node.children.items():
        if isinstance(child, FileNode):
            text = links[name] if child.kind == KIND_LINK else None
            out.append([name, child.kind, child.hash, child.meta, text])
    return out


TreeLoader = Callable[[str, bytes], ContentTree]


class StampedDir(DirNode):
    """A directory whose stamp matched: its subdirectories are here, its files come from the
    stored listing on first use of ``children``."""

    __slots__ = ("_files", "_rel")

    def __init__(self, meta: object, rel: str, files: Callable[[], list], tree: TreeLoader) -> None:
        super().__init__(None, meta)  # type: ignore[arg-type]
        self._rel = rel
        self._files: tuple[Callable[[], list], TreeLoader] | None = (files, tree)

    @property  # type: ignore[override]
    def children(self) -> dict[str, Node]:
        loaded = DirNode.children.__get__(self)  # type: ignore[attr-defined]
        if self._files is not None:
            files, tree = self._files
            self._files = None
            for name, kind, digest, meta, text in files():
                meta = tuple(meta) if meta is not None else None
                if kind == KIND_LINK:
                    loaded[name] = FileNode.from_data(KIND_LINK, text, meta)  # type: ignore[arg-type]
                else:
                    load = partial(tree, join(self._rel, name), digest)
                    loaded[name] = FileNode(kind, LazyTree(load), digest, meta)  # type: ignore[arg-type]
        return loaded

    @children.setter
    def children(self, value: dict[str, Node]) -> None:
        DirNode.children.__set__(self, value)  # type: ignore[attr-defined]

    def subdirs(self) -> Iterator[tuple[str, DirNode]]:
        """The subdirectories, without loading the files."""
        own = own_children(self)
        return ((n, c) for n, c in own.items() if isinstance(c, DirNode))

    def settle(self, digest: bytes) -> None:
        """Take the stored hash: the entries and the subdirectories are as recorded."""
        self._hash = digest


def own_children(node: DirNode) -> dict[str, Node]:
    """A directory's children as they are now, without loading a stamped one's files."""
    return DirNode.children.__get__(node)  # type: ignore[attr-defined]


class StampStore:
    """One row per stamped directory, in the file index's database."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.execute(
            "CREATE TABLE IF NOT EXISTS dirs (rel BLOB PRIMARY KEY, stamp BLOB, subs BLOB,"
            " hash BLOB, files INTEGER, listing BLOB)"
        )
        #: Directories whose stamp a changed file row makes stale, dropped at ``flush``.
        self._touched: set[bytes] = set()

    def rows(self, below: str) -> dict[str, StampRow]:
        """Every row at or below ``below`` (one query: a thousand directories per 100,000
        files), without the listings."""
        query = "SELECT rel, stamp, subs, hash, files FROM dirs"
        if below:
            low = _b(below)
            rows = self._db.execute(
                query + " WHERE rel=? OR (rel >= ? AND rel < ?)", (low, low + b"/", low + b"0")
            )
        else:
            rows = self._db.execute(query)
        return {r[0].decode("utf-8", "surrogateescape"): r[1:] for r in rows}

    def listing(self, rel: str, digest: bytes) -> list:
        """The stored file entries of ``rel``, which must still be the directory hashing to
        ``digest`` (a stamped directory is never filled from a newer row)."""
        row = self._db.execute("SELECT hash, listing FROM dirs WHERE rel=?", (_b(rel),)).fetchone()
        if row is None or row[0] != digest:
            raise LookupError(f"the index no longer holds the listing of {rel!r}")
        return msgpack.unpackb(row[1], unicode_errors="surrogateescape")

    def put(self, rel: str, row: StampRow, listing: list) -> None:
        self._touched.discard(_b(rel))
        packed = msgpack.packb(listing, unicode_errors="surrogateescape")
        self._db.execute(
            "INSERT OR REPLACE INTO dirs VALUES (?,?,?,?,?,?)", (_b(rel), *row, packed)
        )

    def touch(self, rel: str) -> None:
        """A file row of ``rel`` changed: its directory's stamp goes at the next ``flush``.
        The listing stays, for a directory node of the old tree not yet filled from it."""
        self._touched.add(_b(rel.rpartition("/")[0]))

    def touch_below(self, rel: str) -> None:
        self.touch(rel)
        if not rel:
            self._db.execute("UPDATE dirs SET stamp=NULL")
            return
        low = _b(rel)
        self._db.execute(
            "UPDATE dirs SET stamp=NULL WHERE rel=? OR (rel >= ? AND rel < ?)",
            (low, low + b"/", low + b"0"),
        )

    def keep_only(self, dirs: set[str], below: str) -> None:
        """Drop the rows of directories at or below ``below`` that a scan did not find."""
        found = {_b(d) for d in dirs}
        gone = [r for r in self.rows(below) if _b(r) not in found]
        self._db.executemany("DELETE FROM dirs WHERE rel=?", ((_b(r),) for r in gone))

    def flush(self) -> None:
        if self._touched:
            self._db.executemany(
                "UPDATE dirs SET stamp=NULL WHERE rel=?", ((r,) for r in self._touched)
            )
            self._touched.clear()


def _b(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")
