"""Frames over a byte stream (a pipe, ssh's stdio): records, the handshake, and the RPC adapter.

The protocol's frames cross a byte stream unchanged, each in a record: one kind byte, a
4-byte big-endian length, the payload. The length is checked against ``MAX_RECORD`` before
anything is read or allocated, and nothing received is ever unpickled. Kinds:

* ``H`` hello: a small msgpack map, both ways, first. It names the program, the protocol
  number and the features, so a peer of another version (or a remote shell that prints a
  banner on stdout, or a command that is not merkle-sync at all) gets a clear error instead
  of a garbled sync. The client's hello also carries the target's options.
* ``F`` a protocol frame (a request, or its reply).
* ``E`` an error the target met answering a frame: ``{"kind", "message"}``. ``protocol``
  becomes a local ``ProtocolError`` (so the source's retry rules are the same as in one
  process), ``refused`` a ``Refused``, anything else a ``RemoteError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import IO, Any

import msgpack

from merkle_sync import __version__
from merkle_sync.checks import ProtocolError, Refused
from merkle_sync.protocol import MAX_FRAME

PROGRAM = "merkle-sync"
#: Bumped whenever a frame's meaning changes; peers must speak the same number.
#: 2: deltas against kept copies, the compact probe, packed literals, digest listings, and a
#: walk's hashes joined in one string; a peer of protocol 1 reads none of these.
#: 3: 3-byte probe hashes, checked by the target per refined leaf (``WalkReply.checks``).
#: 4: the target's unreadable entries (``WalkReply.unread``) and a dry run's ``Preflight``.
PROTOCOL = 4
FEATURES = (
    "zstd-stream", "meta", "links", "exclude", "max-delete", "dry-run",
    "delta", "probe", "packed", "digests", "probe-check",
)  # fmt: skip
#: A record's payload at most: a frame plus its tag byte. Hellos and errors are far smaller.
MAX_RECORD = MAX_FRAME + 16
MAX_HELLO = 1 << 20
_HEAD = struct.Struct(">cI")
HELLO, FRAME, ERROR = b"H", b"F", b"E"


class RemoteError(RuntimeError):
    """The peer failed (``kind`` "error": a full disk, a crash), the link broke ("closed"),
    or the stream is not records of our protocol ("protocol"). Unlike a ``ProtocolError``
    about one frame, the link is then out of step, so nothing is retried over it."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class Link:
    """Records over a pair of binary streams (``reader`` and ``writer``)."""

    def __init__(self, reader: IO[bytes], writer: IO[bytes], peer: str = "the peer") -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer
        #: Called when the stream ends early, to add what is known of why (ssh's exit).
        self.on_eof: Callable[[], str] | None = None

    def send(self, kind: bytes, payload: bytes | bytearray | memoryview) -> None:
        try:
            self.writer.write(_HEAD.pack(kind, len(payload)))
            self.writer.write(payload)
            self.writer.flush()
        except BrokenPipeError:
            self._broken()

    def _broken(self) -> None:
        """The peer stopped reading: what it wrote last says why (an error record, or text
        that is no record at all), else how it exited."""
        record = self.receive()  # raises for junk, and for a stream cut mid-record
        if record is not None and record[0] == ERROR:
            raise_error(record[1], self.peer)
        why = self.on_eof() if self.on_eof is not None else ""
        raise RemoteError(f"{self.peer} closed the connection{why}", "closed")

    def receive(self) -> tuple[bytes, bytes] | None:
        """The next record, or ``None`` at a clean end of stream (before a record starts)."""
        head = self._exact(_HEAD.size, allow_eof=True)
        if head is None:
            return None
        kind, size = _HEAD.unpack(head)
        if kind not in (HELLO, FRAME, ERROR):
            raise RemoteError(
                f"{self.peer} does not speak {PROGRAM} records (got {bytes(head)!r}); "
                "does the remote shell print to stdout, or is the remote command right?",
                "protocol",
            )
        limit = MAX_HELLO if kind != FRAME else MAX_RECORD
        if size > limit:
            raise RemoteError(
                f"record of {size} bytes from {self.peer} exceeds {limit}", "protocol"
            )
        payload = self._exact(size, allow_eof=False)
        assert payload is not None
        return kind, payload

    def _exact(self, size: int, allow_eof: bool) -> bytes | None:
        data = self.reader.read(size)
        if len(data) == size:
            return data
        parts = [data]
        got = len(data)
        while got < size:
            more = self.reader.read(size - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        if got == size:
            return b"".join(parts)
        if got == 0 and allow_eof:
            return None
        why = self.on_eof() if self.on_eof is not None else ""
        raise RemoteError(f"{self.peer} closed the connection{why}", "closed")

    def send_error(self, exc: BaseException) -> None:
        kind = "protocol" if isinstance(exc, ProtocolError) else "error"
        if isinstance(exc, Refused):
            kind = "refused"
        message = describe(exc)
        self.send(ERROR, msgpack.packb({"kind": kind, "message": message[:4000]}))


def describe(exc: BaseException) -> str:
    """An error as a user reads it: ``path: not a directory``, not ``[Errno 20] ...``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror.lower()}"
    if isinstance(exc, (OSError, ProtocolError, Refused, RemoteError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def raise_error(payload: bytes, peer: str) -> None:
    """Turn an error record into the local exception of the same meaning."""
    try:
        err = msgpack.unpackb(payload)
        kind, message = err["kind"], err["message"]
        if not isinstance(kind, str) or not isinstance(message, str):
            raise TypeError
    except Exception as exc:
        raise ProtocolError(f"malformed error record from {peer}") from exc
    if kind == "protocol":
        raise ProtocolError(f"{peer} refused a frame: {message}")
    if kind == "refused":
        raise Refused(message)
    raise RemoteError(message if message.startswith(peer) else f"{peer}: {message}", kind)


def hello(options: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"program": PROGRAM, "protocol": PROTOCOL, "features": FEATURES}
    if options is not None:
        body["options"] = options
    body["version"] = __version__
    return msgpack.packb(body)


def check_hello(payload: bytes, peer: str) -> dict[str, Any]:
    """The peer's hello, validated: same program and protocol, else a clear error."""
    try:
        body = msgpack.unpackb(payload, strict_map_key=True)
    except Exception as exc:
        raise ProtocolError(f"{peer} sent a malformed hello") from exc
    if not isinstance(body, dict) or body.get("program") != PROGRAM:
        raise ProtocolError(f"{peer} is not {PROGRAM} (its hello: {str(body)[:200]})")
    if body.get("protocol") != PROTOCOL:
        raise ProtocolError(
            f"{peer} runs {PROGRAM} {body.get('version')} speaking protocol "
            f"{body.get('protocol')}; this side speaks protocol {PROTOCOL}: install the same "
            "version on both sides"
        )
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise ProtocolError(f"{peer} sent options that are not a map")
    return body


class PipeRpc:
    """The source's ``rpc_handle`` over a ``Link``: one frame out, its reply back."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._pending = False  # our hello went, the peer's is not read yet

    def handshake(self, options: dict[str, Any]) -> dict[str, Any]:
        self.start(options)
        return self._expect_hello()

    def start(self, options: dict[str, Any]) -> None:
        """Send our hello and go on: the peer's answer is read before the first frame, so
        the peer can open its side meanwhile."""
        self.link.send(HELLO, hello(options))
        self._pending = True

    def _expect_hello(self) -> dict[str, Any]:
        self._pending = False
        try:
            return self._hello()
        except ProtocolError as exc:  # never retried: the versions will not agree next time
            raise RemoteError(str(exc), "protocol") from exc

    def _hello(self) -> dict[str, Any]:
        return check_hello(self._expect(HELLO, "did not start with a hello"), self.link.peer)

    def _expect(self, wanted: bytes, otherwise: str) -> bytes:
        """The next record's payload, which must be of kind ``wanted``; an error record
        raises what it says, the end of the stream says how the peer ended."""
        record = self.link.receive()
        if record is None:
            why = self.link.on_eof() if self.link.on_eof is not None else ""
            raise RemoteError(f"{self.link.peer} closed the connection{why}", "closed")
        kind, payload = record
        if kind == ERROR:
            raise_error(payload, self.link.peer)
        if kind != wanted:
            raise ProtocolError(f"{self.link.peer} {otherwise}")
        return payload

    def __call__(self, frame: bytes) -> bytes:
        self.send(frame)
        return self.receive()

    def send(self, frame: bytes) -> None:
        """A frame out, without waiting for its reply (see ``merkle_sync.driver``)."""
        if self._pending:
            self._expect_hello()
        self.link.send(FRAME, frame)

    def receive(self) -> bytes:
        """The reply to the oldest frame still unanswered."""
        return self._expect(FRAME, "answered a frame with another kind of record")
