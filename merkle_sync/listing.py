"""A directory's entries as a walk compares them: whole, or as digests of a few bytes (pure).

A listing entry is a name, a kind, a short hash and the metadata: about 20 bytes. Below the
root, the source sends instead one digest per child of each directory it asks
(``Walk.sums``), and the target answers with only the entries it did not match, and a bit
per digest. How wide a digest is grows with the directory (``checks.digest_width``).
"""

from __future__ import annotations

from collections.abc import Iterable

from merkle_sync.checks import digest_width, split_fixed, trusted
from merkle_sync.merkle import DirNode, Node, entry_digest
from merkle_sync.protocol import Entry


def entries(children: Iterable[tuple[str, Node]], hash_len: int) -> tuple[Entry, ...]:
    """Children as listing entries, hashes cut to ``hash_len``."""
    return tuple(trusted(Entry, k, c.kind, c.hash[:hash_len], c.meta) for k, c in children)


def listing(node: Node | None, hash_len: int) -> tuple[Entry, ...]:
    """What the target listed for a directory when it still equalled ``node``."""
    if not isinstance(node, DirNode):
        raise ValueError("change mode lost track of a directory")
    return entries(node.children.items(), hash_len)


def digests(children: dict[str, Node], hash_len: int) -> bytes:
    """The width, then the digest of each child, in the order of ``children``."""
    width = digest_width(hash_len, len(children))
    return bytes((width,)) + b"".join(
        entry_digest(k, c.kind, c.hash, c.meta)[:width] for k, c in children.items()
    )


def split(packed: bytes) -> list[bytes]:
    """The digests of one item of ``Walk.sums`` (validated: a width, then whole digests)."""
    return split_fixed(packed, packed[0], 1) if packed else []


def unmatched(
    children: dict[str, Node], packed: bytes
) -> tuple[list[tuple[str, Node]], list[bool]]:
    """The target's children whose digest the source did not send, and for each digest the
    source sent, whether one of those children has it."""
    theirs = split(packed)
    width = packed[0]
    ours = {k: entry_digest(k, c.kind, c.hash, c.meta)[:width] for k, c in children.items()}
    mine = set(ours.values())
    sent = set(theirs)
    return [(k, c) for k, c in children.items() if ours[k] not in sent], [d in mine for d in theirs]
