"""One sync as a conversation of messages, with no I/O: replies in, next request out (h11-style).

The walk goes top-down one tree level per round trip: directories whose hashes differ are
listed, and the content trees of files that must be written are probed against the target's
content index, so everything at one depth shares a round trip. Then one ``Apply`` carries
what the target must change: removals, new directories, and each written file as a recipe of
reused target pieces and literal chunks.
"""

from __future__ import annotations

from collections.abc import Callable

from merkle_sync.chunking import ContentTree
from merkle_sync.merkle import KIND_DIR, DirNode, FileNode, Node, iter_tree, join, lookup
from merkle_sync.protocol import (
    Apply,
    ApplyReply,
    Entry,
    ProtocolError,
    Walk,
    WalkReply,
    Write,
)

_NodeRef = tuple[ContentTree, int, int]  # (tree, level, index)


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
        self._dirs: list[str] = []
        self._probes: list[_NodeRef] = []
        self._asked_dirs: list[str] = []
        self._asked: list[_NodeRef] = []
        self._queued: set[bytes] = set()
        self._have: set[bytes] = set()
        self._probing = False

    @property
    def equal(self) -> bool:
        """True once the target is known to match the source root exactly."""
        return self.target_root == self.root.hash

    def start(self) -> Walk:
        """The first round compares full root hashes, so a no-op sync is one round trip."""
        self._asked_dirs = [""]
        return Walk(self.hash_len, self.root.hash, ("",), ())

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
            self._diff(rel, listing)
        for i, ref in enumerate(self._asked):
            if reply.has(i):
                self._have.add(self._short(ref))
            elif ref[1] > 0:
                tree, level, index = ref
                for child in tree.children(level, index):
                    self._probe((tree, level - 1, child))
        return self._next()

    # -- walking ---------------------------------------------------------------------------
    def _short(self, ref: _NodeRef) -> bytes:
        tree, level, index = ref
        return tree.levels[level][index][: self.hash_len]

    def _probe(self, ref: _NodeRef) -> None:
        key = self._short(ref)
        if self._probing and key not in self._queued:
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

    def _diff(self, rel: str, listing: tuple[Entry, ...] | None) -> None:
        source = lookup(self.root, rel)
        if listing is None or not isinstance(source, DirNode):
            raise ProtocolError(f"target reply does not match the walk at {rel!r}")
        target = {e.name: e for e in listing}
        for name in target.keys() - source.children.keys():
            self.removes.append(join(rel, name))
        for name, child in source.children.items():
            path = join(rel, name)
            entry = target.get(name)
            if entry is None:
                self._add(path, child)
            elif (entry.kind == KIND_DIR) != isinstance(child, DirNode):
                self.removes.append(path)
                self._add(path, child)
            elif entry.hash != child.hash[: self.hash_len]:
                if isinstance(child, DirNode):
                    self._dirs.append(path)
                else:
                    self._write(path, child)

    def _next(self) -> Walk | Apply:
        if self._dirs or self._probes:
            self._asked_dirs, self._dirs = self._dirs, []
            self._asked, self._probes = self._probes, []
            have = tuple(self._short(r) for r in self._asked)
            return Walk(self.hash_len, b"", tuple(self._asked_dirs), have)
        self._asked_dirs, self._asked = [], []
        return self._apply()

    # -- the final request -----------------------------------------------------------------
    def _apply(self) -> Apply:
        literals: list[bytes] = []
        sent: set[bytes] = set()
        writes = []
        for rel, node in self.writes.items():
            pieces: list[bytes | int] = []
            data = None
            stack = [(node.tree.height - 1, 0)]
            while stack:
                level, index = stack.pop()
                key = node.tree.levels[level][index][: self.hash_len]
                if key in self._have or key in sent:
                    pieces.append(key)
                elif level:
                    stack.extend((level - 1, c) for c in reversed(node.tree.children(level, index)))
                else:
                    data = self.read(rel) if data is None else data
                    start, end = node.tree.span(0, index)
                    literals.append(data[start:end])
                    sent.add(key)
                    if pieces and isinstance(pieces[-1], int):
                        pieces[-1] += 1
                    else:
                        pieces.append(1)
            size = node.tree.size
            writes.append(Write(rel, node.kind, size, node.hash[: self.hash_len], tuple(pieces)))
        return Apply(
            self.hash_len,
            tuple(self.removes),
            tuple(self.mkdirs),
            tuple(writes),
            tuple(len(x) for x in literals),
            b"".join(literals),
        )
