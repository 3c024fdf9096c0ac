"""A source tree that changes while a sync sends it (pure helpers of ``ReplicatorSource``).

Between the scan and the read of a file's bytes, a file can be rewritten, removed, or a
directory on its path replaced by a link. That is a local race, not the peer's error, and
it must not end the whole sync: the source rescans and starts over (``MAX_REFRESH`` times),
and a file that still changes after that, or that cannot be read at all any more, is left
out of this sync and reported, as an unreadable entry is: the target keeps its copy, and
the next sync tries again.
"""

from __future__ import annotations

import posixpath

from merkle_sync.merkle import DirNode, Node, lookup, put

#: Times one sync rescans the source and starts over when the source changed under it,
#: and then rounds of leaving out the files that still change (or vanish) while sent.
MAX_REFRESH = 3
CHANGING = "changed each time it was read for sending; the target keeps its copy"


class SyncError(RuntimeError):
    """The target still differs after a full-hash sync: something else is changing it."""


class Raced(Exception):
    """A source file could not be read as it was scanned while a sync was sending it."""

    def __init__(self, rel: str, error: OSError) -> None:
        super().__init__(f"{rel}: {error}")
        self.rel = rel
        self.error = error

    def why(self) -> str:
        return f"{type(self.error).__name__}: {self.error.strerror or self.error}"


def changed_paths(old: Node | None, new: Node | None, rel: str = "") -> list[str]:
    """Paths that differ between two scans: files added or changed, and entries removed
    (a removed directory once). The walk descends only where directory hashes differ, so an
    unchanged tree costs one comparison."""
    out: list[str] = []
    stack = [(old, new, rel)]
    while stack:
        a, b, at = stack.pop()
        if a is not None and b is not None and a.kind == b.kind and a.hash == b.hash:
            continue
        if not isinstance(b, DirNode) or not isinstance(a, DirNode | None):
            out.append(at)  # a file added, changed or removed, or a directory removed
            if isinstance(b, DirNode):
                stack.append((None, b, at))
            continue
        before = a.children if a is not None else {}
        for name in before.keys() | b.children.keys():
            path = posixpath.join(at, name) if at else name
            stack.append((before.get(name), b.children.get(name), path))
    return sorted(out)


def leave_out(tree: DirNode, exc: Exception, changed: list[str]) -> list[tuple[str, str]]:
    """Take out of this sync the file that could not be read (``exc``), or those that still
    changed after every rescan: the target keeps whatever it holds there. Returns them,
    with why, for ``skipped``."""
    why = [(exc.rel, exc.why())] if isinstance(exc, Raced) else []
    out = []
    for rel, reason in why + [(r, CHANGING) for r in changed]:
        parent = lookup(tree, posixpath.dirname(rel))
        name = posixpath.basename(rel)
        if rel and isinstance(parent, DirNode) and name in parent.children:
            put(tree, rel, None)
            parent.keep.add(name)
            out.append((rel, reason))
    return out


def under(rel: str, top: str) -> bool:
    return not top or rel == top or rel.startswith(top + "/")
