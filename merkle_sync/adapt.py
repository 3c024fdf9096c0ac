"""The apply stream's zstd level follows the link, as zstd's own ``--adapt`` does (pure).

A higher level saves bytes and costs CPU time. Over a pipelined link (``driver.WINDOW``
frames in flight) compressing the next frame overlaps sending the last, so a level costs no
time while the compressor still outruns the link, and only bytes once it does not. The
driver measures both sides as it goes: the seconds spent compressing (``busy``) and the
seconds blocked on the link, sending into a full pipe or waiting for an acknowledgement
(``waited``). Between frames it asks for the next level:

* one step up the ladder when the next level, predicted from this one's measured time and
  the two levels' speeds below, would still take at most ``MARGIN`` of the link's time;
* one step down when the link barely waited (``IDLE`` of the compressing time): the
  compressor is what the sync waits for. A level stepped down from is not tried again in
  this sync (the ceiling falls below it), so the level cannot go back and forth: a far side
  that shares the CPU, or a noisy link, would otherwise make it flip with every sample.

Each decision weighs at least ``OBSERVE`` seconds of compressing and waiting, several frames
on a fast link. A change of level starts a new zstd frame in the stream (the decoder resets
at ``STREAM_START``), which loses the window's context once: a few kilobytes per change, and
at most ``2 * len(LADDER)`` changes a sync. Only a pipelined link adapts: a plain callable
and a dry run keep the planned level, so their bytes are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Compression speed of the ladder's levels in MB/s, measured on pip 24.2's source tree
#: (6.4 MB in one stream, this project's 2-core machine; README, "Compression level").
#: Only their ratios matter here.
SPEED = {3: 245.0, 6: 97.0, 9: 56.0, 12: 25.0, 16: 5.0, 19: 2.8}
LADDER = tuple(sorted(SPEED))
#: A step up is taken when the next level is predicted to use at most this share of the link.
MARGIN = 0.8
#: A step down is taken when the link waited less than this share of the compressing time.
IDLE = 0.05
#: Seconds of compressing and waiting a decision weighs at least.
OBSERVE = 0.25


@dataclass
class LevelControl:
    """The level of the next frame, from what compressing and the link cost since the last."""

    level: int
    busy: float = 0.0
    waited: float = 0.0
    #: The highest level still allowed: below any level the compressor could not keep up at.
    ceiling: int = LADDER[-1]

    def __post_init__(self) -> None:
        if self.level not in SPEED:
            raise ValueError(f"level {self.level} is not on the ladder {LADDER}")

    def next(self) -> int:
        busy, waited = self.busy, self.waited
        if busy <= 0.0 or busy + waited < OBSERVE:
            return self.level  # too little seen yet to decide on
        self.busy = self.waited = 0.0
        at = LADDER.index(self.level)
        if at + 1 < len(LADDER) and LADDER[at + 1] <= self.ceiling:
            up = LADDER[at + 1]
            if busy * SPEED[self.level] / SPEED[up] <= MARGIN * (busy + waited):
                self.level = up
                return up
        if at > 0 and waited < IDLE * busy:
            self.ceiling = self.level = LADDER[at - 1]
        return self.level
