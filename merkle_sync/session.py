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

Either way, a changed leaf of a file the target holds an old version of is refined first:
its sub-chunks are looked up in the old version's leaves around the same place.
One ``Apply`` then carries removals, new directories and each written file as a recipe
of reused target pieces and literal chunks.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Container

from merkle_sync.chunking import CHUNK_AVG, ContentTree, sub_chunks
from merkle_sync.merkle import KIND_DIR, DirNode, FileNode, Node, iter_tree, join, lookup
from merkle_sync.protocol import (
    Apply,
    ApplyReply,
    Entry,
    ProtocolError,
    Span,
    Walk,
    WalkReply,
    Write,
)

_NodeRef = tuple[ContentTree, int, int]  # (tree, level, index)

#: In change mode, probe the target's index first when more literal bytes than this would
#: travel: one extra round trip is cheaper than resending content the target kept.
PROBE_MIN = 64 << 10
#: Missing leaves at least this large are refined into sub-chunks against the old leaves
#: around the same place, when the file changed in at most REFINE_MAX_LEAVES leaves.
REFINE_MIN = 2048
REFINE_MAX_LEAVES = 64

_Piece = tuple[bytes, int, int]  # (short hash, start, end); start < 0: the target has it


class SyncSession:
    """Plans one sync of ``root`` onto the target; ``read(rel)`` returns a source file's bytes."""

    def __init__(self, root: DirNode, read: Callable[[str], bytes], hash_len: int) -> None:
        self.root = root
        self.read = read
        self.hash_len = hash_len
        self.removes: list[str] = []
        self.mkdirs: list[str] = []
        self.writes: dict[str, FileNode] = {}
        self.target_root: bytes | None = None
        self._base = b""
        self._known: Container[bytes] = frozenset()
        self._have: set[bytes] = set()
        self._dirs: list[str] = []
        self._probes: list[_NodeRef] = []
        self._asked_dirs: list[str] = []
        self._asked: list[_NodeRef] = []
        self._queued: set[bytes] = set()
        self._probing = False
        self._old_paths: set[str] = set()  # written files the target holds an old version of
        self._refining = False
        self._refined: dict[bytes, list[_Piece]] = {}
        self._asked_subs: list[bytes] = []
        self._data: dict[str, bytes] = {}
        self._basis: tuple[Span, ...] = ()

    @property
    def equal(self) -> bool:
        """True once the target is known to match the source root exactly."""
        return self.target_root == self.root.hash

    def start(self) -> Walk:
        """Walk mode: the first round compares full root hashes, so a no-op is one round trip."""
        self._asked_dirs = [""]
        return Walk(self.hash_len, self.root.hash, ("",), ())

    def start_change(
        self, rel: str, old: Node | None, known: Container[bytes], base: bytes
    ) -> Walk | Apply:
        """Change mode: ``old`` was at ``rel`` when the target's root began with ``base``.

        ``known`` holds the short hashes of all content the target had then.
        """
        self._known, self._base = known, base
        new = lookup(self.root, rel)
        if new is None:
            if old is not None:
                self.removes.append(rel)
        elif old is None:
            self._add(rel, new)
        else:
            self._compare(rel, old.kind, old.hash[: self.hash_len], new)

        def old_at(path: str) -> Node | None:
            return old if path == rel else lookup(old, path[len(rel) + 1 :] if rel else path)

        while self._dirs:
            path = self._dirs.pop()
            self._diff(path, _listing(old_at(path), self.hash_len))
        if self._literal_bytes() > PROBE_MIN:
            self._probing = True
            for node in self.writes.values():
                self._probe((node.tree, node.tree.height - 1, 0))
        return self._next()

    def receive(self, reply: object) -> Walk | Apply | None:
        """Take the target's reply; return the next request, or ``None`` when finished."""
        if isinstance(reply, ApplyReply):
            self.target_root = reply.root
            return None
        if not isinstance(reply, WalkReply):
            raise ProtocolError(f"unexpected reply {type(reply).__name__}")
        if reply.equal:
            self.target_root = self.root.hash
            return None
        if len(reply.listings) != len(self._asked_dirs):
            raise ProtocolError("reply lists a different number of directories than asked")
        if self._asked_dirs == [""]:
            self._probing = reply.indexed > 0
        for rel, listing in zip(self._asked_dirs, reply.listings, strict=True):
            if listing is None:
                raise ProtocolError(f"target reply does not match the walk at {rel!r}")
            self._diff(rel, listing)
        for i, key in enumerate(self._asked_subs):
            if reply.has(i):
                self._have.add(key)
        for i, ref in enumerate(self._asked):
            if reply.has(i):
                self._have.add(self._short(ref))
            elif ref[1] > 0:
                tree, level, index = ref
                for child in tree.children(level, index):
                    self._probe((tree, level - 1, child))
        return self._next()

    # -- finding differences ---------------------------------------------------------------
    def _short(self, ref: _NodeRef) -> bytes:
        tree, level, index = ref
        return tree.levels[level][index][: self.hash_len]

    def _read(self, rel: str) -> bytes:
        """A source file's bytes, fetched at most once per session (refinement, then apply)."""
        if rel not in self._data:
            self._data[rel] = self.read(rel)
        return self._data[rel]

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
            else:
                self._write(path, sub)

    def _compare(self, path: str, kind: int, short: bytes, child: Node) -> None:
        """What to do about ``child`` given what the target has at ``path``."""
        if (kind == KIND_DIR) != isinstance(child, DirNode):
            self.removes.append(path)
            self._add(path, child)
        elif short != child.hash[: self.hash_len]:
            if isinstance(child, DirNode):
                self._dirs.append(path)
            else:
                self._old_paths.add(path)
                self._write(path, child)

    def _diff(self, rel: str, listing: tuple[Entry, ...]) -> None:
        source = lookup(self.root, rel)
        if not isinstance(source, DirNode):
            raise ProtocolError(f"target reply does not match the walk at {rel!r}")
        target = {e.name: e for e in listing}
        for name in target.keys() - source.children.keys():
            self.removes.append(join(rel, name))
        for name, child in source.children.items():
            entry = target.get(name)
            if entry is None:
                self._add(join(rel, name), child)
            else:
                self._compare(join(rel, name), entry.kind, entry.hash, child)

    def _next(self) -> Walk | Apply:
        self._asked_subs = []
        if self._dirs or self._probes:
            self._asked_dirs, self._dirs = self._dirs, []
            self._asked, self._probes = self._probes, []
            have = tuple(self._short(r) for r in self._asked)
            return Walk(self.hash_len, b"", tuple(self._asked_dirs), have)
        self._asked_dirs, self._asked = [], []
        if self._old_paths and not self._refining:
            self._refining = True
            refine = self._refine()
            if refine is not None:
                return refine
        return self._apply()

    def _refine(self) -> Walk | None:
        """Ask which sub-chunks of the missing leaves the target has in its old version nearby.

        The span around each leaf is wide enough for small shifts; the target widens it to
        whole leaves of its own file and cuts those, just as each new leaf is cut here.
        """
        n = self.hash_len
        wants: dict[bytes, None] = {}
        spans: list[Span] = []
        sent: set[bytes] = set()
        for rel, node in self.writes.items():
            missing = [(a, b) for _, a, b in self._cover(node, sent) if a >= 0]
            big = [(a, b) for a, b in missing if b - a >= REFINE_MIN]
            if rel not in self._old_paths or not big or len(missing) > REFINE_MAX_LEAVES:
                continue
            data = self._read(rel)
            for a, b in big:
                parts = [(h[:n], a + s, a + e) for h, s, e in sub_chunks(data[a:b])]
                self._refined[node.tree.levels[0][bisect_right(node.tree.ends[0], a)][:n]] = parts
                wants.update((p[0], None) for p in parts)
                spans.append(Span(rel, max(a - CHUNK_AVG, 0), b + CHUNK_AVG))
        if not wants:
            return None
        self._asked_subs = list(wants)
        self._basis = tuple(spans)
        return Walk(self.hash_len, b"", (), tuple(wants), self._basis)

    # -- the final request -----------------------------------------------------------------
    def _cover(self, node: FileNode, sent: set[bytes]) -> list[_Piece]:
        """The file as top-down pieces; a missing leaf that was refined becomes sub-chunks."""
        tree = node.tree
        out: list[_Piece] = []
        stack = [(tree.height - 1, 0)]
        while stack:
            level, index = stack.pop()
            key = tree.levels[level][index][: self.hash_len]
            if self._held(key) or key in sent:
                out.append((key, -1, -1))
            elif level:
                stack.extend((level - 1, c) for c in reversed(tree.children(level, index)))
            elif key in self._refined:
                for sub, start, end in self._refined[key]:
                    held = self._held(sub) or sub in sent
                    out.append((sub, -1, -1) if held else (sub, start, end))
                    sent.add(sub)
            else:
                out.append((key, *tree.span(0, index)))
                sent.add(key)
        return out

    def _literal_bytes(self) -> int:
        sent: set[bytes] = set()
        return sum(
            end - start
            for node in self.writes.values()
            for _, start, end in self._cover(node, sent)
            if start >= 0
        )

    def _apply(self) -> Apply:
        literals: list[bytes] = []
        sent: set[bytes] = set()
        writes = []
        for rel, node in self.writes.items():
            pieces: list[bytes | int] = []
            data = None
            for key, start, end in self._cover(node, sent):
                if start < 0:
                    pieces.append(key)
                    continue
                data = self._read(rel) if data is None else data
                literals.append(data[start:end])
                if pieces and isinstance(pieces[-1], int):
                    pieces[-1] += 1
                else:
                    pieces.append(1)
            size = node.tree.size
            writes.append(Write(rel, node.kind, size, node.hash[: self.hash_len], tuple(pieces)))
        return Apply(
            self.hash_len,
            self._base,
            tuple(self.removes),
            tuple(self.mkdirs),
            tuple(writes),
            tuple(len(x) for x in literals),
            b"".join(literals),
            self._basis,
        )


def _listing(node: Node | None, hash_len: int) -> tuple[Entry, ...]:
    """What the target listed for a directory when it still equalled ``node``."""
    if not isinstance(node, DirNode):
        raise ValueError("change mode lost track of a directory")
    return tuple(Entry(k, c.kind, c.hash[:hash_len]) for k, c in node.children.items())
