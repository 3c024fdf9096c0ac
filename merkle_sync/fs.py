"""The duck-typed filesystem interface the replicators talk to, and its event types."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass


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
