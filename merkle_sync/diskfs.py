"""The filesystem contract on a real disk, so the replicators and benchmarks can run on files.

A disk does not remember whether a file was written as ``str`` or ``bytes``: ``readfile``
always returns ``bytes``. Watching only registers callbacks; events are delivered with
``handle_event`` (an OS watcher backend is outside this module).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile

from merkle_sync.fs import Content, EventCallback, FileSystem, FileSystemEvent


class DiskFileSystem(FileSystem):
    """Writes go to a temporary file first and are renamed over the target, never half-written."""

    def __init__(self) -> None:
        self._watches: dict[str, EventCallback] = {}

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def isfile(self, path: str) -> bool:
        os.lstat(path)
        return os.path.isfile(path)

    def isdir(self, path: str) -> bool:
        os.lstat(path)
        return os.path.isdir(path)

    def readfile(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def writefile(self, path: str, content: Content) -> None:
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
        if os.path.isdir(path):
            raise IsADirectoryError(f"is a directory: {path!r}")
        fd, tmp = tempfile.mkstemp(dir=posixpath.dirname(path) or ".", prefix=".ms-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def removefile(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(f"is a directory: {path!r}")
        os.unlink(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def makedir(self, path: str) -> None:
        if not os.path.isdir(path):
            os.mkdir(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def removedir(self, path: str) -> None:
        if not os.path.isdir(path) or os.path.islink(path):
            raise NotADirectoryError(f"not a directory: {path!r}")
        shutil.rmtree(path)

    def watchdir(self, path: str, callback: EventCallback) -> None:
        self._watches[posixpath.normpath(path)] = callback

    def unwatchdir(self, path: str) -> None:
        self._watches.pop(posixpath.normpath(path), None)

    def debug_string(self, path: str) -> str:
        lines = []
        for root, dirs, files in sorted(os.walk(path)):
            rel = posixpath.relpath(root, path)
            lines += [posixpath.join(rel, d) + "/" for d in sorted(dirs)]
            lines += [posixpath.join(rel, f) for f in sorted(files)]
        return "\n".join(lines)

    def handle_event(self, event: FileSystemEvent) -> None:
        """Deliver an event to the watcher of the path's parent, as an OS backend would."""
        callback = self._watches.get(posixpath.dirname(posixpath.normpath(event.path)))
        if callback is not None:
            callback(event)
