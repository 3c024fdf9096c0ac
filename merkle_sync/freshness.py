"""Whether a target file still holds the bytes its index says, before they are reused.

The target's tree is built once and kept current through its own writes. Someone may still
edit, truncate or delete a file inside the target by hand; reusing such a file's "known"
pieces would copy the wrong bytes (a kernel copy never looks at them). So before a file's
pieces are copied, its stat identity is compared with the one the persistent index recorded
when the content was hashed or written: equal, the copy goes ahead unread; different or gone,
the file is stale. A file with no recorded identity (hashed within a second of its last
change, or no index) is read and every leaf checked against its hash instead.

A stale file raises ``StaleContent`` (a ``ProtocolError``, so the source re-plans); the target
re-indexes that file first, so the next plan is made against what is really there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from merkle_sync.fileindex import FileIndex
from merkle_sync.protocol import ProtocolError


class StaleContent(ProtocolError):
    """A file of the target changed on its disk since the target indexed it."""

    def __init__(self, rel: str, why: str = "changed since it was indexed") -> None:
        super().__init__(f"{rel!r} on the target {why}: re-indexed it, the source re-plans")
        self.rel = rel


class Freshness:
    """Per request, the verdict on each file whose pieces are reused (one ``lstat`` each)."""

    def __init__(
        self, fs: Any, file_index: FileIndex | None, where: Callable[[str], str], active: bool
    ) -> None:
        self.fs = fs
        self.file_index = file_index
        self.where = where
        #: Only on a filesystem with stat identities (a disk); the contract's filesystems
        #: are changed by nobody else, and keep their exact operation counts.
        self.active = active
        self._verdicts: dict[str, bool] = {}

    def begin(self) -> None:
        self._verdicts.clear()  # between requests anything may change

    def vouched(self, rel: str) -> bool:
        """True: unchanged by its stat identity, copy it unread. False: unknown, read it and
        check each leaf. Raises ``StaleContent`` when it certainly changed."""
        if not self.active or rel[:1] == "\0":  # a file of our own private state
            return True
        verdict = self._verdicts.get(rel)
        if verdict is None:
            known = self.file_index.key(rel) if self.file_index is not None else None
            try:
                now = self.fs.stat_key(self.where(rel))
            except FileNotFoundError:
                raise StaleContent(rel, "was removed by someone else") from None
            if known is not None and known != now:
                raise StaleContent(rel)
            verdict = self._verdicts[rel] = known is not None
        return verdict
