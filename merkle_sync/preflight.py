"""The target's safety rules for deletions, and a dry run's question: would you refuse this plan?

A dry run plans, encodes and counts the apply but never sends it, so the two refusals the
target makes when an apply arrives (``--max-delete``, and a non-empty directory that has
never been a mirror) went unseen: ``-n`` listed deletions the real run then refused. So a
dry run whose plan removes something sends ``Preflight`` with those removals. Any target
answers it with the same checks as the first frame of an apply, and never changes
anything for it: ``Ack`` when it would go ahead, its refusal otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from merkle_sync.checks import Refused, check_items, check_path
from merkle_sync.merkle import DirNode, iter_tree, lookup
from merkle_sync.protocol import Message


@dataclass(frozen=True, slots=True)
class Preflight(Message):
    """The removals a plan would make, as its first apply frame would carry them."""

    removes: tuple[str, ...]

    def __post_init__(self) -> None:
        for p in check_items(self.removes, "removes"):
            check_path(p)


def refuse(
    tree: DirNode, removes: tuple[str, ...], unmarked: str | None, limit: int | None
) -> None:
    """Raise ``Refused`` if these removals break a safety rule of the target whose tree this
    is: ``unmarked`` (the directory, when it is not empty and has never been a mirror) takes
    no deletion at all, and no more than ``limit`` entries go, counting everything inside
    removed directories (``--max-delete``)."""
    if unmarked is not None and removes:
        raise Refused(
            f"{unmarked!r} is not empty and has never been a merkle-sync mirror: refusing "
            f"to delete {len(removes)} entries there (is it the right directory? use --force "
            "to mirror into it anyway)"
        )
    count = 0
    for rel in removes if limit is not None else ():
        node = lookup(tree, rel)
        for _ in iter_tree(node) if node is not None else ():
            count += 1
            if count > limit:  # type: ignore[operator]
                raise Refused(
                    f"the sync would delete more than {limit} entries on the target "
                    "(--max-delete): nothing was changed"
                )
