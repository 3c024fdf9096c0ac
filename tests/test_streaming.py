"""The streaming engine with a tiny frame budget: files span frames, frames hold many files,
a failure between frames leaves no partial file, and the next sync resumes."""

from __future__ import annotations

import os

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from merkle_sync import MemoryFileSystem, ReplicatorSource, ReplicatorTarget
from merkle_sync.chunking import CHUNK_MAX, cut_leaves, stream_leaves
from merkle_sync.contenttree import build_tree, stream_tree
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.kept import KEEP_BUDGET
from merkle_sync.merkle import DirNode, encode_content
from merkle_sync.protocol import Ack, ApplyReply, ProtocolError
from merkle_sync.scan import scan
from merkle_sync.session import SyncSession
from merkle_sync.testing import MeteredRpc, same_tree
from merkle_sync.wire import StreamDecoder, StreamEncoder, decode, encode

BUDGET = 8 << 10  # literal bytes per frame in these tests


def random_bytes(seed: str, n: int) -> bytes:
    return blake3(seed.encode()).digest(length=n)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300_000), st.integers(CHUNK_MAX, 3 * CHUNK_MAX), st.integers(0, 9))
def test_streamed_leaves_equal_the_whole_buffer(size, window, seed):
    data = random_bytes(f"s{seed}", size)
    assert list(stream_leaves(lambda o, n: data[o : o + n], window)) == list(cut_leaves(data))
    assert stream_tree(lambda o, n: data[o : o + n]) == build_tree(data)


def world(fs: MemoryFileSystem | DiskFileSystem, root: str) -> None:
    fs.makedirs(f"{root}/src/many")
    fs.writefile(f"{root}/src/big.bin", random_bytes("big", 200_000))
    for i in range(40):
        fs.writefile(f"{root}/src/many/f{i}.txt", f"small file {i}\n" * 20)


def test_files_span_frames_and_frames_hold_many_files():
    fs = MemoryFileSystem()
    world(fs, "")
    target = ReplicatorTarget(fs, "/dst")
    rpc = MeteredRpc(target.handle_request)
    source = ReplicatorSource(fs, "/src", rpc, frame_literals=BUDGET)
    assert same_tree(fs, "/src", fs, "/dst")
    assert fs.get_num_operations("writefile") == 2 * 41  # the world's, then one per file
    stats = source.stats
    assert stats.frames > 200_000 // BUDGET  # the big file spans frames
    assert stats.frames < 41 + 200_000 // BUDGET + 3  # the small files share frames
    assert stats.round_trips == 2  # the first walk, then one apply stream
    assert max(up for _, up, _ in rpc.log) < 2 * BUDGET


@pytest.mark.parametrize("keep", [0, KEEP_BUDGET])
def test_streaming_on_disk_stages_and_leaves_nothing_behind(tmp_path, keep):
    fs = DiskFileSystem()
    world(fs, str(tmp_path))
    target = ReplicatorTarget(fs, f"{tmp_path}/dst")
    source = ReplicatorSource(
        fs, f"{tmp_path}/src", target.handle_request, frame_literals=BUDGET, keep=keep
    )
    assert same_tree(fs, f"{tmp_path}/src", fs, f"{tmp_path}/dst")
    assert source.stats.frames > 20
    assert os.listdir(tmp_path / "dst" / ".merkle_sync" / "tmp") == []
    # A 1-byte edit of the big file: only the changed bytes travel, as a delta against the
    # kept copy, or (with none kept) as chunks with the reused ranges copied.
    with open(tmp_path / "src" / "big.bin", "r+b") as f:
        f.seek(100_000)
        f.write(b"\xff")
    before = source.stats.literal_bytes
    source.rescan()
    assert same_tree(fs, f"{tmp_path}/src", fs, f"{tmp_path}/dst")
    assert source.stats.literal_bytes - before < 2048
    if keep:
        assert source.stats.delta_files == 1
    else:
        assert source.stats.reused_bytes > 150_000


class Flaky:
    """An RPC link that drops the connection at one call."""

    def __init__(self, handle, fail_at: int) -> None:
        self.handle, self.fail_at, self.calls = handle, fail_at, 0

    def __call__(self, frame):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionError("link dropped")
        return self.handle(frame)


@pytest.mark.parametrize("fail_at", [3, 8, 20])
def test_a_failure_between_frames_leaves_no_partial_file_and_the_next_sync_resumes(
    tmp_path, fail_at
):
    fs = DiskFileSystem()
    world(fs, str(tmp_path))
    src, dst = f"{tmp_path}/src", f"{tmp_path}/dst"
    target = ReplicatorTarget(fs, dst)
    with pytest.raises(ConnectionError):
        ReplicatorSource(fs, src, Flaky(target.handle_request, fail_at), frame_literals=BUDGET)
    # Whatever landed is complete: every file on the target equals its source.
    landed = [
        p for p in (tmp_path / "dst").rglob("*") if p.is_file() and ".merkle_sync" not in p.parts
    ]
    for p in landed:
        assert p.read_bytes() == (tmp_path / "src" / p.relative_to(tmp_path / "dst")).read_bytes()
    # A new source (or a restarted one) walks, finds what landed, and sends only the rest.
    rpc = MeteredRpc(target.handle_request)
    again = ReplicatorSource(fs, src, rpc, frame_literals=BUDGET)
    assert same_tree(fs, src, fs, dst)
    assert os.listdir(tmp_path / "dst" / ".merkle_sync" / "tmp") == []
    landed_bytes = sum(p.stat().st_size for p in landed)
    assert again.stats.literal_bytes <= 200_000 + 40 * 300 - landed_bytes


def test_a_full_disk_between_frames_fails_loudly_and_recovers():
    fs = MemoryFileSystem()
    world(fs, "")
    target = ReplicatorTarget(fs, "/dst")
    writes = 0

    def disk_full(op, path):
        nonlocal writes
        if op == "writefile" and path.startswith("/dst/"):
            writes += 1
            if writes == 5:
                raise OSError(28, "No space left on device", path)

    fs.fault = disk_full
    with pytest.raises(OSError):
        ReplicatorSource(fs, "/src", target.handle_request, frame_literals=BUDGET)
    fs.fault = None
    source = ReplicatorSource(fs, "/src", target.handle_request, frame_literals=BUDGET)
    assert same_tree(fs, "/src", fs, "/dst")
    assert source.stats.literal_bytes < 200_000 + 40 * 300


def test_frames_sent_ahead_over_a_byte_stream():
    """A byte transport writes every apply frame back to back and reads the replies after."""
    fs = MemoryFileSystem()
    world(fs, "")
    target = ReplicatorTarget(fs, "/dst")
    tree = scan(fs, "/src")
    assert isinstance(tree, DirNode)

    def read(rel: str, start: int, end: int) -> bytes:
        return encode_content(fs.readfile(f"/src/{rel}"))[1][start:end]

    session = SyncSession(tree, read, 8, BUDGET)
    reply = decode(target.handle_request(encode(session.start())))
    request = session.receive(reply)  # the first apply frame
    encoder = StreamEncoder(12, 1 << 20)
    outgoing = [request]
    while (more := session.ahead()) is not None:
        outgoing.append(more)
    assert len(outgoing) > 20 and outgoing[-1].final
    replies = [decode(target.handle_request(encoder.encode(m))) for m in outgoing]
    assert all(isinstance(r, Ack) for r in replies[:-1]) and isinstance(replies[-1], ApplyReply)
    for r in replies:
        assert session.receive(r) is None
    assert session.done and session.equal
    assert session.round_trips == 2 and session.frames == len(outgoing) + 1
    assert same_tree(fs, "/src", fs, "/dst")


def test_stream_frames_decode_in_order_only():
    """Frames of one zstd stream share context: in order they decode, a frame whose
    predecessor never arrived does not, and a message too small to compress skips the stream."""
    from merkle_sync.protocol import Walk

    def walk(i: int) -> Walk:
        return Walk(8, b"", tuple(f"same/long/directory/name/{i}/{j}" for j in range(40)), ())

    encoder = StreamEncoder(12, 1 << 20)
    frames = [encoder.encode(walk(i)) for i in range(3)]
    assert frames[0][0] == 1 and frames[1][0] == frames[2][0] == 2  # one stream, continued
    assert len(frames[1]) < len(frames[0])  # the second frame leans on the first's context
    decoder = StreamDecoder()
    assert [decoder.decode(f) for f in frames] == [walk(i) for i in range(3)]
    with pytest.raises(ProtocolError):
        StreamDecoder().decode(frames[1])  # continues no stream
    skipping = StreamDecoder()
    skipping.decode(StreamEncoder(12, 1 << 20).encode(walk(9)))  # a stream of its own
    with pytest.raises(ProtocolError):
        skipping.decode(frames[2])  # not the stream that frame continues
    tiny = encoder.encode(Ack(1))
    assert tiny[0] not in (1, 2) and decoder.decode(tiny) == Ack(1)


def test_compression_off_sends_plain_frames():
    fs = MemoryFileSystem()
    world(fs, "")
    target = ReplicatorTarget(fs, "/dst")
    seen = []

    def link(frame):
        seen.append(frame[0])
        return target.handle_request(frame)

    ReplicatorSource(fs, "/src", link, frame_literals=BUDGET, compression=0)
    assert same_tree(fs, "/src", fs, "/dst")
    assert len(seen) > 20 and not {1, 2} & set(seen)  # no frame of a zstd stream


def test_each_frame_is_flushed_before_and_after_its_renames(tmp_path):
    """Durability: staged bytes are on disk before the rename that publishes them, and the
    renames before the frame is answered; durable=False skips both flushes."""
    events: list[str] = []

    class Recording(DiskFileSystem):
        def sync_data(self, path):
            events.append("sync")
            super().sync_data(path)

        def stage(self, tmp_dir):
            staged = super().stage(tmp_dir)
            commit = staged.commit

            def logged(path):
                events.append("rename")
                commit(path)

            staged.commit = logged
            return staged

    fs = Recording()
    world(fs, str(tmp_path))
    target = ReplicatorTarget(fs, f"{tmp_path}/dst")
    ReplicatorSource(fs, f"{tmp_path}/src", target.handle_request, frame_literals=BUDGET)
    assert events.count("rename") == 41
    assert events[0] == "sync" and events[-1] == "sync"
    for i, what in enumerate(events):  # every run of renames sits between two flushes
        if what == "rename":
            assert "sync" in events[:i] and "sync" in events[i:]
    events.clear()
    (tmp_path / "src" / "late").write_bytes(b"x")
    quick = ReplicatorTarget(fs, f"{tmp_path}/dst", durable=False)
    ReplicatorSource(fs, f"{tmp_path}/src", quick.handle_request)
    assert events == ["rename"]


def test_a_file_written_while_it_is_sent_is_rescanned_not_blamed_on_the_peer(tmp_path):
    """Between hashing and sending, the file changes (same size): the target refuses the
    bytes, the source rescans what changed and starts over, and the new version lands."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "f").write_bytes(b"A" * 50_000)
    (src / "g").write_bytes(b"steady")

    class Racing(DiskFileSystem):
        reads = 0

        def read_range(self, path, offset, length):
            if path.endswith("/f"):
                self.reads += 1
                if self.reads == 2:  # the first read hashed it; this one would send it
                    (src / "f").write_bytes(b"B" * 50_000)
            return super().read_range(path, offset, length)

    fs = Racing()
    ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert (dst / "f").read_bytes() == b"B" * 50_000
    assert (dst / "g").read_bytes() == b"steady"


def test_a_frame_of_thousands_of_small_files_holds_no_descriptor_per_file(tmp_path):
    """The frame budget counts bytes: 3,000 files of 30 bytes share one frame. Each staged
    file lets its descriptor go once written, so a low descriptor limit is no obstacle."""
    import resource

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3000):
        (src / f"d{i % 30}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 30}" / f"f{i}").write_bytes(os.urandom(15).hex().encode())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        fs = DiskFileSystem()
        source = ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert source.stats.frames <= 3
    assert same_tree(fs, str(src), fs, str(dst))
