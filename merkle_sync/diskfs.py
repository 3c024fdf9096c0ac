"""The filesystem contract on a real disk, so the replicators and benchmarks can run on files.

A disk does not remember whether a file was written as ``str`` or ``bytes``: ``readfile``
always returns ``bytes``. Symbolic links are never followed, so nothing outside the two
directories can be read or written through one: through the contract a link reads as its
target path, and replacing or removing it acts on the link itself. Watching only registers
callbacks; events are delivered with ``handle_event`` (an OS watcher backend is outside this
module).

Beyond the contract it offers ranged reads (``pread``), staged files (a temporary file filled
piece by piece, with reused ranges copied in the kernel by ``copy_file_range``, then renamed
into place), in-place patches behind an undo journal, listings with one ``lstat`` per entry
and metadata (so links are replicated as links), and a filesystem flush (``syncfs``), so
neither side ever holds a whole file in memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import posixpath
import stat
from typing import Any

from merkle_sync.fs import Content, EntryInfo, EventCallback, FileSystem, FileSystemEvent
from merkle_sync.patchfile import PatchedFile, recover


def _syncfs() -> Any:
    """libc's ``syncfs`` (Linux), which Python's ``os`` does not wrap; ``None`` elsewhere."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # the C library already loaded
    except (OSError, AttributeError):
        return None


_SYNCFS = _syncfs()

#: Bytes per ``copy_file_range`` / ``pread`` call when copying a range between files.
COPY_STEP = 64 << 20
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_COUNTER = itertools.count()


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: Directory levels held open at once while a tree is removed.
REMOVE_DEPTH = 64


def remove_tree(path: str) -> None:
    """Remove a directory and all it holds, at any depth, never following a link.

    ``shutil.rmtree`` recurses once per level and keeps a descriptor open per level, so a
    tree deeper than the recursion limit (or the descriptor limit) cannot be removed with
    it. Here the walk is a loop over an explicit stack of directory descriptors, every name
    is resolved relative to its parent's descriptor (a directory swapped for a link is
    never entered), and a directory found ``REMOVE_DEPTH`` levels down is first renamed up
    into the top directory, so at most that many descriptors are ever open.
    """
    top = _opened_writable(path)
    stack: list[list[Any]] = [[top, "", os.scandir(top)]]
    moved = itertools.count()
    spilled = False  # entries renamed into the top since its listing began
    try:
        while stack:
            fd, name, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                entries.close()
                if len(stack) == 1 and spilled:  # list the top again for what moved there
                    spilled, stack[0][2] = False, os.scandir(top)
                    continue
                stack.pop()
                os.close(fd)  # empty now: remove it from its parent
                if stack:
                    os.rmdir(name, dir_fd=stack[-1][0])
            elif not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.name, dir_fd=fd)
            elif len(stack) >= REMOVE_DEPTH:
                os.close(_opened_writable(entry.name, fd))  # a move updates its ".." entry
                os.rename(entry.name, f".merkle-sync-removing-{next(moved)}", src_dir_fd=fd,
                          dst_dir_fd=top)  # fmt: skip
                spilled = True
            else:
                child = _opened_writable(entry.name, fd)
                stack.append([child, entry.name, os.scandir(child)])
    finally:
        for fd, _, entries in stack:
            entries.close()
            os.close(fd)
    os.rmdir(path)


def _opened_writable(name: str, dir_fd: int | None = None) -> int:
    """A directory about to be emptied, opened (never through a link) and, if read-only
    and ours, made writable: a mirror of a read-only source directory is removed whole, as
    ``rm -rf`` would, not refused entry by entry."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    mode = os.fstat(fd).st_mode
    if not mode & stat.S_IWUSR:
        with contextlib.suppress(PermissionError):  # not ours: the removal says so itself
            os.fchmod(fd, stat.S_IMODE(mode) | stat.S_IWUSR)
    return fd


def _is_dir(path: str) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """The stat identity a persistent index trusts: any content change moves one of these."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _info(name: str, st: os.stat_result) -> EntryInfo:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        kind = "d"
    elif stat.S_ISREG(mode):
        kind = "f"
    elif stat.S_ISLNK(mode):
        kind = "l"
    else:
        kind = "?"
    return name, kind, _key(st), (stat.S_IMODE(mode), st.st_mtime_ns)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class DiskStagedFile:
    """A temporary file in ``tmp_dir``; committed by a rename, removed on abort."""

    def __init__(self, tmp_dir: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        while True:  # cheap unique names; O_EXCL never takes over an existing file
            self.tmp = posixpath.join(tmp_dir, f".merkle_sync-{os.getpid()}-{next(_COUNTER)}.tmp")
            try:
                self._fd: int | None = os.open(self.tmp, flags, 0o666)  # the umask decides
                break
            except FileExistsError:
                continue
        self.size = 0
        self._live = True  # the temporary file exists (not yet renamed or removed)

    def write(self, data: bytes | memoryview) -> None:
        assert self._fd is not None
        _write_all(self._fd, data)
        self.size += len(data)

    def copy_from(self, path: str, offset: int, length: int) -> None:
        assert self._fd is not None
        src = os.open(path, _OPEN_READ)
        try:
            done = 0
            while done < length:
                step = min(COPY_STEP, length - done)
                try:
                    n = os.copy_file_range(src, self._fd, step, offset + done)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    n = self._copy_by_reading(src, offset + done, step)
                if n <= 0:
                    raise OSError(errno.EIO, f"{path!r} ended before byte {offset + length}")
                done += n
            self.size += length
        finally:
            os.close(src)

    def _copy_by_reading(self, src: int, offset: int, length: int) -> int:
        data = os.pread(src, min(length, 1 << 20), offset)
        assert self._fd is not None
        _write_all(self._fd, data)
        return len(data)

    def close(self) -> None:
        """Written in full: let the descriptor go before the rename. One frame may stage
        thousands of small files, which must not hold a descriptor each until committed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def commit(self, path: str) -> None:
        self.close()
        try:
            if os.path.lexists(path) and _is_dir(path):
                raise IsADirectoryError(f"is a directory: {path!r}")
            os.replace(self.tmp, path)
            self._live = False
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self.close()
        if self._live:
            self._live = False
            os.unlink(self.tmp)


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

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(path, _OPEN_READ)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return os.fsencode(os.readlink(path))[offset : offset + length]
        try:
            out = os.pread(fd, length, offset)
            while len(out) < length:  # pread may return less than asked before the end
                more = os.pread(fd, length - len(out), offset + len(out))
                if not more:
                    break
                out += more
            return out
        finally:
            os.close(fd)

    def entries(self, path: str) -> list[EntryInfo]:
        with os.scandir(path) as it:
            return [_info(entry.name, entry.stat(follow_symlinks=False)) for entry in it]

    def info(self, path: str) -> EntryInfo:
        return _info(posixpath.basename(path), os.lstat(path))

    def stat_key(self, path: str) -> tuple[int, int, int, int, int]:
        return _key(os.lstat(path))

    def set_meta(self, path: str, meta: tuple[int, int], link: bool) -> None:
        if not link:
            os.chmod(path, meta[0], follow_symlinks=False)
        os.utime(path, ns=(meta[1], meta[1]), follow_symlinks=False)

    def make_link(self, tmp_dir: str, path: str, text: bytes) -> None:
        if os.path.lexists(path) and _is_dir(path):
            raise IsADirectoryError(f"is a directory: {path!r}")
        while True:
            tmp = posixpath.join(tmp_dir, f".merkle_sync-{os.getpid()}-{next(_COUNTER)}.link")
            try:
                os.symlink(text, tmp)
                break
            except FileExistsError:
                continue
        os.replace(tmp, path)

    def stage(self, tmp_dir: str) -> DiskStagedFile:
        return DiskStagedFile(tmp_dir)

    def patch(self, path: str, journal_dir: str) -> PatchedFile:
        return PatchedFile(path, journal_dir)

    def recover_patches(self, journal_dir: str) -> list[str]:
        return recover(journal_dir)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def lock(self, path: str) -> Any:
        """An exclusive lock on ``path`` (created if missing) against other processes, held
        while the returned file stays open; ``BlockingIOError`` says who holds it. A POSIX
        record lock: one process may take it again (a restarted target in the same one)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        held = os.fdopen(os.open(path, flags, 0o644), "r+b", buffering=0)
        try:
            fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = held.read(32).decode(errors="replace").strip() or "?"
            held.close()
            where = posixpath.dirname(posixpath.dirname(path))
            raise BlockingIOError(
                exc.errno, f"another merkle-sync (pid {holder}) is writing this directory", where
            ) from None
        held.truncate(0)
        held.write(str(os.getpid()).encode())
        return held

    def hardlink(self, src: str, dst: str) -> None:
        """A second name for a file (never following a link): how the target keeps the old
        version of a file it is about to replace, which stays in place until the rename."""
        os.link(src, dst, follow_symlinks=False)

    def sync_data(self, path: str) -> None:
        """Make everything written on the filesystem holding ``path`` durable (``syncfs``:
        one call for all the files of a frame, not an ``fsync`` per file)."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        try:
            if _SYNCFS is None or _SYNCFS(fd) != 0:
                os.fsync(fd)
                os.sync()
        finally:
            os.close(fd)

    def writefile(self, path: str, content: Content) -> None:
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
        if os.path.lexists(path) and _is_dir(path):
            raise IsADirectoryError(f"is a directory: {path!r}")
        staged = DiskStagedFile(posixpath.dirname(path) or ".")
        try:
            staged.write(data)
        except BaseException:
            staged.abort()
            raise
        staged.commit(path)

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
        remove_tree(path)

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
