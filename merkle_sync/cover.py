"""Which parts of a file's content tree the target lacks (pure: trees and a predicate).

Both walk the tree top-down and stop at the first node the target holds, so a file that
changed in one place costs one leaf-to-root path, whatever its size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from merkle_sync.contenttree import ContentTree
from merkle_sync.protocol import MAX_REUSE

if TYPE_CHECKING:
    from merkle_sync.frames import Item

Held = Callable[[bytes], bool]


def missing_leaves(tree: ContentTree, n: int, held: Held) -> list[tuple[int, int, int]]:
    """``(leaf index, start, end)`` of the leaves the target holds nowhere."""
    out: list[tuple[int, int, int]] = []
    stack = [(tree.height - 1, 0)]
    while stack:
        level, index = stack.pop()
        if held(tree.hash(level, index)[:n]):
            continue
        if level:
            stack.extend((level - 1, c) for c in reversed(tree.children(level, index)))
        else:
            out.append((index, *tree.span(0, index)))
    return out


def cover(tree: ContentTree, n: int, held: Held, refined: dict[bytes, Any]) -> Iterator[Item]:
    """The file as top-down items: held nodes, and leaves (with their sub-chunks if refined).

    A held node larger than one frame may name is split into its children, which the
    target holds too.
    """
    stack = [(tree.height - 1, 0, False)]
    while stack:
        level, index, inside = stack.pop()
        key = tree.hash(level, index)[:n]
        start, end = tree.span(level, index)
        if inside or held(key):
            if level and end - start > MAX_REUSE:
                stack.extend((level - 1, c, True) for c in reversed(tree.children(level, index)))
            else:
                yield key, start, end, None
        elif level:
            stack.extend((level - 1, c, False) for c in reversed(tree.children(level, index)))
        else:
            yield key, start, end, refined.get(key, ())
