"""The passive side: answers walks from its tree and content index, applies verified frames."""

from __future__ import annotations

import posixpath
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from merkle_sync.applier import ApplyStream, Held
from merkle_sync.checks import MAX_UNREAD, RESERVED, probe_hash_len, split_fixed
from merkle_sync.chunking import sub_chunks
from merkle_sync.freshness import StaleContent
from merkle_sync.layout import check_excluded
from merkle_sync.listing import entries, split, unmatched
from merkle_sync.merkle import DirNode, FileNode, Node, iter_tree, lookup, put
from merkle_sync.preflight import Preflight, refuse
from merkle_sync.protocol import (
    MAX_BASIS_READ,
    MAX_CONFIRMED,
    Ack,
    Apply,
    ApplyReply,
    Entry,
    ProtocolError,
    Span,
    Walk,
    WalkReply,
    trusted,
)
from merkle_sync.races import under
from merkle_sync.refine import probe_check
from merkle_sync.scan import SPECIAL, Scanner
from merkle_sync.store import PATCH_MIN, TargetStore
from merkle_sync.wire import StreamDecoder, encode

#: The file that says a directory is a mirror (see ``guard_unmarked``).
MARKER = "mirror"

#: Bytes of removed files kept for reuse, so that a rename, which arrives as a removal and
#: then an addition, costs hashes instead of content. On a disk the files are moved aside
#: (nothing is read); otherwise they are read into memory, never past this budget. 0 turns
#: the reuse of removed content off.
KEEP_REMOVED = 64 << 20


class ReplicatorTarget:
    """Builds its tree once, then keeps it current through its own writes."""

    def __init__(
        self,
        fs: Any,
        dir_path: str,
        keep_removed: int = KEEP_REMOVED,
        index: str | bool = True,
        verify: bool = False,
        patch_min: int | None = PATCH_MIN,
        durable: bool = True,
        ignore: Callable[[str, bool], bool] | None = None,
        max_delete: int | None = None,
        guard_unmarked: bool = False,
    ) -> None:
        """``index``: the persistent index of the target's files (on a disk only): ``True``
        keeps it in ``<target>/.merkle_sync/index.sqlite``, a path puts it there, ``False``
        hashes every file at start. ``verify`` ignores what the index says and hashes all.
        ``patch_min``: files at least this large are changed in place behind an undo
        journal, writing only what changed (on a disk only; ``None``: always stage).
        ``durable``: flush the disk before and after each frame's renames, so a power loss
        after a sync reported success loses nothing (``False`` trades that for speed).
        ``ignore(rel, is_dir)``: entries left out of the tree, so never replaced or deleted
        (the source excludes the same ones). ``max_delete``: an apply that would remove more
        entries than this (counting everything inside removed directories) is refused with
        ``Refused`` before anything changes. ``guard_unmarked``: a directory that was not
        empty and had never been a target (no ``.merkle_sync`` in it) is not a mirror yet,
        so an apply that would delete from it is refused (a wrong path, such as a home
        directory, is never emptied); the command turns this on unless ``--force``."""
        self.fs = fs
        self.dir = posixpath.normpath(dir_path)
        if not fs.exists(self.dir):
            fs.makedirs(self.dir)
        #: Deletions are refused here (see ``guard_unmarked``) until a sync completes.
        self._marker = posixpath.join(self.dir, RESERVED, MARKER)
        self.unmarked = guard_unmarked and not fs.exists(self._marker)
        empty = not any(n != RESERVED for n in fs.listdir(self.dir))
        if empty:
            self.unmarked = False  # nothing to lose
        self.store = TargetStore(fs, self.dir, keep_removed, patch_min, durable)
        if guard_unmarked and empty:
            self._mark()
        self.index = self.store.index
        self.store.open_index(index)
        self.max_delete = max_delete
        self._ignore = ignore
        root = self._scan(verify)
        if not isinstance(root, DirNode):
            raise NotADirectoryError(f"target is not a directory: {self.dir!r}")
        self.tree: DirNode = root
        #: The content index is built on the first request that needs it (never in a no-op).
        self._indexed = False
        self._decoder = StreamDecoder()
        self._stream: ApplyStream | None = None
        #: Hashes this sync's walks confirmed holding, in order (see ``MAX_CONFIRMED``).
        self._confirmed: list[bytes] = []
        #: The refinement probe's leaves (see ``Walk.refine``): each sub-chunk where the
        #: old version holds it, or ``None``. Kept until the apply names them.
        self._probed: list[list[Found | None]] = []

    def close(self) -> None:
        """Let the directory go: its lock (another process may then write it) and its
        index. Also done when the process ends."""
        self._end_stream()
        self.store.close()

    def handle_request(self, request: object) -> object:
        """Answer one request; a frame (bytes) gets a frame back, a message gets a message."""
        if isinstance(request, (bytes, bytearray, memoryview)):
            return encode(self.handle_request(self._decoder.decode(request)))
        self.store.begin_request()
        if isinstance(request, Walk):
            self._end_stream()  # a walk means the source started over
            try:
                return self._walk(request)
            except StaleContent as exc:
                self._reindex(exc.rel)
                raise
        if isinstance(request, Apply):
            try:
                reply = self._apply(request)
            except BaseException as exc:
                self._forget()
                if isinstance(exc, StaleContent):
                    self._reindex(exc.rel)
                raise
            if isinstance(reply, ApplyReply):
                self._forget()  # the sync is over
            return reply
        if isinstance(request, Preflight):
            self._refusals(request.removes)  # and nothing else: a dry run asks
            return Ack(0)
        raise ProtocolError(f"unknown request type {type(request).__name__}")

    def _unread_now(self) -> tuple[str, ...]:
        """The unreadable entries the scan found, but for those an apply removed since."""
        tree = self.tree  # looked up only until the reply is full, however many there are
        here = (r for r in self._unread if isinstance(lookup(tree, posixpath.dirname(r)), DirNode))
        return tuple(islice(here, MAX_UNREAD))

    def _dir_there(self, rel: str) -> bool:
        """A directory on disk that the tree leaves out (excluded, or unreadable)."""
        try:
            return lookup(self.tree, rel) is None and self.fs.isdir(self.store.abs(rel))
        except OSError:
            return False

    def _mark(self) -> None:
        """This directory is a mirror now: later deletions in it are the mirror's own."""
        if self.store.staging and not self.fs.exists(self._marker):
            self.fs.writefile(
                self._marker, b"a merkle-sync mirror: deleting this directory is safe\n"
            )

    def _reindex(self, rel: str) -> None:
        """A file changed by someone else: hash what is there now (or note that nothing is),
        so the source's next plan is made against the truth."""
        self._end_stream()
        file_index = self.store.file_index
        scanner = Scanner(self.fs, None, file_index, True, self._ignore)
        node = scanner.node(self.store.abs(rel), rel)
        self._unread = [r for r in self._unread if not under(r, rel)]
        self._unread += [r for r, why in scanner.skipped if why != SPECIAL]
        old = lookup(self.tree, rel)
        for path, sub in iter_tree(old, rel) if old is not None else ():
            if isinstance(sub, FileNode):
                self.index.remove(path)
        if not isinstance(node, (FileNode, DirNode)):
            node = None
            if file_index is not None:
                file_index.forget(rel)
        put(self.tree, rel, node)
        if node is not None and self._indexed:
            for path, sub in iter_tree(node, rel):
                if isinstance(sub, FileNode):
                    self.index.add(path, sub)
        if file_index is not None:
            file_index.commit()
            self._rescan()

    def _rescan(self) -> None:
        """One file was changed by hand, so others may be too: stat every entry as at start
        (what changed its stat identity is hashed again) and take what is there now, so the
        source's next plan does not trip over the next such file."""
        root = self._scan(verify=False)
        if not isinstance(root, DirNode) or root.hash == self.tree.hash:
            return
        if self._indexed:
            old = {p: n for p, n in iter_tree(self.tree) if isinstance(n, FileNode)}
            new = {p: n for p, n in iter_tree(root) if isinstance(n, FileNode)}
            for path, node in old.items():
                if path not in new or new[path].hash != node.hash:
                    self.index.remove(path)
            for path, node in new.items():
                if path not in old or old[path].hash != node.hash:
                    self.index.add(path, node)
        self.tree = root

    def _scan(self, verify: bool) -> object:
        """The whole target as it is on its filesystem, through the index (kept in step)."""
        file_index = self.store.file_index
        scanner = Scanner(self.fs, None, file_index, verify, self._ignore)
        root = scanner.node(self.dir)
        #: Entries that could not be read (not special files, which a sync replaces).
        self._unread = [rel for rel, why in scanner.skipped if why != SPECIAL]
        if file_index is not None:
            scanner.tidy()
            file_index.commit()
        return root

    def _forget(self) -> None:
        """What one sync's walks told the apply: gone when the sync ends or starts over."""
        self._confirmed, self._probed = [], []

    def _refusals(self, removes: tuple[str, ...]) -> None:
        """Why the first frame of an apply (or a dry run's ``Preflight``) is refused."""
        refuse(self.tree, removes, self.dir if self.unmarked else None, self.max_delete)

    def _end_stream(self) -> None:
        if self._stream is not None:
            self._stream.abort()
            self._stream = None

    # -- walking ---------------------------------------------------------------------------
    def _ensure_index(self) -> None:
        if not self._indexed:
            self._indexed = True
            for rel, node in iter_tree(self.tree):
                if isinstance(node, FileNode):
                    self.index.add(rel, node)

    def _walk(self, req: Walk) -> WalkReply:
        if req.root:  # a new sync starts
            self._forget()
        if req.root and req.root == self.tree.hash:
            if self.unmarked:  # it equals the source: a mirror from now on
                self.unmarked = False
                self._mark()
            return WalkReply(True, (), b"", 0, unread=self._unread_now())
        self._ensure_index()
        n = req.hash_len
        cut = self._cut(req.basis)
        subs = _by_hash(cut.values(), n) if not req.refine else {}
        listings: list[tuple[Entry, ...] | None] = []
        matched: list[bool] = []
        for i, rel in enumerate(req.dirs):
            node = lookup(self.tree, rel)
            packed = req.sums[i] if req.sums else b""
            if not isinstance(node, DirNode):
                listings.append(None)
                matched += [False] * len(split(packed))
                continue
            children: Iterable[tuple[str, Node]] = node.children.items()
            if packed:
                children, hits = unmatched(node.children, packed)
                matched += hits
            listings.append(entries(children, n))
        bits = bytearray((len(req.have) + 7) // 8)
        confirmed = self._confirmed
        for i, h in enumerate(req.have):
            if h in subs or self.index.find(h) is not None:
                bits[i // 8] |= 1 << (i % 8)
                if len(confirmed) < MAX_CONFIRMED:
                    confirmed.append(h)
        bits = _pack_bits(bits, len(req.have), matched)
        checks = b""
        if req.refine:
            self._probed = _probe(req, cut)
            found = (f is not None for leaf in self._probed for f in leaf)
            bits = _pack_bits(bits, len(req.have) + len(matched), found)
            checks = b"".join(
                probe_check([f[0] for f in leaf if f]) for leaf in self._probed if any(leaf)
            )
        root = self.tree.hash[:n] if req.root else b""  # the state the apply must find
        unread = self._unread_now() if req.root else ()  # once per sync
        return trusted(
            WalkReply, False, tuple(listings), bytes(bits), len(self.index), root, checks, unread
        )

    def _cut(self, spans: tuple[Span, ...]) -> dict[Span, list[Sub]]:
        """The sub-chunks of the old leaves overlapping each span, in file order.

        What it reads is added up from the trees first, and refused past the budget; a leaf
        under several spans is read and cut once.
        """
        leaves: dict[tuple[str, int], tuple[int, int]] = {}
        per_span: dict[Span, list[tuple[str, int]]] = {}
        total = 0
        for span in spans:
            node = lookup(self.tree, span.path)
            if not isinstance(node, FileNode):
                raise ProtocolError(f"basis {span.path!r} is not a file")
            ends = node.tree.leaf_ends()
            first = bisect_right(ends, span.start)
            last = min(bisect_left(ends, span.end), len(ends) - 1)
            keys = per_span.setdefault(span, [])
            for leaf in range(first, last + 1):
                keys.append((span.path, leaf))
                if (span.path, leaf) not in leaves:
                    start, end = node.tree.span(0, leaf)
                    leaves[span.path, leaf] = (start, end)
                    total += end - start
            if total > MAX_BASIS_READ:
                raise ProtocolError(f"basis spans would read more than {MAX_BASIS_READ} bytes")
        cache: dict[str, bytes] = {}
        cut: dict[tuple[str, int], list[Sub]] = {}
        for (rel, leaf), (start, end) in leaves.items():
            data = _read_held(self.store, rel, start, end, cache)
            cut[rel, leaf] = [(sub, rel, start + a, data[a:b]) for sub, a, b in sub_chunks(data)]
        return {span: [s for key in keys for s in cut[key]] for span, keys in per_span.items()}

    # -- applying --------------------------------------------------------------------------
    def _apply(self, req: Apply) -> ApplyReply | Ack:
        self._ensure_index()
        if req.part == 0:
            self._end_stream()
            if req.base and req.base != self.tree.hash[: req.hash_len]:
                return ApplyReply(self.tree.hash)  # stale plan: the source falls back to a walk
            self._refusals(req.removes)
            self._stream = ApplyStream(
                self.tree,
                self.store,
                req.hash_len,
                _by_hash(self._cut(req.basis).values(), req.hash_len),
                self._confirmed,
                self._probed,
            )
        elif self._stream is None:
            raise ProtocolError(f"apply frame {req.part} belongs to no open apply")
        stream = self._stream
        try:
            if self._ignore is not None:
                check_excluded(self._ignore, req, self.tree, self._dir_there)
            stream.apply(req)
        except BaseException:
            self._stream = None
            raise
        if req.final:
            self._stream = None
            if self.unmarked:
                self.unmarked = False
                self._mark()
            return ApplyReply(self.tree.hash)
        return Ack(req.part)


#: A sub-chunk of an old leaf: (full hash, path, offset, bytes).
Sub = tuple[bytes, str, int, bytes]
#: Where the target found a probed sub-chunk: (full hash, path, offset, length).
Found = tuple[bytes, str, int, int]


def _read_held(store: TargetStore, rel: str, start: int, end: int, cache: dict) -> bytes:
    """Bytes of a file the tree says is there: gone or replaced by hand means stale."""
    try:
        return store.read(rel, start, end, cache)
    except OSError as exc:
        raise StaleContent(rel, f"cannot be read ({exc.strerror or exc})") from exc


def _by_hash(cuts: Iterable[list[Sub]], n: int) -> Held:
    """Sub-chunks by short hash, for applies that name them by hash."""
    subs: Held = {}
    for cut in cuts:
        for digest, _, _, data in cut:
            subs.setdefault(digest[:n], (digest, data))
    return subs


def _probe(req: Walk, cut: dict[Span, list[Sub]]) -> list[list[Found | None]]:
    """Each probed sub-chunk looked up among the sub-chunks of its own span only."""
    out: list[list[Found | None]] = []
    width = probe_hash_len(req.hash_len)
    for span, leaf in zip(req.basis, req.refine, strict=True):
        near = {d[:width]: (d, rel, at, len(data)) for d, rel, at, data in cut[span]}
        out.append([near.get(h) for h in split_fixed(leaf, width)])
    return out


def _pack_bits(bits: bytearray, start: int, found: Iterable[bool]) -> bytearray:
    """Append answers to a bitmap that already answers ``start`` items."""
    i = start
    for hit in found:
        if i // 8 >= len(bits):
            bits.append(0)
        if hit:
            bits[i // 8] |= 1 << (i % 8)
        i += 1
    return bits
