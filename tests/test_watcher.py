"""The inotify adapter with the real replicators on a real disk: changes arrive, bursts are
coalesced, swapped directories end equal, and lost events always lead to a rescan."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.fs import FileSystemEvent
from merkle_sync.protocol import RESERVED
from merkle_sync.testing import MeteredRpc, same_tree
from merkle_sync.watcher import DirWatcher, WatchOverflow

# watchdog's harmless warning on ``mkdir -p`` (see merkle_sync.watcher), which pytest's own
# warning filters let through again
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

#: Seconds a change may take to reach the target: generous, the machine is shared.
LIMIT = 10.0


@dataclass
class Mirror:
    """A source mirrored into a target, kept current only by the watcher's events."""

    src: Path
    dst: Path
    fs: DiskFileSystem
    source: ReplicatorSource
    watcher: DirWatcher
    delivered: list[str] = field(default_factory=list)
    rescans: int = 0

    def equal(self) -> bool:
        return same_tree(self.fs, str(self.src), self.fs, str(self.dst))

    def settle(self) -> bool:
        """Pump until the target equals the source, or ``LIMIT`` seconds pass."""
        end = time.monotonic() + LIMIT
        while time.monotonic() < end:
            self.watcher.pump(0.1)
            if self.equal():
                return True
        return False

    def pump_until(self, path: Path) -> None:
        """Pump until ``path`` was delivered (so every change made before it was seen)."""
        end = time.monotonic() + LIMIT
        while str(path) not in self.delivered and time.monotonic() < end:
            self.watcher.pump(0.1)
        assert str(path) in self.delivered


def _mirror(tmp_path: Path, build: dict[str, bytes | None]) -> Iterator[Mirror]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for rel, data in build.items():
        if data is None:
            (src / rel).mkdir(parents=True, exist_ok=True)
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    source = ReplicatorSource(fs, str(src), MeteredRpc(target.handle_request))
    m = Mirror(src, dst, fs, source, DirWatcher(fs, str(src)))

    def spy(event: FileSystemEvent) -> None:  # what the adapter hands to the filesystem
        m.delivered.append(event.path)
        DiskFileSystem.handle_event(fs, event)

    def rescan() -> None:
        m.rescans += 1
        source.rescan()

    fs.handle_event = spy  # type: ignore[method-assign]
    m.watcher.on_overflow = rescan
    assert m.equal()
    m.watcher.start()
    try:
        yield m
    finally:
        m.watcher.close()


TREE: dict[str, bytes | None] = {
    "top.txt": b"top",
    "a/b/c/deep.txt": b"deep",
    "a/b/mid.txt": b"mid",
    "a/side.txt": b"side",
    "gone/x": b"x",
    "gone/sub/y": b"y",
    "to_file/z": b"z",
    "to_link/w": b"w",
    "burst/": None,
}


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    yield from _mirror(tmp_path, TREE)


def test_a_written_file_reaches_the_target(mirror: Mirror) -> None:
    (mirror.src / "a" / "b" / "c" / "new.txt").write_bytes(b"new")
    (mirror.src / "top.txt").write_bytes(b"changed at the top")
    assert mirror.settle()
    assert (mirror.dst / "a" / "b" / "c" / "new.txt").read_bytes() == b"new"


def test_a_burst_of_new_files_costs_few_syncs(mirror: Mirror) -> None:
    mirror.watcher.window = 0.5  # one batch even if the shared machine stalls the writer
    before = mirror.source.stats.syncs
    for i in range(1000):
        (mirror.src / "burst" / f"f{i:04}").write_bytes(b"%d" % i)
    assert mirror.settle()
    assert len(os.listdir(mirror.dst / "burst")) == 1000
    assert mirror.source.stats.syncs - before <= 5
    assert mirror.rescans == 0  # coalesced into the directory, not a full rescan


def test_a_burst_at_the_root_is_one_rescan(mirror: Mirror) -> None:
    mirror.watcher.window = 0.5
    before = mirror.source.stats.syncs
    for i in range(mirror.watcher.fanout + 10):
        (mirror.src / f"root{i:03}").write_bytes(b"r")
    assert mirror.settle()
    assert mirror.rescans >= 1 and mirror.source.stats.syncs - before <= 5


def test_a_new_directory_filled_at_once_is_mirrored(mirror: Mirror) -> None:
    """Files written before the new directory's watch exists are found by its rescan."""
    new = mirror.src / "fresh" / "er" / "est"
    new.mkdir(parents=True)
    for i in range(50):
        (new / f"f{i}").write_bytes(b"fresh")
    assert mirror.settle()
    (new / "later").write_bytes(b"watched by now")
    assert mirror.settle()


def test_removed_and_swapped_directories_end_equal(mirror: Mirror, tmp_path: Path) -> None:
    shutil.rmtree(mirror.src / "gone")
    shutil.rmtree(mirror.src / "a" / "b")
    assert mirror.settle()
    shutil.rmtree(mirror.src / "to_file")
    (mirror.src / "to_file").write_bytes(b"a file where a directory was")
    assert mirror.settle()
    shutil.rmtree(mirror.src / "to_link")
    os.symlink(tmp_path / "elsewhere", mirror.src / "to_link")  # replicated as a link
    assert mirror.settle()
    assert os.readlink(mirror.dst / "to_link") == str(tmp_path / "elsewhere")
    # and back: the link becomes a directory again, whose changes are watched as before
    os.unlink(mirror.src / "to_link")
    (mirror.src / "to_link" / "again").mkdir(parents=True)
    assert mirror.settle()
    (mirror.src / "to_link" / "again" / "f").write_bytes(b"watched")
    assert mirror.settle()


def test_a_moved_directory_ends_equal(mirror: Mirror) -> None:
    os.rename(mirror.src / "a" / "b", mirror.src / "moved")
    assert mirror.settle()
    (mirror.src / "moved" / "c" / "deep.txt").write_bytes(b"written after the move")
    assert mirror.settle()


def test_a_name_that_is_not_utf8_is_mirrored(mirror: Mirror) -> None:
    name = os.fsdecode(b"bad-\xff")
    (mirror.src / "a" / name).write_bytes(b"odd name")
    assert mirror.settle()
    assert (mirror.dst / "a" / name).read_bytes() == b"odd name"


def test_an_overflow_leads_to_a_rescan(mirror: Mirror) -> None:
    """The reader gets the kernel's overflow record (``wd == -1``) and hands it to
    ``handle_event``, as for every event it reads; the changes it stands for are never
    reported, like this one, made while nothing watched."""
    mirror.watcher.close()
    (mirror.src / "unseen.txt").write_bytes(b"changed while not watched")
    shutil.rmtree(mirror.src / "gone")
    mirror.watcher.start()
    assert mirror.watcher.pump(0.2) == 0 and not mirror.equal()
    overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")
    mirror.watcher._observer.fd.handle_event(overflow)  # type: ignore[union-attr]
    assert mirror.settle()
    assert mirror.rescans == 1 and mirror.watcher.overflows == 1
    # watchdog rebuilt its watches: later changes are still seen
    (mirror.src / "a" / "b" / "after.txt").write_bytes(b"after")
    assert mirror.settle()


def test_without_a_rescan_hook_an_overflow_raises(mirror: Mirror) -> None:
    mirror.watcher.on_overflow = None
    overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")
    mirror.watcher._observer.fd.handle_event(overflow)  # type: ignore[union-attr]
    with pytest.raises(WatchOverflow):
        mirror.watcher.pump(1.0)


def test_a_dead_reader_or_a_replaced_root_leads_to_a_rescan(mirror: Mirror) -> None:
    mirror.watcher._observer.fd.stop()  # type: ignore[union-attr]
    (mirror.src / "top.txt").write_bytes(b"not seen by a stopped reader")
    assert mirror.settle() and mirror.rescans == 1
    old = mirror.src.with_name("src.old")
    os.rename(mirror.src, old)
    shutil.copytree(old, mirror.src, symlinks=True)
    (mirror.src / "in_the_new_root").write_bytes(b"new root")
    assert mirror.settle() and mirror.rescans == 2
    (mirror.src / "a" / "later").write_bytes(b"the new root is watched")
    (old / "a" / "ignored").write_bytes(b"the old one is not")
    assert mirror.settle()


def test_a_directory_that_cannot_be_watched_leads_to_a_rescan(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As past ``fs.inotify.max_user_watches``: watchdog would go on without that watch."""
    real = InotifyFD.add_callback

    def no_room(self: InotifyFD, path: bytes, *args: object) -> object:
        if path.endswith(b"/unwatchable"):
            raise OSError(errno.ENOSPC, "no room for another watch")
        return real(self, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(InotifyFD, "add_callback", no_room)
    (mirror.src / "unwatchable").mkdir()
    assert mirror.settle()
    assert mirror.rescans == 1


def test_a_failed_delivery_is_delivered_again(mirror: Mirror) -> None:
    deliver = mirror.fs.handle_event

    def link_down_once(event: FileSystemEvent) -> None:
        mirror.fs.handle_event = deliver  # type: ignore[method-assign]
        raise ConnectionError("the link to the target dropped")

    mirror.fs.handle_event = link_down_once  # type: ignore[method-assign]
    (mirror.src / "a" / "x").write_bytes(b"x")
    with pytest.raises(ConnectionError):
        mirror.watcher.pump(LIMIT)
    assert mirror.settle()


def test_the_reserved_directory_is_ignored(mirror: Mirror) -> None:
    reserved = mirror.src / RESERVED
    reserved.mkdir()
    (reserved / "state").write_bytes(b"private")
    (mirror.src / "after.txt").write_bytes(b"after")
    mirror.pump_until(mirror.src / "after.txt")
    assert not [p for p in mirror.delivered if RESERVED in p]
    assert mirror.equal()


def test_what_a_sync_left_in_cycles_is_collected_before_the_trees_are_frozen():
    """``--watch`` freezes the long-lived trees after each sync; garbage in reference cycles
    (each change's session) must go first, or it stays for good (5 MB per event before)."""
    import gc
    import weakref

    from merkle_sync.command import _freeze

    class Session:
        pass

    session = Session()
    session.me = session  # a cycle, as a session and its frame cutter make
    gone = weakref.ref(session)
    del session
    try:
        gc.disable()  # so only _freeze may collect it
        _freeze()
        assert gone() is None
    finally:
        gc.enable()
        gc.unfreeze()
