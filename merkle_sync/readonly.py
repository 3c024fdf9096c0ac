"""A read-only view of a filesystem, for the target of a dry run: it answers walks, and any
attempt to change something fails loudly instead of changing it.

It offers the contract's reads, ranged reads and stat listings (so the walk sees the same
tree and metadata as a real run) but no staging, patching or links: a target built on it
never creates its private state directory either.
"""

from __future__ import annotations

from typing import Any, NoReturn

from merkle_sync.fs import EntryInfo, EventCallback


class ReadOnlyFileSystem:
    def __init__(self, fs: Any) -> None:
        self._fs = fs

    def exists(self, path: str) -> bool:
        return self._fs.exists(path)

    def isfile(self, path: str) -> bool:
        return self._fs.isfile(path)

    def isdir(self, path: str) -> bool:
        return self._fs.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return self._fs.listdir(path)

    def readfile(self, path: str) -> Any:
        return self._fs.readfile(path)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        return self._fs.read_range(path, offset, length)

    def entries(self, path: str) -> list[EntryInfo]:
        return self._fs.entries(path)

    def info(self, path: str) -> EntryInfo:
        return self._fs.info(path)

    def stat_key(self, path: str) -> tuple[int, int, int, int, int]:
        return self._fs.stat_key(path)

    def _refuse(self, path: str) -> NoReturn:
        raise PermissionError(f"dry run: refusing to change {path!r}")

    def set_meta(self, path: str, meta: tuple[int, int], link: bool) -> None:
        self._refuse(path)

    def writefile(self, path: str, content: Any) -> None:
        self._refuse(path)

    def removefile(self, path: str) -> None:
        self._refuse(path)

    def makedir(self, path: str) -> None:
        self._refuse(path)

    def makedirs(self, path: str) -> None:
        self._refuse(path)

    def removedir(self, path: str) -> None:
        self._refuse(path)

    def watchdir(self, path: str, callback: EventCallback) -> None:
        self._refuse(path)

    def unwatchdir(self, path: str) -> None:
        self._refuse(path)
