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
from collections.abc import Iterable
from dataclasses import dataclass, field

from merkle_sync.merkle import DirNode, Node, lookup, put

#: Times one sync rescans the source and starts over when the source changed under it;
#: after that, each failed attempt leaves out the files that still change (or cannot be
#: read), up to ``MAX_LEFT_OUT`` of them: every attempt then ends or leaves one more out.
MAX_REFRESH = 3
MAX_LEFT_OUT = 256
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


def victims(exc: Exception, changed: list[str]) -> list[tuple[str, str]]:
    """What to leave out after a failed attempt, with why: the file that could not be read
    (``exc``), or those that still changed after every rescan."""
    gone = [(exc.rel, exc.why())] if isinstance(exc, Raced) else []
    return gone + [(rel, CHANGING) for rel in changed]


def leave_out(tree: DirNode, files: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Take these files out of this sync: the target keeps whatever it holds there.
    Returns those that were in ``tree``, with why, for ``skipped``."""
    out = []
    for rel, reason in files:
        parent = lookup(tree, posixpath.dirname(rel))
        name = posixpath.basename(rel)
        if rel and isinstance(parent, DirNode) and name in parent.children:
            put(tree, rel, None)
            parent.keep.add(name)
            out.append((rel, reason))
    return out


@dataclass
class Retries:
    """One sync's answers to its failed attempts: rescan and start over, then leave out."""

    refreshed: int = 0
    left: dict[str, str] = field(default_factory=dict)  # files left out, and why
    vanished: int = 0  # attempts after which the rescan found only removals

    def answer(
        self, tree: DirNode, exc: Exception, changed: list[str]
    ) -> tuple[bool, list[tuple[str, str]]]:
        """After a failed attempt and a rescan (``changed``: what it found different):
        whether to try again, and what is left out of ``tree`` now, for ``skipped`` (the
        rescan put back what was left out before). Every ``True`` is a rescan within
        ``MAX_REFRESH``, or one more file left out or found gone within ``MAX_LEFT_OUT``, so
        the attempts end."""
        out = leave_out(tree, self.left.items())
        if changed and self.refreshed < MAX_REFRESH:
            self.refreshed += 1
            return True, out
        room = len(self.left) + self.vanished < MAX_LEFT_OUT
        new = [v for v in victims(exc, changed) if v[0] not in self.left]
        more = leave_out(tree, new) if room else []
        self.left.update(more)
        if not more and changed and room:  # only removals: the tree no longer holds them
            self.vanished += 1
            return True, out
        return bool(more), out + more


def under(rel: str, top: str) -> bool:
    return not top or rel == top or rel.startswith(top + "/")
