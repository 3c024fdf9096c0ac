"""The source's side of one apply stream: frames handed out, and the target's answers
matched to them in order (pure: no I/O, no planning).

Over a byte stream the next frames go out before the previous ones are answered; each
non-final frame is answered by an ``Ack`` of its part, the final one (or a first frame the
target refused as stale) by an ``ApplyReply`` with the target's root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from merkle_sync.protocol import Ack, Apply, ApplyReply, ProtocolError


class ApplyFlow:
    """``count`` is called on every frame handed out (the session counts its requests)."""

    def __init__(self, frames: Iterator[Apply], count: Callable[[Apply], object]) -> None:
        self._frames = frames
        self._count = count
        self._handed = 0
        self._acked = 0
        self._last: Apply | None = None

    def hand(self) -> Apply:
        """The next frame."""
        self._last = next(self._frames)
        self._handed += 1
        self._count(self._last)
        return self._last

    def ahead(self) -> Apply | None:
        """The next frame, to send before the reply to the previous one arrives."""
        if self._last is None or self._last.final:
            return None
        return self.hand()

    def receive(self, reply: object) -> tuple[Apply | None, bytes | None]:
        """The frame to send now (``None``: it is already on its way, or the stream is over)
        and, once the stream is over, the target's root."""
        if isinstance(reply, ApplyReply):
            # The end of the stream, or a stale base refused at its first frame.
            if self._acked != self._handed - 1 and self._acked != 0:
                raise ProtocolError("the apply ended before all its frames were answered")
            return None, reply.root
        if not isinstance(reply, Ack) or reply.part != self._acked:
            raise ProtocolError(f"unexpected reply {reply!r} to apply frame {self._acked}")
        self._acked += 1
        if self._acked < self._handed:
            return None, None  # the next frame is already on its way
        assert self._last is not None
        if self._last.final:
            raise ProtocolError("an apply's last frame was acknowledged, not answered")
        return self.hand(), None
