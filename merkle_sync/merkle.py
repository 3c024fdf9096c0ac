"""The directory Merkle tree: file and directory nodes and their blake3 hashes (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import msgpack
from blake3 import blake3

from merkle_sync.chunking import HASH_CONTEXT
from merkle_sync.contenttree import ContentTree, build_tree

KIND_DIR = 0
KIND_BYTES = 1
KIND_STR = 2
#: A symbolic link: its content is the link text, copied as-is and never followed.
KIND_LINK = 3

#: What a filesystem that reports metadata says of an entry, as ``rsync -a`` keeps it: the
#: permission bits (``mode & 0o7777``) and the modification time in nanoseconds. ``None``
#: where the filesystem reports none (the contract's), so content-only trees keep their hashes.
Meta = tuple[int, int]

FILE_KEY = blake3(derive_key_context=HASH_CONTEXT + "file").digest()
DIR_KEY = blake3(derive_key_context=HASH_CONTEXT + "dir").digest()
ENTRY_KEY = blake3(derive_key_context=HASH_CONTEXT + "entry").digest()


def encode_content(content: str | bytes) -> tuple[int, bytes]:
    """``str`` travels as UTF-8 (surrogates kept) and keeps its kind so it comes back as ``str``."""
    if isinstance(content, str):
        return KIND_STR, content.encode("utf-8", "surrogatepass")
    if isinstance(content, (bytes, bytearray, memoryview)):
        return KIND_BYTES, bytes(content)
    raise TypeError(f"file content must be str or bytes, not {type(content).__name__}")


def decode_content(kind: int, data: bytes) -> str | bytes:
    """Inverse of :func:`encode_content`."""
    return data.decode("utf-8", "surrogatepass") if kind == KIND_STR else data


def entry_digest(name: str, kind: int, digest: bytes, meta: Meta | None) -> bytes:
    """One directory entry as a walk compares it (name, kind, full hash, metadata), hashed:
    a few bytes of this stand for a whole listing entry (``Walk.sums``)."""
    packed = msgpack.packb(
        [
            name.encode("utf-8", "surrogateescape"),
            kind,
            digest,
            None if meta is None else list(meta),
        ]
    )
    return blake3(packed, key=ENTRY_KEY).digest()


def file_hash(kind: int, root: bytes) -> bytes:
    """A file node commits to its content tree and to whether it is ``str`` or ``bytes``."""
    return blake3(bytes((kind,)) + root, key=FILE_KEY).digest()


@dataclass(frozen=True, slots=True)
class FileNode:
    """``hash`` covers the content (and its kind) only; ``meta`` travels beside it, so a
    change of mode or time alone is told apart from a change of content."""

    kind: int
    tree: ContentTree
    hash: bytes
    meta: Meta | None = None

    @classmethod
    def from_content(cls, content: str | bytes) -> FileNode:
        kind, data = encode_content(content)
        return cls.from_data(kind, data)

    @classmethod
    def from_data(cls, kind: int, data: bytes, meta: Meta | None = None) -> FileNode:
        return cls.from_tree(kind, build_tree(data), meta)

    @classmethod
    def from_tree(cls, kind: int, tree: ContentTree, meta: Meta | None = None) -> FileNode:
        return cls(kind, tree, file_hash(kind, tree.root), meta)


class DirNode:
    """Mutable so one event re-hashes only the changed path; the hash is cached until touched.

    The hash commits to each child's name, kind, hash and, when known, metadata; a
    directory's own metadata is part of its parent's hash.
    """

    __slots__ = ("_hash", "children", "keep", "meta")
    kind = KIND_DIR

    def __init__(self, children: dict[str, Node] | None = None, meta: Meta | None = None) -> None:
        self.children: dict[str, Node] = children if children is not None else {}
        self.meta = meta
        #: Names that could not be read here: a sync leaves the target's copies alone.
        self.keep: set[str] = set()
        self._hash: bytes | None = None

    @property
    def hash(self) -> bytes:
        if self._hash is None:
            _rehash(self)
        assert self._hash is not None
        return self._hash

    def touch(self) -> None:
        self._hash = None

    def subdirs(self) -> Iterator[tuple[str, DirNode]]:
        """The subdirectories (a stamped directory lists them without loading its files)."""
        return ((n, c) for n, c in self.children.items() if isinstance(c, DirNode))


Node = FileNode | DirNode


def _rehash(top: DirNode) -> None:
    """Hash the stale directories below ``top`` bottom-up with an explicit stack, so a tree
    of any depth never meets the recursion limit."""
    stack: list[tuple[DirNode, bool]] = [(top, False)]
    while stack:
        node, children_done = stack.pop()
        if node._hash is not None:
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend(
                (c, False)
                for c in node.children.values()
                if isinstance(c, DirNode) and c._hash is None
            )
            continue
        flat: list[object] = []
        for name in sorted(node.children):
            child = node.children[name]
            flat += (name, child.kind, child.hash)
            if child.meta is not None:  # a list, never a name: unambiguous
                flat.append(list(child.meta))
        packed = msgpack.packb(flat, unicode_errors="surrogateescape")  # any name on disk
        node._hash = blake3(packed, key=DIR_KEY).digest()


def split(rel: str) -> list[str]:
    """Relative paths are ``""`` for the root and ``"a/b"`` below it."""
    return rel.split("/") if rel else []


def join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def lookup(root: Node | None, rel: str) -> Node | None:
    """The node at ``rel`` below ``root``, or ``None`` if nothing is there."""
    node = root
    for part in split(rel):
        if not isinstance(node, DirNode) or part not in node.children:
            return None
        node = node.children[part]
    return node


def _parent_chain(root: DirNode, rel: str) -> list[DirNode] | None:
    chain = [root]
    for part in split(rel)[:-1]:
        child = chain[-1].children.get(part)
        if not isinstance(child, DirNode):
            return None
        chain.append(child)
    return chain


def put(root: DirNode, rel: str, node: Node | None) -> Node | None:
    """Place (or with ``None`` remove) a node, invalidate ancestor hashes, return the old node."""
    chain = _parent_chain(root, rel)
    if chain is None or not rel:
        raise KeyError(f"no parent directory for {rel!r}")
    name = split(rel)[-1]
    old = chain[-1].children.pop(name, None)
    if node is not None:
        chain[-1].children[name] = node
    for d in chain:
        d.touch()
    return old


def set_dir_meta(root: DirNode, rel: str, meta: Meta) -> None:
    """A directory's own mode and mtime (they are part of its parent's hash)."""
    chain = _parent_chain(root, rel)
    node = lookup(root, rel)
    if chain is None or not rel or not isinstance(node, DirNode):
        raise KeyError(f"no directory at {rel!r}")
    node.meta = meta
    for d in chain:
        d.touch()


def iter_dirs(node: Node, rel: str = "") -> Iterator[str]:
    """The paths of every directory at or below ``node`` (files are not visited)."""
    if not isinstance(node, DirNode):
        return
    stack: list[tuple[str, DirNode]] = [(rel, node)]
    while stack:
        path, current = stack.pop()
        yield path
        stack.extend((join(path, n), c) for n, c in current.subdirs())


def iter_tree(node: Node, rel: str = "") -> Iterator[tuple[str, Node]]:
    """Every ``(rel, node)`` below and including ``node``, parents before children.

    Iterative, so a tree of any depth never meets the recursion limit.
    """
    stack: list[tuple[str, Node]] = [(rel, node)]
    while stack:
        path, current = stack.pop()
        yield path, current
        if isinstance(current, DirNode):
            stack.extend((join(path, n), c) for n, c in reversed(current.children.items()))
