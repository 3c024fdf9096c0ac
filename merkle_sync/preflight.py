"""A dry run's question to the target: would you refuse this plan? (a wire message)

A dry run plans, encodes and counts the apply but never sends it, so the two refusals the
target makes when an apply arrives (``--max-delete``, and a non-empty directory that has
never been a mirror) went unseen: ``-n`` listed deletions the real run then refused. So a
dry run whose plan removes something sends ``Preflight`` with those removals. Any target
answers it with the same checks as the first frame of an apply, and never changes
anything for it: ``Ack`` when it would go ahead, its refusal otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from merkle_sync.checks import check_items, check_path
from merkle_sync.protocol import Message


@dataclass(frozen=True, slots=True)
class Preflight(Message):
    """The removals a plan would make, as its first apply frame would carry them."""

    removes: tuple[str, ...]

    def __post_init__(self) -> None:
        for p in check_items(self.removes, "removes"):
            check_path(p)
