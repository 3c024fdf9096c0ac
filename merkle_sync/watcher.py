"""OS change notifications for a ``DiskFileSystem``: one recursive inotify watch, events out.

Why watchdog (7.1.0), not watchfiles (1.3.0). ``python -m benchmarks.watch`` on 100,000
files (1,000 directories of 100; ext4, warm cache, 2 shared cores): setup of the recursive
watch, latency from a writer's ``close`` to the report (300 writes spaced apart), idle CPU
over 20 s (share of one core; one clock tick is 0.05 %), resident memory once watching:

=========================  =======  =======  =======  ========  ===========  ==============
backend                    setup    p50      p99      idle CPU  RSS (MiB)    overflow told
=========================  =======  =======  =======  ========  ===========  ==============
watchdog, raw handler      0.09 s   0.3 ms   3.7 ms   0.00 %    18.0 (+1.7)  log line only
watchfiles, 50 ms step     0.19 s   70 ms    82 ms    0.15 %    17.6 (+0.8)  no
watchfiles, 5 ms step      0.29 s   5.7 ms   12 ms    0.60 %    17.6 (+0.8)  no
this adapter, 50 ms window 0.11 s   51 ms    54 ms    0.05 %    23.2 (+0.2)  on_overflow
=========================  =======  =======  =======  ========  ===========  ==============

Three runs gave the same picture. RSS is the process's once watching (with merkle_sync loaded
for the adapter), in brackets what the watch added; kernel memory for the watches is not in
it. Speed and memory allow either: watchdog sets up faster (it lists directories without a
``stat`` per file) and wakes only for events, watchfiles polls its queue every ``step_ms``.
Lost events decide. With the reader stopped while 20,000 files were written, watchdog 7.1.0
reads ``IN_Q_OVERFLOW``, logs a warning, drops its pending events, re-adds every watch and
calls ``on_queue_overflow`` on each callback of its ``InotifyFD`` (issue #654, overflows
skipped silently, is fixed at that layer), but an ``Observer``'s handlers hear nothing.
watchfiles tells nothing at all: notify 8 reports the overflow as an event with the
``Rescan`` flag and no path, and watchfiles drops every event without a path (its open issue
#348 asks about this). A file name that is not UTF-8 makes watchfiles raise on every later
``watch()`` (the error is never cleared); watchdog decodes names with ``os.fsdecode``, as
``DiskFileSystem`` does.

How. A watchdog ``Observer`` runs on our ``InotifyFD``, whose ``handle_event`` notes an
overflow (then lets watchdog rebuild its watches) and whose ``add_callback`` notes a
directory left unwatched (``ENOSPC`` past ``fs.inotify.max_user_watches``). Its threads only
queue paths; ``pump`` waits, coalesces and delivers through ``fs.handle_event`` on the
caller's thread (the source is not thread-safe), or calls ``on_overflow`` (``source.rescan``)
when anything may have been lost. A move out of the tree arrives 0.5 s late (watchdog waits
that long for the other half of a rename).

Why nothing falls between a new directory and its watch: files may be written into a new
directory before it is watched. watchdog adds the watch on its reader thread before it
queues the directory's creation; ``pump`` delivers that path (a ``window`` later at the
earliest) and the source rescans the whole new directory then. What was written before the
watch is found by that rescan, what comes after is reported by the watch: the order watch,
event, rescan closes the race; the window only merges the files' events into the directory's.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import queue
import stat
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.events import FileSystemEvent as WatchdogEvent
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyEvent, InotifyFD

from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.fs import FileSystemEvent, FileSystemEventType
from merkle_sync.protocol import RESERVED

logger = logging.getLogger(__name__)

ADDED = FileSystemEventType.FILE_OR_SUBDIR_ADDED
REMOVED = FileSystemEventType.FILE_OR_SUBDIR_REMOVED
MODIFIED = FileSystemEventType.FILE_MODIFIED

#: What the source needs to hear about. Leaving out opens, reads and close-without-write keeps
#: the source's own reads (every sync reads files) from echoing back as events, and keeps
#: them out of the kernel queue, which then overflows later.
EVENT_FILTER: list[type[WatchdogEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileModifiedEvent,  # also asks the kernel for IN_ATTRIB: chmod, utime, link count
    FileClosedEvent,
    FileAttribEvent,
    DirAttribEvent,
]
_KIND: dict[type[WatchdogEvent], FileSystemEventType] = {
    FileCreatedEvent: ADDED,
    DirCreatedEvent: ADDED,
    FileDeletedEvent: REMOVED,
    DirDeletedEvent: REMOVED,
}
#: Directory-watch failures that lose nothing: the directory is gone again (its removal reaches
#: its parent's watch), or unreadable (the source cannot mirror anything in it either).
_HARMLESS = {errno.ENOENT, errno.ENOTDIR, errno.EACCES}
# ``mkdir -p a/b``: watchdog watches a/b on a's creation, then again on b's, and warns that it
# replaces its callback there by the same one. Harmless.
warnings.filterwarnings("ignore", "Callback with id .* already exists", RuntimeWarning, __name__)
#: Seconds between checks that the reader threads live and the root is the same directory.
HEALTH_EVERY = 1.0


class WatchOverflow(RuntimeError):
    """Changes may have been lost and no ``on_overflow`` was given to rescan."""


class _Lost(str):
    """Queued by the reader threads, saying why some changes may never be reported."""


class _InotifyFD(InotifyFD):
    """watchdog's inotify reader, telling us what it would otherwise only log or swallow."""

    def __init__(self, put: Callable[[Any], None]) -> None:
        super().__init__()
        self._put = put

    def handle_event(self, event: InotifyEvent) -> None:
        """Every event read from the kernel passes here, the overflow too (``wd == -1``)."""
        if event.is_queue_overflow:
            self._put(_Lost("the kernel's inotify queue overflowed"))
        super().handle_event(event)

    def add_callback(self, path: bytes, mask: Any, callback: Any, id_: Any) -> Any:
        """watchdog skips a subdirectory it fails to watch; changes in it would go unseen."""
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno not in _HARMLESS:
                logger.warning("cannot watch %r: %s", os.fsdecode(path), exc)
                self._put(_Lost(f"cannot watch {os.fsdecode(path)!r}: {exc}"))
            raise


class _Observer(BaseObserver):
    """An inotify observer around our reader (``InotifyObserver`` always makes its own)."""

    def __init__(self, fd: _InotifyFD) -> None:
        super().__init__(InotifyEmitter, inotify_fd=fd)
        self.fd = fd

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self.fd.stop()
        self.fd.join()


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's dispatch thread: only turns events into queued ``(path, kind)``."""

    def __init__(self, root: str, put: Callable[[Any], None]) -> None:
        self.root = root
        self.put = put

    def on_any_event(self, event: WatchdogEvent) -> None:
        if isinstance(event, DirDeletedEvent) and _norm(event.src_path) == self.root:
            self.put(_Lost("the watched root was removed"))
            return
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            self.put((_norm(event.src_path), REMOVED))
            if event.dest_path:
                self.put((_norm(event.dest_path), ADDED))
            return
        self.put((_norm(event.src_path), _KIND.get(type(event), MODIFIED)))


def _norm(path: str | bytes) -> str:
    """Paths as the source and ``DiskFileSystem`` spell them (``os.fsdecode``: surrogates)."""
    return posixpath.normpath(os.fsdecode(path))


def _identity(path: str) -> tuple[int, int] | None:
    """What tells the watched root from a directory put in its place."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _merge(old: FileSystemEventType | None, new: FileSystemEventType) -> FileSystemEventType:
    """One type per path: the last one, but a new file stays "added" while it is written."""
    return ADDED if old is ADDED and new is MODIFIED else new


class DirWatcher:
    """Turns inotify notifications below ``root`` into the contract's events for ``fs``.

    ``pump`` delivers them on the caller's thread. ``window``: how long the tree must stay
    quiet before a batch is delivered, so a burst of writes costs one rescan and sync rather
    than one per file; ``max_delay``: the longest a batch waits while changes keep coming.
    ``fanout``: past this many changed entries in one directory, that directory is rescanned
    once instead (at the root, which has no parent to deliver to, ``on_overflow`` is called).
    ``on_overflow``: called when changes may have been lost, typically ``source.rescan``;
    without it ``pump`` raises ``WatchOverflow``.
    """

    def __init__(
        self,
        fs: DiskFileSystem,
        root: str,
        window: float = 0.05,
        on_overflow: Callable[[], None] | None = None,
        max_delay: float = 1.0,
        fanout: int = 64,
    ) -> None:
        self.fs = fs
        self.root = _norm(root)
        self.window = window
        self.max_delay = max(max_delay, window)
        self.fanout = fanout
        self.on_overflow = on_overflow
        self._inside = self.root.rstrip("/") + "/"  # what the paths below the root start with
        self._private = posixpath.join(self.root, RESERVED, "")  # the replicator's own state
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._observer: _Observer | None = None
        self._root_id: tuple[int, int] | None = None
        self._active = False
        self.overflows = 0  #: times ``on_overflow`` was called (or ``WatchOverflow`` raised)

    # -- lifetime --------------------------------------------------------------------------
    def start(self) -> None:
        """Watch ``root`` and everything below it; returns once every watch is in place."""
        if self._active:
            return
        self._root_id = _identity(self.root)
        if self._root_id is None:
            raise NotADirectoryError(f"not a directory: {self.root!r}")
        self._watch()
        self._active = True

    def close(self) -> None:
        """Stop watching: changes from now until another ``start`` go unreported."""
        self._active = False
        self._stop()

    def _watch(self) -> None:
        fd = _InotifyFD(self._queue.put)
        fd.start()
        observer = _Observer(fd)
        try:
            observer.schedule(
                _Handler(self.root, self._queue.put),
                self.root,
                recursive=True,
                event_filter=EVENT_FILTER,
            )
            observer.start()  # adds the watches on this thread, before it returns
        except BaseException:
            observer.on_thread_stop()
            raise
        self._observer = observer

    def _stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()

    # -- delivery --------------------------------------------------------------------------
    def pump(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds (``None``: forever) for a change, collect until the
        tree is quiet for ``window``, then deliver. Returns the events delivered, a call of
        ``on_overflow`` counting as one."""
        if not self._active:
            raise RuntimeError("pump() before start() or after close()")
        changes: dict[str, FileSystemEventType] = {}
        lost: list[str] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # in slices, so a dead reader is noticed even while waiting forever
            left = HEALTH_EVERY if deadline is None else deadline - time.monotonic()
            if self._collect(min(left, HEALTH_EVERY), changes, lost):
                break
            lost += self._check_health()
            if lost or (deadline is not None and time.monotonic() >= deadline):
                break
        if changes or lost:
            start = last = time.monotonic()
            while True:
                wait = min(last + self.window, start + self.max_delay) - time.monotonic()
                if wait <= 0 or not self._collect(wait, changes, lost):
                    break
                last = time.monotonic()
            lost += self._check_health()
        if not lost:
            paths, at_root = self._coalesce(changes)
            if not at_root or self.on_overflow is None:
                for i, path in enumerate(paths):
                    try:
                        self.fs.handle_event(FileSystemEvent(path, changes.get(path, MODIFIED)))
                    except BaseException:  # what was not delivered is delivered next time
                        for rest in paths[i:]:
                            self._queue.put((rest, changes.get(rest, MODIFIED)))
                        raise
                return len(paths)
            lost.append(f"{at_root} entries of the root changed at once")
        self.overflows += 1
        if self.on_overflow is None:
            raise WatchOverflow("; ".join(lost))
        logger.info("rescanning %r: %s", self.root, "; ".join(lost))
        try:
            self.on_overflow()
        except BaseException:
            self._queue.put(_Lost("; ".join(lost)))  # still owed a rescan
            raise
        return 1

    def _collect(
        self, timeout: float, changes: dict[str, FileSystemEventType], lost: list[str]
    ) -> bool:
        """Take everything queued, waiting up to ``timeout`` for the first item."""
        got = False
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            while True:
                got = True
                if isinstance(item, _Lost):
                    lost.append(str(item))
                else:
                    path, kind = item
                    if path.startswith(self._inside) and not (path + "/").startswith(self._private):
                        changes[path] = _merge(changes.get(path), kind)
                item = self._queue.get_nowait()
        except queue.Empty:
            return got

    def _check_health(self) -> list[str]:
        """Losses no event announces: a dead reader thread, or the root swapped or gone (its
        watch then follows the old directory, or nothing). Watches again when it can."""
        if not self._active:
            return []
        why: list[str] = []
        observer = self._observer
        if observer is not None and not (
            observer.is_alive()
            and observer.fd.is_alive()
            and all(e.is_alive() for e in observer.emitters)
        ):
            why.append("the watcher thread stopped")
        now = _identity(self.root)
        if now != self._root_id:
            why.append("the root was removed or replaced")
        if why:
            self._stop()
            self._root_id = now
            if now is not None:
                self._watch()  # the new directory; the rescan that follows finds its content
        return why

    def _coalesce(self, changes: dict[str, FileSystemEventType]) -> tuple[list[str], int]:
        """The paths to deliver, sorted: none below another (its rescan covers them), and a
        directory in place of more than ``fanout`` of its entries. Also how many entries of
        the root itself were past ``fanout`` (0 if not), which only a full rescan covers."""
        paths = _outermost(changes)
        while True:
            by_dir: defaultdict[str, list[str]] = defaultdict(list)
            for path in paths:
                by_dir[posixpath.dirname(path)].append(path)
            crowded = [d for d, ps in by_dir.items() if len(ps) > self.fanout and d != self.root]
            if not crowded:
                at_root = len(by_dir[self.root])
                return sorted(paths), at_root if at_root > self.fanout else 0
            for d in crowded:
                paths -= set(by_dir[d])
                paths.add(d)
            paths = _outermost(paths)


def _outermost(paths: Any) -> set[str]:
    """Drop every path that has an ancestor in ``paths``."""
    found = set(paths)
    out = set()
    for path in found:
        up = posixpath.dirname(path)
        while up not in found and up != posixpath.dirname(up):
            up = posixpath.dirname(up)
        if up not in found:
            out.add(path)
    return out
