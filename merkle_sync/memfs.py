"""In-memory filesystem with operation counters and manual event delivery, for tests and demos."""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Callable

from merkle_sync.fs import Content, EventCallback, FileSystem, FileSystemEvent

_Dir = dict  # name -> _Dir | str | bytes


def _parts(path: str) -> list[str]:
    return [p for p in posixpath.normpath("/" + path).split("/") if p]


class MemoryFileSystem(FileSystem):
    """Raises the builtin OS exceptions so callers can treat it like a real disk."""

    def __init__(self) -> None:
        self._root: _Dir = {}
        self._watches: dict[str, EventCallback] = {}
        self._ops: Counter[str] = Counter()
        #: Set to a list to record every ``(operation, path)``, e.g. to prove what was read.
        self.log: list[tuple[str, str]] | None = None
        #: Called as ``fault(operation, path)`` before every mutation; raise to inject a failure.
        self.fault: Callable[[str, str], None] | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _count(self, op: str, path: str, mutating: bool = False) -> None:
        self._ops[op] += 1
        if self.log is not None:
            self.log.append((op, path))
        if mutating and self.fault is not None:
            self.fault(op, path)

    def _lookup(self, path: str) -> _Dir | Content:
        node: _Dir | Content = self._root
        for part in _parts(path):
            if not isinstance(node, dict):
                raise NotADirectoryError(f"not a directory on the way to {path!r}")
            if part not in node:
                raise FileNotFoundError(f"no such file or directory: {path!r}")
            node = node[part]
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = _parts(path)
        if not parts:
            raise IsADirectoryError(f"the root cannot be replaced: {path!r}")
        parent = self._lookup("/" + "/".join(parts[:-1]))
        if not isinstance(parent, dict):
            raise NotADirectoryError(f"parent of {path!r} is not a directory")
        return parent, parts[-1]

    def _dir(self, path: str) -> _Dir:
        node = self._lookup(path)
        if not isinstance(node, dict):
            raise NotADirectoryError(f"not a directory: {path!r}")
        return node

    # -- the contract ----------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        self._count("exists", path)
        try:
            self._lookup(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def isfile(self, path: str) -> bool:
        self._count("isfile", path)
        return not isinstance(self._lookup(path), dict)

    def isdir(self, path: str) -> bool:
        self._count("isdir", path)
        return isinstance(self._lookup(path), dict)

    def readfile(self, path: str) -> Content:
        self._count("readfile", path)
        node = self._lookup(path)
        if isinstance(node, dict):
            raise IsADirectoryError(f"is a directory: {path!r}")
        return node

    def writefile(self, path: str, content: Content) -> None:
        if not isinstance(content, (str, bytes)):
            raise TypeError(f"content must be str or bytes, not {type(content).__name__}")
        self._count("writefile", path, mutating=True)
        parent, name = self._parent(path)
        if isinstance(parent.get(name), dict):
            raise IsADirectoryError(f"is a directory: {path!r}")
        parent[name] = content

    def removefile(self, path: str) -> None:
        self._count("removefile", path, mutating=True)
        parent, name = self._parent(path)
        if name not in parent:
            raise FileNotFoundError(f"no such file: {path!r}")
        if isinstance(parent[name], dict):
            raise IsADirectoryError(f"is a directory: {path!r}")
        del parent[name]

    def listdir(self, path: str) -> list[str]:
        self._count("listdir", path)
        return list(self._dir(path))

    def makedir(self, path: str) -> None:
        self._count("makedir", path, mutating=True)
        parent, name = self._parent(path)
        existing = parent.get(name)
        if existing is None:
            parent[name] = {}
        elif not isinstance(existing, dict):
            raise FileExistsError(f"a file is in the way: {path!r}")

    def makedirs(self, path: str) -> None:
        self._count("makedirs", path, mutating=True)
        node = self._root
        for part in _parts(path):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise FileExistsError(f"a file is in the way of {path!r}")
            node = child

    def removedir(self, path: str) -> None:
        self._count("removedir", path, mutating=True)
        parent, name = self._parent(path)
        if name not in parent:
            raise FileNotFoundError(f"no such directory: {path!r}")
        if not isinstance(parent[name], dict):
            raise NotADirectoryError(f"not a directory: {path!r}")
        del parent[name]

    def watchdir(self, path: str, callback: EventCallback) -> None:
        self._count("watchdir", path)
        self._dir(path)
        self._watches[posixpath.normpath(path)] = callback

    def unwatchdir(self, path: str) -> None:
        self._count("unwatchdir", path)
        self._watches.pop(posixpath.normpath(path), None)

    def debug_string(self, path: str) -> str:
        lines: list[str] = []

        def walk(node: _Dir, depth: int) -> None:
            for name in sorted(node):
                child = node[name]
                if isinstance(child, dict):
                    lines.append("  " * depth + name + "/")
                    walk(child, depth + 1)
                else:
                    lines.append("  " * depth + f"{name}: {child!r}")

        walk(self._dir(path), 0)
        return "\n".join(lines)

    # -- test helpers ----------------------------------------------------------------------
    def get_num_operations(self, name: str) -> int:
        """How often a contract method ran, so tests can assert exact write counts."""
        return self._ops[name]

    def operation_counts(self) -> dict[str, int]:
        """A copy of all counters, so a benchmark can diff before and after one sync."""
        return dict(self._ops)

    def num_watched_dirs(self) -> int:
        """Watches are scarce; tests assert this to catch leaks."""
        return len(self._watches)

    def watched_dirs(self) -> set[str]:
        """The exact watched set, for tests that compare it with the source tree."""
        return set(self._watches)

    def handle_event(self, event: FileSystemEvent) -> None:
        """Deliver the event a real watcher would produce to the parent's callback."""
        callback = self._watches.get(posixpath.dirname(posixpath.normpath(event.path)))
        if callback is not None:
            callback(event)
