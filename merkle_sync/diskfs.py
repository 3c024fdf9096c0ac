"""The filesystem contract on a real disk, so the replicators and benchmarks can run on files.

A disk does not remember whether a file was written as ``str`` or ``bytes``: ``readfile``
always returns ``bytes``. Symbolic links are never followed, so nothing outside the two
directories can be read or written through one: a link counts as a file whose content is
the link's target path, and replacing or removing it acts on the link itself. Watching only
registers callbacks; events are delivered with ``handle_event`` (an OS watcher backend is
outside this module).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tempfile

from merkle_sync.fs import Content, EventCallback, FileSystem, FileSystemEvent


def _is_dir(path: str) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


class DiskFileSystem(FileSystem):
    """Writes go to a temporary file first and are renamed over the target, never half-written."""

    def __init__(self) -> None:
        self._watches: dict[str, EventCallback] = {}

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def isfile(self, path: str) -> bool:
        return not _is_dir(path)

    def isdir(self, path: str) -> bool:
        return _is_dir(path)

    def readfile(self, path: str) -> bytes:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return os.fsencode(os.readlink(path))
        with open(path, "rb") as f:
            return f.read()

    def writefile(self, path: str, content: Content) -> None:
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
        if os.path.lexists(path) and _is_dir(path):
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
        if _is_dir(path):
            raise IsADirectoryError(f"is a directory: {path!r}")
        os.unlink(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def makedir(self, path: str) -> None:
        try:
            os.mkdir(path)
        except FileExistsError:
            if not _is_dir(path):
                raise

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def removedir(self, path: str) -> None:
        if not _is_dir(path):
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
