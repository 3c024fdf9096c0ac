"""A scan's directory stamps (``merkle_sync.dirstamp``): directories whose stamp matched, the
stamps of those listed entry by entry, and the index rows of what a scan did not find.

Mixed into ``Scanner``, whose state it shares: ``_stamps`` (the stored rows, ``None`` when
stamps are not used), ``_pending`` (stamped directories to settle), ``_fresh`` (directories
to stamp), ``_waiting`` (directories with files still being hashed), ``seen``, ``clean``,
``dirs``, ``dirty``, ``files``, ``ignore`` and ``index``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from merkle_sync.dirstamp import StampedDir, file_listing, own_children, subdirs_digest
from merkle_sync.merkle import DirNode, join


class Stamping:
    """The stamp bookkeeping of a scan."""

    index: Any
    ignore: Any
    files: int
    seen: set[str]
    clean: set[str]
    dirs: set[str]
    dirty: int
    _stamps: dict[str, tuple] | None
    _pending: list[tuple[StampedDir, tuple]]
    _fresh: dict[int, tuple[str, DirNode, bytes, dict[str, bytes]]]
    _waiting: set[int]

    def _stamped(
        self, node: DirNode, prefix: str, rel: str, infos: list, known: tuple, stack: list
    ) -> StampedDir:
        """A directory whose entries are as stamped: only its subdirectories are made (and
        queued); its files come from the stored listing if anything asks."""
        new = self._stamped_dir(node, rel, known[2])
        own = own_children(new)
        for info in infos:
            if info[1] == "d":
                name = info[0]
                child_rel = join(rel, name)
                if self.ignore is not None and self.ignore(child_rel, True):
                    continue
                sub = own[name] = DirNode(meta=info[3])
                stack.append((sub, prefix + name, child_rel, new, name))
        self.files += known[3]
        self.clean.add(rel)
        self._pending.append((new, known))
        return new

    def _stamped_dir(self, node: DirNode, rel: str, digest: bytes) -> StampedDir:
        """``node``'s directory as its stamp row stands for it: files loaded from the row's
        listing (which must still be the directory hashing to ``digest``) when asked."""
        assert self.index is not None
        listing = partial(self.index.stamps.listing, rel, digest)
        return StampedDir(node.meta, rel, listing, self.index.tree)

    def _settle(self) -> None:
        """After the scan: a stamped directory whose subdirectories hash as recorded takes
        its stored hash (deepest first), others load their files and hash as usual; then
        directories listed entry by entry get their stamp for the next scan."""
        for node, known in reversed(self._pending):
            if not node.keep and subdirs_digest(node.subdirs()) == known[1]:
                node.settle(known[2])
            else:
                node.children  # noqa: B018  (loaded, then hashed as any directory)
        for rel, node, mark, links in self._fresh.values():
            if not node.keep:
                self._put_stamp(rel, node, mark, links)

    def _put_stamp(self, rel: str, node: DirNode, mark: bytes, links: dict) -> tuple:
        assert self.index is not None
        files = file_listing(node, links)
        row = (mark, subdirs_digest(node.subdirs()), node.hash, len(files))
        self.index.stamps.put(rel, row, files)
        return row

    def _leave(self, node: DirNode, parent: DirNode | None, name: str) -> DirNode:
        """Everything below ``node`` is done. A directory listed entry by entry that can be
        stamped is stamped now and stands as a ``StampedDir`` from here on: its file nodes
        go, so the first scan after a large tree was written (all of it listed entry by
        entry) holds the directories on the way down, not every file."""
        if id(node) in self._waiting:  # its files are hashed later: keep it whole
            if parent is not None:
                self._waiting.add(id(parent))
            return node
        fresh = self._fresh.pop(id(node), None)
        if fresh is None or node.keep or self.index is None:
            return node
        rel, _, mark, links = fresh
        row = self._put_stamp(rel, node, mark, links)  # (its files stay in ``seen``)
        new = self._stamped_dir(node, rel, row[2])
        own_children(new).update(node.subdirs())
        new.settle(row[2])
        if parent is not None:
            own_children(parent)[name] = new
        return new

    def tidy(self, below: str = "") -> None:
        """Drop what the index holds of paths at or below ``below`` that this scan did not
        find (nothing to compare when every directory matched its stamp)."""
        if self.index is None:
            return
        stamping = self._stamps is not None
        self.index.keep_only(
            self.seen,
            below,
            self.clean,
            self.dirs if stamping else None,
            settled=stamping and self.dirty == 0 and below in self.clean,
        )
