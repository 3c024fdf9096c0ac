"""One sync as a conversation of messages, with no I/O: replies in, next request out (h11-style).

Two ways to find what differs:

* **Walk** (target state unknown: the first sync, or after anything went wrong). Top-down, one
  tree level per round trip: directories whose hashes differ are listed, and the content trees
  of files that must be written are probed against the target's content index, so everything
  at one depth shares a round trip.
* **Change** (after a sync succeeded, the source knows the target equals its previous tree).
  The old and new subtree at the event's path are compared locally, and content the target
  already holds is known locally, so the ``Apply`` goes out at once, guarded by the target's
  expected root hash. Only when many literal bytes would go does the session first probe the
  target's index, which also holds content removed recently (a rename).

Either way, a file the target holds an old version of travels as a zstd delta against it
when the source kept a copy of that version (``merkle_sync.kept``); otherwise a changed leaf
is refined first: its sub-chunks are looked up in the old version's leaves around the same
place (``merkle_sync.refine``).
One ``Apply`` then carries removals, new directories and each written file as a recipe
of reused target pieces and literal chunks.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Container, Iterator

from merkle_sync import protocol
from merkle_sync.contenttree import ContentTree
from merkle_sync.cover import cover
from merkle_sync.flow import ApplyFlow
from merkle_sync.frames import FRAME_LITERALS, ApplyHead, FrameCutter, Item
from merkle_sync.kept import Kept
from merkle_sync.listing import digests, listing
from merkle_sync.merkle import KIND_DIR, DirNode, FileNode, Meta, Node, iter_tree, join, lookup
from merkle_sync.protocol import (
    DELTA_MAX,
    LINK_KIND,
    MAX_CONFIRMED,
    Apply,
    Attr,
    Entry,
    ProtocolError,
    Walk,
    WalkReply,
    trusted,
)
from merkle_sync.refine import Probed, answer, refine

_NodeRef = tuple[ContentTree, int, int]  # (tree, level, index)

#: In change mode, probe the target's index first when more literal bytes than this would
#: travel: one extra round trip is cheaper than resending content the target kept.
PROBE_MIN = 64 << 10
#: ``read(rel, start, end)``: bytes of a source file.
Read = Callable[[str, int, int], bytes]


class SyncSession:
    """Plans one sync of ``root`` onto the target; ``read`` returns ranges of source files.

    Requests come out of ``start``/``start_change`` and ``receive``. An apply is a stream of
    frames: through a synchronous RPC each frame waits for its ``Ack``; over a byte stream
    ``ahead()`` hands out the next frames without waiting, and the replies are fed to
    ``receive`` as they come. ``frames`` counts requests, ``round_trips`` the waits that cost a
    network latency (each walk, and the end of the apply stream).
    """

    def __init__(
        self,
        root: DirNode,
        read: Read,
        hash_len: int,
        frame_literals: int = FRAME_LITERALS,
        kept: Kept | None = None,
    ) -> None:
        self.root = root
        self.kept = kept
        #: Written files sent as a delta against the kept old version: path -> its short hash.
        self.deltas: dict[str, bytes] = {}
        #: See ``FrameCutter.on_whole``.
        self.on_whole: Callable[[str, FileNode, bytes], None] | None = None
        self.frame_literals = frame_literals
        self.read = read
        self.hash_len = hash_len
        self.removes: list[str] = []
        self.attrs: list[Attr] = []
        self.mkdirs: list[str] = []
        self.writes: dict[str, FileNode] = {}
        self.target_root: bytes | None = None
        #: What the target said it could not read (``WalkReply.unread``), once it answered
        #: a walk that carried the root.
        self.target_unread: tuple[str, ...] | None = None
        self._base = b""
        self._known: Container[bytes] = frozenset()
        self._have: set[bytes] = set()
        self._dirs: list[str] = []
        self._probes: list[_NodeRef] = []
        self._asked_dirs: list[str] = []
        self._asked_names: list[list[str]] = []  # the children each digest list stands for
        self._asked: list[_NodeRef] = []
        self._queued: set[bytes] = set()
        self._probing = False
        #: Written files that replace an older version the target holds.
        self.updated: set[str] = set()
        self._refining = False
        self._refined: dict[bytes, Probed] = {}
        self._probe_sent = False
        self._flow: ApplyFlow | None = None
        self.cutter: FrameCutter | None = None
        self.frames = 0
        self.round_trips = 0
        self.done = False
        #: Hashes the target confirmed, by their first position in its list.
        self.confirmed: dict[bytes, int] = {}
        self._confirmed_count = 0

    @property
    def equal(self) -> bool:
        """True once the target is known to match the source root exactly."""
        return self.target_root == self.root.hash

    def start(self) -> Walk:
        """Walk mode: the first round compares full root hashes, so a no-op is one round trip."""
        self._asked_dirs = [""]
        return self._count(Walk(self.hash_len, self.root.hash, ("",), ()))

    def _count(self, request: Walk | Apply) -> Walk | Apply:
        self.frames += 1
        if isinstance(request, Walk) or request.part == 0:
            self.round_trips += 1
        return request

    def start_change(
        self,
        rel: str,
        old: Node | None,
        known: Container[bytes],
        base: bytes,
        parent_meta: Meta | None = None,
    ) -> Walk | Apply:
        """Change mode: ``old`` was at ``rel`` when the target's root began with ``base``.

        ``known`` holds the short hashes of all content the target had then.
        ``parent_meta``: the new mode and mtime of ``rel``'s directory, when the change moved
        them (an entry added or removed there changes its mtime).
        """
        self._known, self._base = known, base
        if parent_meta is not None:
            self._attr(posixpath.dirname(rel), parent_meta)
        new = lookup(self.root, rel)
        if new is None:
            if old is not None:
                self.removes.append(rel)
        elif old is None:
            self._add(rel, new)
        else:
            self._compare(rel, old.kind, old.hash[: self.hash_len], new, old.meta)

        def old_at(path: str) -> Node | None:
            return old if path == rel else lookup(old, path[len(rel) + 1 :] if rel else path)

        while self._dirs:
            path = self._dirs.pop()
            self._diff(path, listing(old_at(path), self.hash_len))
        if self._literal_bytes() > PROBE_MIN:
            self._probing = True
            for rel, node in self.writes.items():
                if rel not in self.deltas:
                    self._probe((node.tree, node.tree.height - 1, 0))
        return self._next()

    def receive(self, reply: object) -> Walk | Apply | None:
        """Take the target's reply; return the next request, or ``None`` when there is none
        to send now (``done`` tells whether the sync is over)."""
        if self._flow is not None:
            return self._receive_apply(reply)
        if not isinstance(reply, WalkReply):
            raise ProtocolError(f"unexpected reply {type(reply).__name__}")
        if reply.equal or reply.root:
            self.target_unread = reply.unread
        if reply.equal:
            self.target_root = self.root.hash
            self.done = True
            return None
        if len(reply.listings) != len(self._asked_dirs):
            raise ProtocolError("reply lists a different number of directories than asked")
        if self._asked_dirs == [""]:
            self._probing = reply.indexed > 0
            if reply.root and not self._base:
                self._base = reply.root[: self.hash_len]  # bind the apply to this target state
        at = len(self._asked)  # the digests' answers follow those of ``have``
        names_of = self._asked_names or [()] * len(reply.listings)
        for rel, listed, names in zip(self._asked_dirs, reply.listings, names_of, strict=True):
            if listed is None:
                raise ProtocolError(f"target reply does not match the walk at {rel!r}")
            matched = {name for j, name in enumerate(names) if reply.has(at + j)}
            at += len(names)
            self._diff(rel, listed, matched)
        if self._probe_sent:
            self._probe_sent = False
            answer(self._refined, reply.has, len(self._asked), reply.checks)
        for i, ref in enumerate(self._asked):
            if reply.has(i):
                key = self._short(ref)
                self._have.add(key)
                self._confirm(key)
            elif ref[1] > 0:
                tree, level, index = ref
                for child in tree.children(level, index):
                    self._probe((tree, level - 1, child))
        return self._next()

    def _confirm(self, key: bytes) -> None:
        """Mirror the target's list of confirmed hashes, to name them by position later."""
        if self._confirmed_count < MAX_CONFIRMED:
            self.confirmed.setdefault(key, self._confirmed_count)
            self._confirmed_count += 1

    # -- the apply stream ------------------------------------------------------------------
    def ahead(self) -> Apply | None:
        """The next apply frame, to send before the reply to the previous one arrives."""
        return self._flow.ahead() if self._flow is not None else None

    def _receive_apply(self, reply: object) -> Apply | None:
        assert self._flow is not None
        request, root = self._flow.receive(reply)
        if root is not None:
            self.target_root = root
            self.done = True
        return request

    # -- finding differences ---------------------------------------------------------------
    def _short(self, ref: _NodeRef) -> bytes:
        tree, level, index = ref
        return tree.hash(level, index)[: self.hash_len]

    def _held(self, key: bytes) -> bool:
        return key in self._have or key in self._known

    def _probe(self, ref: _NodeRef) -> None:
        key = self._short(ref)
        if self._probing and key not in self._queued and not self._held(key):
            self._queued.add(key)
            self._probes.append(ref)

    def _write(self, rel: str, node: FileNode) -> None:
        self.writes[rel] = node
        self._probe((node.tree, node.tree.height - 1, 0))

    def _add(self, rel: str, node: Node) -> None:
        for path, sub in iter_tree(node, rel):
            if isinstance(sub, DirNode):
                self.mkdirs.append(path)
                self._attr(path, sub.meta)  # set once its contents are written
            else:
                self._write(path, sub)

    def _attr(self, path: str, meta: Meta | None) -> None:
        if meta is not None:
            self.attrs.append(Attr(path, *meta))

    def _compare(
        self, path: str, kind: int, short: bytes, child: Node, meta: Meta | None = None
    ) -> None:
        """What to do about ``child`` given what the target has at ``path``."""
        if (kind == KIND_DIR) != isinstance(child, DirNode):
            self.removes.append(path)
            self._add(path, child)
            return
        if short != child.hash[: self.hash_len]:
            if isinstance(child, DirNode):
                self._dirs.append(path)
            else:
                self.updated.add(path)
                if self._can_delta(child, short):
                    self.deltas[path] = short
                    self.writes[path] = child  # no probe: the target needs no index for it
                else:
                    self._write(path, child)
                return  # the write carries the file's metadata
        if child.meta is not None and child.meta != meta:
            self._attr(path, child.meta)

    def _can_delta(self, child: FileNode, short: bytes) -> bool:
        """Whether ``child`` can travel as a delta against the target's version ``short``."""
        return (
            self.kept is not None
            and child.kind != LINK_KIND
            and child.tree.size <= DELTA_MAX
            and self.kept.has(short)
        )

    def _diff(self, rel: str, listed: tuple[Entry, ...], matched: Container[str] = ()) -> None:
        """``listed``: the target's entries at ``rel`` (those it did not match, when the walk
        sent digests); ``matched``: children the target holds exactly as here."""
        source = lookup(self.root, rel)
        if not isinstance(source, DirNode):
            raise ProtocolError(f"target reply does not match the walk at {rel!r}")
        target = {e.name: e for e in listed}
        for name in target.keys() - source.children.keys() - source.keep:
            self.removes.append(join(rel, name))
        for name, child in source.children.items():
            if name in matched:
                continue
            entry = target.get(name)
            if entry is None:
                self._add(join(rel, name), child)
            else:
                self._compare(join(rel, name), entry.kind, entry.hash, child, entry.meta)

    def _sums(self, dirs: list[str], have: int) -> tuple[bytes, ...]:
        """The digests of each directory's children (``Walk.sums``), remembering their names
        to read the target's answers. Past the walk's item limit (with ``have`` hashes in
        it already), a directory gets an empty item: the target lists it whole."""
        self._asked_names = []
        sums = []
        room = protocol.MAX_ITEMS - have
        for rel in dirs:
            node = lookup(self.root, rel)
            children = node.children if isinstance(node, DirNode) else {}
            fits = len(children) <= room
            room -= len(children) if fits else 0
            self._asked_names.append(list(children) if fits else [])
            sums.append(digests(children, self.hash_len) if fits else b"")
        return tuple(sums)

    def _next(self) -> Walk | Apply:
        if self._dirs or self._probes:
            self._asked_dirs, self._dirs = self._dirs, []
            self._asked, self._probes = self._probes, []
            have = tuple(self._short(r) for r in self._asked)
            sums = self._sums(self._asked_dirs, len(have))
            walk = trusted(Walk, self.hash_len, b"", tuple(self._asked_dirs), have, (), (), sums)
            return self._count(walk)
        self._asked_dirs, self._asked, self._asked_names = [], [], []
        if self.updated and not self._refining:
            self._refining = True
            refine = self._refine()
            if refine is not None:
                return self._count(refine)
        return self._apply()

    def _refine(self) -> Walk | None:
        """Ask which sub-chunks of the missing leaves the target has (``merkle_sync.refine``)."""
        edited = (
            (rel, node)
            for rel, node in self.writes.items()
            if rel in self.updated and rel not in self.deltas
        )
        probe, spans = refine(edited, self.hash_len, self._held, self.read, self._refined)
        if not probe:
            return None
        self._probe_sent = True
        return trusted(Walk, self.hash_len, b"", (), (), spans, probe)

    # -- the final request -----------------------------------------------------------------
    def _cover(self, node: FileNode, held: Callable[[bytes], bool]) -> Iterator[Item]:
        return cover(node.tree, self.hash_len, held, self._refined)

    def _literal_bytes(self) -> int:
        seen: set[bytes] = set()
        total = 0
        for rel, node in self.writes.items():
            if rel in self.deltas:
                continue
            for key, start, end, subs in self._cover(node, self._held):
                if subs is not None and key not in seen:
                    seen.add(key)
                    total += end - start
        return total

    def _apply(self) -> Apply:
        head = ApplyHead(
            self.hash_len,
            self._base,
            tuple(self.removes),
            tuple(self.mkdirs),
            (),
            tuple(self.attrs),
        )
        self.cutter = cutter = FrameCutter(
            head, self._held, self.read, self.frame_literals, confirmed=self.confirmed
        )
        cutter.on_whole = self.on_whole
        if self.deltas:
            cutter.deltas(self.deltas, self.kept)
        writes = ((rel, node, self._cover(node, cutter.held)) for rel, node in self.writes.items())
        self._flow = ApplyFlow(cutter.frames(writes), self._count)
        return self._flow.hand()

    def planned_bytes(self) -> int:
        """Literal bytes the apply will carry (an upper bound for very large applies), so the
        transport can pick a compression level before the first frame."""
        total = sum(node.tree.size for node in self.writes.values())
        return total if total > 256 << 20 else self._literal_bytes()
