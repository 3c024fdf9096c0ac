"""The duck-typed filesystem interface the replicators talk to, and its event types."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class FileSystemEventType(enum.IntEnum):
    """Values fixed by the contract so third-party enums compare by value."""

    FILE_OR_SUBDIR_ADDED = 1
    FILE_OR_SUBDIR_REMOVED = 2
    FILE_MODIFIED = 3


@dataclass(frozen=True, slots=True)
class FileSystemEvent:
    """A hint that something changed at ``path``; receivers must look at the real state."""

    path: str
    event_type: FileSystemEventType


Content = str | bytes
EventCallback = Callable[[FileSystemEvent], None]


class FileSystem(abc.ABC):
    """Documents the contract; the replicators accept any object with these methods."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def isfile(self, path: str) -> bool: ...

    @abc.abstractmethod
    def isdir(self, path: str) -> bool: ...

    @abc.abstractmethod
    def readfile(self, path: str) -> Content: ...

    @abc.abstractmethod
    def writefile(self, path: str, content: Content) -> None: ...

    @abc.abstractmethod
    def removefile(self, path: str) -> None: ...

    @abc.abstractmethod
    def listdir(self, path: str) -> Iterable[str]: ...

    @abc.abstractmethod
    def makedir(self, path: str) -> None: ...

    @abc.abstractmethod
    def makedirs(self, path: str) -> None: ...

    @abc.abstractmethod
    def removedir(self, path: str) -> None: ...

    @abc.abstractmethod
    def watchdir(self, path: str, callback: EventCallback) -> None: ...

    @abc.abstractmethod
    def unwatchdir(self, path: str) -> None: ...

    @abc.abstractmethod
    def debug_string(self, path: str) -> str: ...


# -- optional capabilities ---------------------------------------------------------------------
# A filesystem may offer these on top of the contract; the replicators use them when present
# and fall back to whole-file ``readfile`` / ``writefile`` otherwise, so a filesystem that has
# only the contract keeps its exact behaviour and operation counts.


@runtime_checkable
class RangeReader(Protocol):
    """Reads part of a file, so no file is ever held whole in memory."""

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """At most ``length`` bytes from ``offset``; fewer only at the end of the file."""


class StagedFile(Protocol):
    """A file being built in a private temporary place, invisible until committed."""

    def write(self, data: bytes | memoryview) -> None: ...

    def copy_from(self, path: str, offset: int, length: int) -> None:
        """Append bytes of another file without passing them through Python where possible."""

    def commit(self, path: str) -> None:
        """Atomically put the file at ``path`` (replacing a file there, never a directory)."""

    def abort(self) -> None:
        """Forget the file; nothing of it remains."""


#: What a filesystem that reports metadata says of one entry: ``(name, kind, key, meta)``.
#: ``kind`` is ``"d"`` (directory), ``"f"`` (regular file), ``"l"`` (symbolic link) or
#: ``"?"`` (anything else: FIFO, socket, device); ``key`` the stat identity ``(size,
#: mtime_ns, ctime_ns, inode, device)``; ``meta`` the ``(mode & 0o7777, mtime_ns)`` to keep.
EntryInfo = tuple[str, str, tuple[int, int, int, int, int], tuple[int, int]]


@runtime_checkable
class StatScanner(Protocol):
    """Lists a directory with one ``lstat`` per entry, for scans, metadata and indexes."""

    def entries(self, path: str) -> list[EntryInfo]: ...

    def info(self, path: str) -> EntryInfo: ...

    def stat_key(self, path: str) -> tuple[int, int, int, int, int]: ...

    def set_meta(self, path: str, meta: tuple[int, int], link: bool) -> None:
        """Give an entry its mode (not a link's) and its mtime, never following a link."""


@runtime_checkable
class Linker(Protocol):
    """Creates symbolic links (inside ``tmp_dir`` first, then renamed over ``path``)."""

    def make_link(self, tmp_dir: str, path: str, text: bytes) -> None: ...


@runtime_checkable
class Patcher(Protocol):
    """Changes a large file in place behind an undo journal kept in ``journal_dir``."""

    def patch(self, path: str, journal_dir: str) -> Any: ...

    def recover_patches(self, journal_dir: str) -> list[str]: ...


@runtime_checkable
class Stager(Protocol):
    """Creates staged files inside ``tmp_dir`` (on the same filesystem as the targets)."""

    def stage(self, tmp_dir: str) -> StagedFile: ...

    def rename(self, src: str, dst: str) -> None: ...
