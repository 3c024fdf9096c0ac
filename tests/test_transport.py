"""Frames over a byte stream: records, the handshake, and apply frames pipelined in a window."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import deque

import pytest

from merkle_sync import ProtocolError, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.driver import WINDOW
from merkle_sync.source import ReplicatorSource
from merkle_sync.testing import same_tree
from merkle_sync.transport import FRAME, MAX_RECORD, Link, PipeRpc, RemoteError


def _tree(root, files=40, size=64 << 10):
    for i in range(files):
        (root / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(size))


def test_apply_frames_are_pipelined_through_serve_stdio(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    proc = subprocess.Popen(
        [sys.executable, "-m", "merkle_sync", "serve", "--stdio", str(dst)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    rpc = PipeRpc(Link(proc.stdout, proc.stdin, "pipe"))
    rpc.handshake({})
    source = ReplicatorSource(DiskFileSystem(), str(src), rpc, frame_literals=128 << 10)
    assert source.stats.frames > 2 * WINDOW  # many frames went, a window at a time
    assert source.stats.round_trips < source.stats.frames
    fs = DiskFileSystem()
    assert same_tree(fs, str(src), fs, str(dst))
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


class _QueuedRpc:
    """A streaming rpc in one process: frames queue up and are answered in order."""

    def __init__(self, target: ReplicatorTarget) -> None:
        self.target = target
        self.queue: deque[bytes] = deque()
        self.fail_at: int | None = None
        self.applies = 0

    def __call__(self, frame: bytes) -> bytes:
        self.send(frame)
        return self.receive()

    def send(self, frame: bytes) -> None:
        self.queue.append(frame)

    def receive(self) -> bytes:
        frame = self.queue.popleft()
        reply = self.target.handle_request(frame)
        if self.queue:  # a frame answered while later ones are in flight
            self.applies += 1
            if self.applies == self.fail_at:
                raise ProtocolError("injected: the target refused this frame")
        return reply


def test_an_error_with_frames_in_flight_leaves_the_link_in_step(tmp_path):
    """The replies still owed are read before the error propagates, so the retry that
    follows is answered by its own replies, not by stale ones."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, files=24)
    fs = DiskFileSystem()
    rpc = _QueuedRpc(ReplicatorTarget(fs, str(dst)))
    rpc.fail_at = 2
    source = ReplicatorSource(fs, str(src), rpc, frame_literals=64 << 10, compression=0)
    assert not rpc.queue
    assert same_tree(fs, str(src), fs, str(dst))
    assert source.stats.syncs >= 2  # the first attempt failed and was retried


def test_records_are_bounded_before_reading_and_a_short_stream_is_a_clear_error():
    head = FRAME + (MAX_RECORD + 1).to_bytes(4, "big")
    with pytest.raises(RemoteError, match="exceeds"):
        Link(io.BytesIO(head), io.BytesIO()).receive()
    with pytest.raises(RemoteError, match="closed the connection"):
        Link(io.BytesIO(FRAME + (10).to_bytes(4, "big") + b"abc"), io.BytesIO()).receive()
    assert Link(io.BytesIO(b""), io.BytesIO()).receive() is None
