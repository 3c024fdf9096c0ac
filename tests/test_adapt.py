"""The apply stream's zstd level follows the link over a pipelined rpc, and only there."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from merkle_sync import MemoryFileSystem, ReplicatorSource, ReplicatorTarget, adapt
from merkle_sync.adapt import LADDER, OBSERVE, SPEED, LevelControl
from merkle_sync.testing import MeteredRpc, same_tree
from merkle_sync.wire import stream_level
from tests.texts import source_text


def test_a_link_bound_stream_climbs_to_the_top_and_stays():
    control = LevelControl(12)
    levels = []
    for _ in range(6):
        control.busy, control.waited = 0.01, 1.0  # the link takes 100 times longer
        levels.append(control.next())
    assert levels == [16, 19, 19, 19, 19, 19]


def test_a_compressor_bound_stream_steps_down_to_the_bottom():
    control = LevelControl(16)
    levels = []
    for _ in range(6):
        control.busy, control.waited = 1.0, 0.0  # the link never waited
        levels.append(control.next())
    assert levels == [12, 9, 6, 3, 3, 3]


def test_a_level_stepped_down_from_is_not_tried_again():
    """A far side that shares the CPU, or a noisy link, must not make the level flip."""
    control = LevelControl(16)
    control.busy, control.waited = 1.0, 0.0
    assert control.next() == 12
    for _ in range(3):
        control.busy, control.waited = 0.01, 1.0  # now the link looks slow
        assert control.next() == 12


def test_a_decision_waits_for_enough_time_seen():
    control = LevelControl(12)
    control.busy, control.waited = OBSERVE / 10, 0.0
    assert control.next() == 12  # too little seen: kept, and still counted
    control.busy += OBSERVE
    assert control.next() == 9


def test_nothing_measured_changes_nothing_and_levels_off_the_ladder_are_refused():
    control = LevelControl(6)
    assert control.next() == 6
    with pytest.raises(ValueError):
        LevelControl(7)


@pytest.mark.parametrize(("link_mb_s", "best"), [(0.3, 19), (2.0, 12), (12.0, 9), (60.0, 3)])
def test_the_level_settles_where_the_compressor_still_outruns_the_link(link_mb_s, best):
    """A model of a pipelined stream: each frame of 4 MB compresses in 4 / speed seconds
    and leaves as its output over the link (ratios as on pip's tree); the link waited for
    whatever the compressor did not use. The level settles at the highest whose time stays
    within the link's (``best``), and never goes back and forth."""
    ratio = {3: 0.27, 6: 0.24, 9: 0.23, 12: 0.23, 16: 0.22, 19: 0.21}
    assert best == max([lv for lv in LADDER if 1 / SPEED[lv] <= ratio[lv] / link_mb_s] or [3])
    control = LevelControl(16)
    levels = []
    for _ in range(40):
        busy = 4 / SPEED[control.level]
        link = 4 * ratio[control.level] / link_mb_s
        control.busy += busy
        control.waited += max(0.0, link - busy)
        levels.append(control.next())
    assert levels[-1] == best
    steps = [b - a for a, b in zip([16, *levels], levels, strict=False) if a != b]
    assert all(s > 0 for s in steps) or all(s < 0 for s in steps)  # no oscillation


class _FarSide:
    """A streaming rpc whose far side works in its own thread, as a process over a pipe
    does: it applies each frame, then holds the reply for ``delay`` seconds (the link)."""

    def __init__(self, target: ReplicatorTarget, delay: float) -> None:
        self.target, self.delay = target, delay
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.outbox: queue.Queue[bytes | BaseException] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (frame := self.inbox.get()) is not None:
            time.sleep(self.delay)
            try:
                self.outbox.put(self.target.handle_request(frame))
            except BaseException as exc:  # handed to the caller, as a pipe's error record
                self.outbox.put(exc)

    def __call__(self, frame: bytes) -> bytes:
        self.send(frame)
        return self.receive()

    def send(self, frame: bytes) -> None:
        self.inbox.put(frame)

    def receive(self) -> bytes:
        reply = self.outbox.get(timeout=60)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self) -> None:
        self.inbox.put(None)
        self.thread.join(timeout=10)


def _text_tree(files: int = 24) -> MemoryFileSystem:
    src = MemoryFileSystem()
    src.makedirs("/s")
    for i in range(files):
        src.writefile(f"/s/f{i}.py", source_text(48 << 10, seed=i))
    return src


def _sync(delay: float, files: int = 24) -> ReplicatorSource:
    src, dst = _text_tree(files), MemoryFileSystem()
    rpc = _FarSide(ReplicatorTarget(dst, "/d"), delay)
    try:
        source = ReplicatorSource(src, "/s", rpc, frame_literals=64 << 10)
    finally:
        rpc.close()
    assert same_tree(src, "/s", dst, "/d")
    return source


@pytest.fixture
def quick(monkeypatch):
    """Decide after a few frames of 64 KiB, as a real stream does after a few of 4 MiB."""
    monkeypatch.setattr(adapt, "OBSERVE", 0.03)


def test_a_slow_link_raises_the_level_of_the_next_frames(quick):
    # 250 ms a frame of ~15 kB: a link so slow that a loaded machine still compresses a
    # frame at level 19 well within it (at 60 ms, two busy processes made it step down).
    source = _sync(delay=0.25, files=10)
    assert stream_level(10 * (48 << 10)) == 16  # where the stream started
    assert source.stats.level == 19
    assert source.stats.level_changes >= 1


def test_a_fast_link_lowers_it(quick):
    source = _sync(delay=0.0)
    assert source.stats.level < 16
    assert source.stats.level_changes >= 1


def test_a_plain_callable_keeps_the_planned_level_so_bytes_are_exact():
    src = _text_tree()
    runs = []
    for _ in range(2):
        rpc = MeteredRpc(ReplicatorTarget(MemoryFileSystem(), "/d").handle_request)
        source = ReplicatorSource(src, "/s", rpc, frame_literals=64 << 10)
        runs.append(rpc.total)
        assert (source.stats.level, source.stats.level_changes) == (16, 0)
    assert runs[0] == runs[1]
