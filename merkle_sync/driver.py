"""Drives one sync session over the source's ``rpc_handle``: frames out, replies in, counted.

Everything received is decoded and validated here, where it is untrusted. Apply frames share
one zstd stream per session. Through a plain callable each frame waits for its reply; an
``rpc_handle`` that can also ``send`` and ``receive`` separately (a byte-stream link, see
``merkle_sync.transport.PipeRpc``) gets up to ``WINDOW`` apply frames in flight, so a link
with latency pays it once per window, not once per frame, and the zstd level follows the
link's measured speed between frames (``merkle_sync.adapt``) unless it was given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from merkle_sync.adapt import SPEED, LevelControl
from merkle_sync.preflight import Preflight
from merkle_sync.protocol import Ack, Apply, Message, ProtocolError, Walk, WalkReply
from merkle_sync.session import SyncSession
from merkle_sync.wire import StreamEncoder, decode, encode, stream_level

#: Apply frames in flight at most over a streaming link: each holds at most the frame budget
#: of literals (4 MiB), and replies are a few bytes, so neither side's pipe can fill with
#: unread replies.
WINDOW = 4


@dataclass
class SyncStats:
    """What the syncs of a source cost so far (frames are requests; round trips are the waits
    a byte-stream transport pays a network latency for)."""

    syncs: int = 0
    #: Files and links scanned (from the index when unchanged), over all scans.
    files_scanned: int = 0
    frames: int = 0
    round_trips: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    literal_bytes: int = 0
    reused_bytes: int = 0
    #: Files sent as a zstd delta against the version the source kept (``merkle_sync.kept``).
    delta_files: int = 0
    #: Times the apply stream's zstd level followed the link (``merkle_sync.adapt``), and
    #: the level of the last apply frame of the last sync (0: plain, or nothing to apply).
    level_changes: int = 0
    level: int = 0
    #: Entries of the plans applied (or, in a dry run, planned): files, links and
    #: directories created; files whose content changed; entries whose metadata alone
    #: changed; entries removed (a removed directory counts once, with all it held).
    created: int = 0
    updated: int = 0
    attrs: int = 0
    deleted: int = 0


@runtime_checkable
class StreamRpc(Protocol):
    """An ``rpc_handle`` that can send a frame without waiting for its reply."""

    def send(self, frame: bytes) -> None: ...

    def receive(self) -> bytes:
        """The next reply, in the order the frames were sent."""


@dataclass
class Driver:
    rpc: Callable[[Any], Any]
    stats: Any
    compression: int | None = None
    dry_run: bool = False
    on_plan: Callable[[SyncSession], None] | None = None
    on_frame: Callable[[SyncSession, int], None] | None = None

    def run(self, session: SyncSession, request: Any) -> None:
        stats = self.stats
        self._encoder: StreamEncoder | None = None
        stats.level = 0
        self._control: LevelControl | None = None
        self._adapts = False  # only a pipelined link follows its speed
        self._planned = 0
        self._session = session
        try:
            if isinstance(self.rpc, StreamRpc) and not self.dry_run:
                self._pipelined(request)
            else:
                self._one_by_one(request)
        finally:
            stats.frames += session.frames
            stats.round_trips += session.round_trips
            if session.cutter is not None:
                stats.literal_bytes += session.cutter.literal_bytes
                stats.reused_bytes += session.cutter.reused_bytes
                stats.delta_files += session.cutter.delta_files

    def _encode(self, request: Any) -> bytes:
        if not isinstance(request, Apply):
            return encode(request)
        if self._encoder is None:
            session = self._session
            if self.on_plan is not None:
                self.on_plan(session)
            self._planned = planned = session.planned_bytes()
            level = self.compression
            self._encoder = StreamEncoder(
                stream_level(planned) if level is None else level, planned
            )
            if level is None and self._encoder.level in SPEED and self._adapts:
                self._control = LevelControl(self._encoder.level)
        self.stats.level = self._encoder.level
        if self._control is None:
            return self._encoder.encode(request)
        t0 = time.perf_counter()
        frame = self._encoder.encode(request)
        self._control.busy += time.perf_counter() - t0
        return frame

    def _send(self, request: Any) -> bytes:
        frame = self._encode(request)
        t0 = time.perf_counter()
        self.rpc.send(frame)  # type: ignore[attr-defined]
        self._waited(t0)
        return frame

    def _waited(self, t0: float) -> None:
        if self._control is not None:
            self._control.waited += time.perf_counter() - t0

    def _adapt(self) -> None:
        """Between frames: a new level starts a new zstd frame of the stream."""
        control = self._control
        if control is not None and self._encoder is not None:
            level = control.next()
            if level != self._encoder.level:
                self._encoder = StreamEncoder(level, self._planned)
                self.stats.level_changes += 1

    def _preflight(self, removes: tuple[str, ...]) -> None:
        """A dry run asks the target whether it would refuse these removals (and changes
        nothing): ``merkle_sync.preflight``. Its few bytes are not in the would-send count."""
        reply = self.rpc(encode(Preflight(removes)))
        reply = reply if isinstance(reply, Message) else decode(reply)  # counted nowhere
        if not isinstance(reply, Ack):
            raise ProtocolError(f"unexpected reply {type(reply).__name__} to a preflight")

    def _sent(self, request: Any, frame: bytes) -> None:
        self.stats.bytes_up += len(frame)
        if self.on_frame is not None and isinstance(request, Apply):
            self.on_frame(self._session, len(frame))

    def _decode(self, reply: Any) -> Message:
        if isinstance(reply, Message):
            return reply
        self.stats.bytes_down += len(reply)
        return decode(reply)

    def _one_by_one(self, request: Any) -> None:
        session = self._session
        while request is not None:
            frame = self._encode(request)
            if self.dry_run and isinstance(request, Apply):
                if request.part == 0 and request.removes:
                    self._preflight(request.removes)
                self.stats.bytes_up += len(frame)  # counted as if sent, acknowledged here
                request = None if request.final else session.receive(Ack(request.part))
                continue
            reply = self.rpc(frame)
            self._sent(request, frame)
            request = session.receive(self._decode(reply))

    def _pipelined(self, request: Any) -> None:
        session, rpc = self._session, self.rpc
        self._adapts = True
        in_flight = 0
        try:
            while True:
                if request is not None:
                    frame = self._send(request)
                    in_flight += 1  # counted before a progress hook can raise
                    self._sent(request, frame)
                while in_flight < WINDOW and (ahead := session.ahead()) is not None:
                    frame = self._send(ahead)
                    in_flight += 1
                    self._sent(ahead, frame)
                if not in_flight:
                    return
                t0 = time.perf_counter()
                try:
                    reply = rpc.receive()  # type: ignore[attr-defined]
                finally:
                    in_flight -= 1  # its record was read, even if it held an error
                    self._waited(t0)
                message = self._decode(reply)
                if isinstance(message, Ack):
                    self._adapt()
                request = session.receive(message)
        except Exception:
            _drain(rpc, in_flight)
            raise


def _drain(rpc: Any, in_flight: int) -> None:
    """Read the replies still owed after an error, so the link is in step for the next
    request (a retry walk); a link that broke is left as it is."""
    for _ in range(in_flight):
        try:
            rpc.receive()
        except Exception as exc:
            if getattr(exc, "kind", None) == "closed":
                return


def probe_root(rpc: Callable[[Any], Any], stats: Any, walk: Walk) -> WalkReply:
    """One walk frame that lists nothing: the target says whether the roots are equal and,
    if not, the start of its own."""
    frame = encode(walk)
    reply = rpc(frame)
    stats.bytes_up += len(frame)
    stats.frames += 1
    stats.round_trips += 1
    if not isinstance(reply, Message):
        stats.bytes_down += len(reply)
        reply = decode(reply)
    if not isinstance(reply, WalkReply) or reply.listings:
        raise ProtocolError(f"unexpected reply {type(reply).__name__} to a root probe")
    return reply
