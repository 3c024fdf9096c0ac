"""Changing a large file in place, with an undo journal: only changed bytes are written.

A 1-byte edit of a 4 GiB file should write a few bytes, not 4 GiB (rsync rewrites the whole
file unless told ``--inplace``, and then a crash leaves the file half old, half new). Here the
bytes about to be overwritten are first appended to an undo journal and the journal is
fsynced; only then is the file changed. ``abort`` (and, after a crash, ``recover``) puts the
old bytes back and the old size, so the file is always either the old version or, once
``commit`` returned, the new one. Readers of the file in the meantime may see a mix, which
is why only files above a size threshold are patched.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import posixpath
import stat
import struct

_MAGIC = b"merkle_sync undo 1\n"
_REC = struct.Struct("<QQ")
_STEP = 1 << 20
_COUNTER = itertools.count()
_FLAGS = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class NotPatchable(Exception):
    """The file cannot safely be changed in place (not a regular file, or hard-linked)."""


class PatchedFile:
    """Operations are queued by position, then journaled and applied by ``flush``."""

    def __init__(self, path: str, journal_dir: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | _FLAGS)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise NotPatchable(path)
        self._fd: int | None = fd
        self.old_size = st.st_size
        self.journal = posixpath.join(journal_dir, f"{os.getpid()}-{next(_COUNTER)}.undo")
        self._jfd: int | None = os.open(
            self.journal, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FLAGS, 0o600
        )
        name = os.fsencode(path)
        self._jpos = _write_at(
            self._jfd, _MAGIC + struct.pack("<QI", st.st_size, len(name)) + name, 0
        )
        self._saved_starts: list[int] = []
        self._saved: list[tuple[int, int, int]] = []  # (offset, length, journal offset of bytes)
        self.journaled = 0
        self._ops: list[tuple] = []
        self.size = 0  # bytes of the new content accounted so far
        self.flushed = 0  # the new content is on disk up to here

    # -- queueing ------------------------------------------------------------------------
    def skip(self, length: int) -> None:
        """These bytes stay as they are (the same content at the same place)."""
        self._ops.append(("skip", self.size, length))
        self.size += length

    def write(self, data: bytes | memoryview) -> None:
        self._ops.append(("data", self.size, bytes(data)))
        self.size += len(data)

    def copy_from(self, path: str, offset: int, length: int) -> None:
        self._ops.append(("copy", self.size, path, offset, length))
        self.size += length

    def take_ops(self) -> list[tuple]:
        """The queued operations, no longer to be applied here (the file is being staged)."""
        ops, self._ops = self._ops, []
        return ops

    def pending(self) -> int:
        """Bytes the queued operations would overwrite."""
        return sum(_length(op) for op in self._ops if op[0] != "skip")

    # -- applying ------------------------------------------------------------------------
    def flush(self) -> None:
        assert self._fd is not None and self._jfd is not None
        for op in self._ops:  # first the undo journal, durable
            if op[0] != "skip":
                self._save(op[1], _length(op))
        os.fsync(self._jfd)
        for op in self._ops:
            if op[0] == "data":
                _write_at(self._fd, op[2], op[1])
            elif op[0] == "copy":
                _, pos, src, offset, length = op
                if os.path.realpath(src) == os.path.realpath(self.path):
                    for at in range(0, length, _STEP):
                        n = min(_STEP, length - at)
                        _write_at(self._fd, self.read_old(offset + at, n), pos + at)
                else:
                    _copy(src, self._fd, offset, pos, length)
        self._ops = []
        self.flushed = self.size

    def _save(self, offset: int, length: int) -> None:
        end = min(offset + length, self.old_size)
        if offset >= end:
            return
        assert self._fd is not None and self._jfd is not None
        for at in range(offset, end, _STEP):
            n = min(_STEP, end - at)
            old = os.pread(self._fd, n, at)
            self._jpos = _write_at(self._jfd, _REC.pack(at, len(old)) + old, self._jpos)
            self._saved.append((at, len(old), self._jpos - len(old)))
            self._saved_starts.append(at)
            self.journaled += len(old)

    def read_old(self, offset: int, length: int) -> bytes:
        """Bytes of the old version, from the journal where they were overwritten."""
        assert self._fd is not None and self._jfd is not None
        out = []
        pos, end = offset, offset + length
        i = max(bisect.bisect_right(self._saved_starts, pos) - 1, 0)
        while pos < end:
            # Saved ranges never overlap and are in file order.
            while i < len(self._saved) and self._saved[i][0] + self._saved[i][1] <= pos:
                i += 1
            if i < len(self._saved) and self._saved[i][0] <= pos:
                at, n, jat = self._saved[i]
                take = min(end, at + n) - pos
                out.append(os.pread(self._jfd, take, jat + pos - at))
            else:
                stop = min(end, self._saved[i][0]) if i < len(self._saved) else end
                take = stop - pos
                out.append(os.pread(self._fd, take, pos))
            pos += take
        data = b"".join(out)
        if len(data) != length:
            raise OSError(errno.EIO, f"{self.path!r} is shorter than its old version")
        return data

    def commit(self, path: str | None = None) -> None:
        """The new version is complete: make it durable and drop the journal."""
        assert self._fd is not None
        self.flush()
        if self.size < self.old_size:
            os.ftruncate(self._fd, self.size)
        os.fsync(self._fd)
        self._close()

    def abort(self) -> None:
        """Put the old version back exactly."""
        if self._fd is None:
            return
        assert self._jfd is not None
        for at, n, jat in reversed(self._saved):
            _write_at(self._fd, os.pread(self._jfd, n, jat), at)
        os.ftruncate(self._fd, self.old_size)
        os.fsync(self._fd)
        self._ops = []
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._jfd is not None:
            os.close(self._jfd)
            self._jfd = None
            os.unlink(self.journal)


def recover(journal_dir: str) -> list[str]:
    """After a crash: undo every patch whose journal is still there; returns their paths."""
    undone = []
    for name in sorted(os.listdir(journal_dir)):
        if not name.endswith(".undo"):
            continue
        journal = posixpath.join(journal_dir, name)
        with open(journal, "rb") as f:
            data = f.read()  # at most PATCH_MAX bytes of records: see the store
        if data.startswith(_MAGIC):
            _undo(data)
        os.unlink(journal)
        undone.append(journal)
    return undone


def _undo(data: bytes) -> None:
    pos = len(_MAGIC)
    old_size, name_len = struct.unpack_from("<QI", data, pos)
    pos += 12
    path = os.fsdecode(data[pos : pos + name_len])
    pos += name_len
    records = []
    while pos + _REC.size <= len(data):
        at, n = _REC.unpack_from(data, pos)
        pos += _REC.size
        if pos + n > len(data):
            break  # torn at the end: that batch was never applied
        records.append((at, data[pos : pos + n]))
        pos += n
    try:
        fd = os.open(path, os.O_RDWR | _FLAGS)
    except FileNotFoundError:
        return
    try:
        for at, old in reversed(records):
            _write_at(fd, old, at)
        os.ftruncate(fd, old_size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _length(op: tuple) -> int:
    return len(op[2]) if op[0] == "data" else op[-1]


def _write_at(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
    return offset


def _copy(src: str, fd: int, offset: int, at: int, length: int) -> None:
    sfd = os.open(src, os.O_RDONLY | _FLAGS)
    try:
        done = 0
        while done < length:
            try:
                n = os.copy_file_range(
                    sfd, fd, min(length - done, 64 << 20), offset + done, at + done
                )
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                chunk = os.pread(sfd, min(length - done, _STEP), offset + done)
                _write_at(fd, chunk, at + done)
                n = len(chunk)
            if n <= 0:
                raise OSError(errno.EIO, f"{src!r} ended early")
            done += n
    finally:
        os.close(sfd)
