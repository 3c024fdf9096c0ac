"""The active side: keeps its Merkle tree current from watch events and drives syncs over RPC."""

from __future__ import annotations

import contextlib
import posixpath
from collections import Counter
from collections.abc import Callable
from typing import Any

from merkle_sync.beneath import EscapeRefused, check_beneath
from merkle_sync.driver import Driver, SyncStats, probe_root
from merkle_sync.fileindex import FileIndex, default_source_index
from merkle_sync.frames import FRAME_LITERALS
from merkle_sync.fs import RangeReader, StatScanner
from merkle_sync.kept import KeptCopies, kept_rest
from merkle_sync.merkle import (
    KIND_LINK,
    DirNode,
    FileNode,
    Meta,
    Node,
    encode_content,
    iter_dirs,
    iter_tree,
    lookup,
    put,
    set_dir_meta,
)
from merkle_sync.protocol import FULL_HASH, MIN_HASH, ProtocolError, Walk, trusted
from merkle_sync.races import Raced, Retries, SyncError, changed_paths, under
from merkle_sync.scan import UNREADABLE, ReadCache, Scanner, with_target
from merkle_sync.session import SyncSession
from merkle_sync.synced import SyncedRecord, recorded_versions

#: Bytes a scan keeps in memory for the sync that follows it; files past this are read again.
KEEP_READ = 256 << 20


class ReplicatorSource:
    """Mirrors ``dir_path`` into the target behind ``rpc_handle``; events keep it mirrored."""

    def __init__(
        self,
        fs: Any,
        dir_path: str,
        rpc_handle: Callable[[Any], Any],
        hash_len: int = MIN_HASH,
        keep_read: int = KEEP_READ,
        frame_literals: int = FRAME_LITERALS,
        index: str | bool = True,
        verify: bool = False,
        compression: int | None = None,
        ignore: Callable[[str, bool], bool] | None = None,
        dry_run: bool = False,
        on_plan: Callable[[SyncSession], None] | None = None,
        on_frame: Callable[[SyncSession, int], None] | None = None,
        on_read: Callable[[int], None] | None = None,
        keep: int | None = None,
    ) -> None:
        """``index``: the persistent index of the source's files, on a filesystem that lists
        with stat identities: ``True`` keeps it in the user's cache directory (see
        ``default_source_index``), a path puts it there, ``False`` hashes every file at
        start. ``verify`` hashes every file whatever the index says (rsync's --checksum).
        ``compression``: the zstd level of apply frames (``None``: by the bytes planned, then
        following a byte-stream link's speed; ``0``: plain, for a local link).
        ``ignore(rel, is_dir)``: paths left out of the mirror (see ``merkle_sync.ignore``).
        ``dry_run``: walk, plan and encode the apply, count its bytes, but never send it.
        ``on_plan(session)`` is called with each plan before its first apply frame goes (it
        may raise ``Refused`` to stop the sync), ``on_frame(session, nbytes)`` after each
        apply frame; ``on_read(nbytes)`` as file content is read to be hashed. ``keep``:
        compressed bytes of last-synced file versions kept to send later changes as deltas
        (``merkle_sync.kept``; 0 keeps none; ``None``: its defaults, on disk or in memory)."""
        self.fs = fs
        self.dir = posixpath.normpath(dir_path)
        self.rpc_handle = rpc_handle
        self.hash_len = hash_len
        #: Literal bytes per apply frame: what one request carries and the target holds.
        self.frame_literals = frame_literals
        self.compression = compression
        self.ignore = ignore
        self.dry_run = dry_run
        self.on_plan = on_plan
        self.on_frame = on_frame
        self.on_read = on_read
        self.stats = SyncStats()
        #: Entries left out of the mirror, with the reason: unreadable ones (the target
        #: keeps its copies) and special files. Reported, never the end of a sync.
        self.skipped: list[tuple[str, str]] = []
        #: A filesystem with ranged reads is streamed and read again only where bytes travel;
        #: otherwise each file is read whole, once per scan and sync.
        self._ranged = isinstance(fs, RangeReader)
        self._listing = isinstance(fs, StatScanner)
        self._checked: set[str] = set()  # directories found real during the current sync
        self._fresh = ReadCache(0 if self._ranged else keep_read)
        self._data: dict[str, bytes] = {}
        #: Short hashes of every content node the target holds (with multiplicity) while its
        #: root is ``_target_root``: an event's sync skips the walk. Built on the first event.
        self._known: Counter[bytes] | None = None
        self._in_sync = False  # the target equalled ``_target_root`` after the last sync
        self._target_root = b""
        self._verify = verify
        self._index: FileIndex | None = None
        if index is not False and isinstance(fs, StatScanner):
            path = index if isinstance(index, str) else default_source_index(self.dir)
            self._index = FileIndex(path)
        #: What the target held after the last good sync, kept across restarts.
        self._record = SyncedRecord(self._index.db) if self._index is not None else None
        self._kept = KeptCopies(self._index.db if self._index is not None else None, keep)
        if self._index is not None:
            self._index.replaced = {}  # old versions of edited files, for that restart plan
        self._watched: set[str] = set()
        self.tree: DirNode = self._load_root()
        if not self._sync_from_record():
            self.sync()

    # -- events ----------------------------------------------------------------------------
    def handle_event(self, event: Any) -> None:
        """Treat the event as "something changed at this path" and look at the real state."""
        rel = self._relative(posixpath.normpath(event.path))
        if rel is None:
            return
        # Rescan from the deepest place our tree still knows as a directory's child.
        while rel and not isinstance(lookup(self.tree, posixpath.dirname(rel)), DirNode):
            rel = posixpath.dirname(rel)
        if self._listing and rel:
            try:  # a directory on the way swapped for a link: rescan from the link itself
                check_beneath(self.fs, self.dir, posixpath.dirname(rel), set())
            except EscapeRefused as exc:
                rel = exc.rel
        old = lookup(self.tree, rel)
        if old is not None and self._in_sync:
            # The change's sync needs the old content; the scan may replace the index rows
            # a lazily loaded tree would come from, so load what is still unloaded first.
            for _, sub in iter_tree(old):
                if isinstance(sub, FileNode):
                    sub.tree.root  # noqa: B018  (the load is the point)
        node = self._scan(rel)
        if node is UNREADABLE:
            return  # reported in ``skipped``; the target keeps what it has
        if not rel:
            if not isinstance(node, DirNode):
                raise NotADirectoryError(f"source directory vanished: {self.dir!r}")
            self.tree = node
        else:
            put(self.tree, rel, node)
        self._rewatch(rel, node)
        self._sync_change(rel, old, node, self._parent_meta(rel))

    def _parent_meta(self, rel: str) -> Meta | None:
        """An entry added or removed changes its directory's mtime, which no watcher reports
        as an event: read it again (not for the root, whose metadata is not mirrored)."""
        parent = posixpath.dirname(rel)
        node = lookup(self.tree, parent) if self._listing and parent else None
        if not isinstance(node, DirNode):
            return None
        try:
            meta = self.fs.info(self._abs(parent))[3]
        except OSError:
            return None
        if meta != node.meta:
            set_dir_meta(self.tree, parent, meta)
            return meta
        return None

    def _sync_from_record(self) -> bool:
        """At start, with a record of the synced tree (``merkle_sync.synced``): one round
        trip compares the roots; if the target holds the recorded tree, the difference is
        planned from the record as an event's would be. False when the walk must run."""
        old = self._record.tree(self.tree) if self._record is not None else None
        replaced = self._index.replaced_trees() if self._index is not None else []
        if self._index is not None:
            self._index.replaced = None
        if old is None:
            return False
        n = self.hash_len
        # The target holds the old versions of edited files, those the record names: a row
        # stored by a run that synced nothing (a dry run, a refusal) is not on the target.
        known = {h[:n] for tree in recorded_versions(old, replaced) for h, _, _ in tree.nodes()}
        reply = probe_root(self.rpc_handle, self.stats, trusted(Walk, n, self.tree.hash, (), ()))
        self.skipped = with_target(self.skipped, reply.unread)
        if reply.equal:
            self._synced()
            return True
        if reply.root != old.hash[:n]:
            return False
        session = self._session(n)
        try:
            self._run(session, session.start_change("", old, known, reply.root))
        except (ProtocolError, Raced):
            return False
        finally:
            self._fresh.clear()
        if session.equal:
            self._synced()
        return session.equal or self.dry_run  # a dry run reports the plan it made

    def _synced(self) -> None:
        """The target equals our tree now: remember it, in memory and on disk."""
        self._in_sync = True
        self._target_root = self.tree.hash
        if self._record is not None and not self.dry_run:
            self._record.record(self.tree)
            self._index.commit()  # type: ignore[union-attr]

    def rescan(self) -> None:
        """After lost events (a watcher's queue overflowed): rescan the source, then walk."""
        self._load_root()
        self.sync()

    def _load_root(self) -> DirNode:
        """Scan the whole source into ``self.tree`` and watch exactly its directories."""
        root = self._scan("")
        if not isinstance(root, DirNode):
            raise NotADirectoryError(f"the source is not a directory: {self.dir!r}")
        self.tree = root
        self._rewatch("", root)
        return root

    def _scan(self, rel: str) -> Node | None:
        """The node at ``rel``, from the disk and the persistent index (kept in step)."""
        scanner = Scanner(
            self.fs, self._fresh, self._index, self._verify, self.ignore, self.on_read
        )
        node = scanner.node(self._abs(rel), rel)
        self.skipped = [(r, why) for r, why in self.skipped if not under(r, rel)]
        self.skipped += scanner.skipped
        self.stats.files_scanned += scanner.files
        if self._index is not None:
            scanner.tidy(rel)
            self._index.commit()
        return node

    def _relative(self, path: str) -> str | None:
        if path == self.dir:
            return ""
        prefix = self.dir.rstrip("/") + "/"
        return path[len(prefix) :] if path.startswith(prefix) else None

    def _abs(self, rel: str) -> str:
        return posixpath.join(self.dir, rel) if rel else self.dir

    def _rewatch(self, rel: str, node: Node | None) -> None:
        """Watch exactly the directories now at or below ``rel``; release the rest."""
        inside = rel + "/" if rel else ""
        old = {d for d in self._watched if d == rel or d.startswith(inside)}
        new = set(iter_dirs(node, rel)) if node is not None else set()
        for d in sorted(old - new, reverse=True):
            self.fs.unwatchdir(self._abs(d))
        for d in sorted(new - old):
            self.fs.watchdir(self._abs(d), self.handle_event)
        self._watched = (self._watched - old) | new

    # -- syncing ---------------------------------------------------------------------------
    def _read(self, rel: str, start: int, end: int) -> bytes:
        """Bytes of a source file: a ranged read, or the whole file read once per sync."""
        try:
            if self._ranged:  # never through a directory that became a link since the scan
                check_beneath(self.fs, self.dir, posixpath.dirname(rel), self._checked)
                data = self.fs.read_range(self._abs(rel), start, end - start)
                if len(data) != end - start:
                    raise OSError(f"{len(data)} bytes where {end - start} were scanned")
                return data
            data = self._fresh.get(rel)
            if data is None:
                data = self._data.get(rel)
            if data is None:
                data = self._data[rel] = encode_content(self.fs.readfile(self._abs(rel)))[1]
        except OSError as exc:  # gone or replaced since the scan: see ``merkle_sync.races``
            raise Raced(rel, exc) from exc
        return data[start:end]

    def _content(self, node: Node | None) -> Counter[bytes]:
        """Short hashes of all content nodes below ``node``, with multiplicity."""
        found: Counter[bytes] = Counter()
        if node is not None:
            for _, sub in iter_tree(node):
                if isinstance(sub, FileNode):
                    found.update(h[: self.hash_len] for h, _, _ in sub.tree.nodes())
        return found

    def _session(self, hash_len: int) -> SyncSession:
        return SyncSession(self.tree, self._read, hash_len, self.frame_literals, self._kept)

    def _keep(self, rel: str, node: FileNode, data: bytes) -> None:
        if node.kind != KIND_LINK and not self.dry_run:
            self._kept.put([(node.hash, data)])

    def _run(self, session: SyncSession, request: Any) -> None:
        """Drive a session over ``rpc_handle`` (see ``merkle_sync.driver``)."""
        stats = self.stats
        stats.syncs += 1
        self._checked.clear()
        driver = Driver(
            self.rpc_handle, stats, self.compression, self.dry_run, self.on_plan, self.on_frame
        )
        session.on_whole = self._keep
        try:
            driver.run(session, request)
            self.skipped = with_target(self.skipped, session.target_unread, session.removes)
            if session.equal and not self.dry_run:
                with contextlib.suppress(Raced):  # a kept copy only saves bytes later
                    self._kept.put(kept_rest(session, self._read))
        finally:
            self._data.clear()
            if self._index is not None:
                self._index.commit()  # the kept copies: another process may open the index
        if session.cutter is not None and (session.equal or self.dry_run or self.skipped):
            made = set(session.mkdirs)
            stats.created += len(made) + len(session.writes) - len(session.updated)
            stats.updated += len(session.updated)
            stats.attrs += sum(1 for a in session.attrs if a.path not in made)
            stats.deleted += len(session.removes)

    def _sync_change(
        self, rel: str, old: Node | None, new: Node | None, parent_meta: Meta | None = None
    ) -> None:
        """Send just this change when the target's state is known; otherwise walk."""
        if self._in_sync and self._known is None:
            # The record of the target: our tree as it was before this event.
            built = self._content(self.tree)
            built.subtract(self._content(new))
            built.update(self._content(old))
            self._known = +built
        known, self._known = self._known, None  # unknown until this sync succeeds
        self._in_sync = False
        try:
            if known is None:
                self.sync()
                return
            if self.tree.hash == self._target_root:
                self._known = known
                self._in_sync = True
                return  # the event changed nothing the target does not already have
            session = self._session(self.hash_len)
            try:
                base = self._target_root[: self.hash_len]
                request = session.start_change(rel, old, known, base, parent_meta)
                self._run(session, request)
            except (ProtocolError, Raced):
                session.target_root = None  # e.g. a short-hash collision: walk with full hashes
            if not session.equal:
                self.sync()
                return
            known.subtract(self._content(old))
            known.update(self._content(new))
            self._known = +known
            self._synced()
        finally:
            self._fresh.clear()

    def sync(self) -> None:
        """Walk and apply with short hashes; if the end-to-end root check fails, redo with full."""
        self._known = None
        self._in_sync = False
        lengths = list(dict.fromkeys((self.hash_len, FULL_HASH)))
        retries = Retries()
        try:
            while lengths:
                hash_len = lengths[0]
                session = self._session(hash_len)
                try:
                    self._run(session, session.start())
                    if self.dry_run:
                        return
                except (ProtocolError, Raced) as exc:
                    # A file changed while it was sent: rescan and go on; one that keeps
                    # changing (or vanished) waits for the next sync (``merkle_sync.races``).
                    changed = self._refresh()  # first: it replaces ``self.tree``
                    again, out = retries.answer(self.tree, exc, changed)
                    self.skipped += out
                    if again:
                        continue
                    if isinstance(exc, Raced):
                        raise OSError(f"{self._abs(exc.rel)}: {exc.why()}") from exc
                    if hash_len == FULL_HASH:
                        raise
                    lengths.pop(0)
                    continue
                if session.equal:
                    self._synced()
                    return
                if self.skipped and session.done:
                    # Mirrored but for the entries it could not read, which the target
                    # keeps: the roots differ by those. Next time, walk again.
                    return
                lengths.pop(0)
            raise SyncError("target root differs from the source after a full-hash sync")
        finally:
            self._fresh.clear()

    def _refresh(self) -> list[str]:
        """Rescan the source (stat only where the index knows a file): the files that
        changed, as when one is written while its bytes are sent (``merkle_sync.races``)."""
        if not self._listing:
            return []
        before = self.tree
        return changed_paths(before, self._load_root())
