"""A forced collision of truncated hashes is caught by the full-root check and repaired."""

from __future__ import annotations

from dataclasses import replace

from merkle_sync import MemoryFileSystem, ReplicatorSource, ReplicatorTarget
from merkle_sync.merkle import FileNode
from merkle_sync.protocol import FULL_HASH, Walk, WalkReply
from merkle_sync.testing import MeteredRpc, same_tree
from merkle_sync.wire import STREAM_NEXT, STREAM_START, decode, encode


def test_truncated_hash_collision_falls_back_to_full_hashes():
    fs = MemoryFileSystem()
    fs.makedirs("/src/d")
    fs.writefile("/src/d/victim", "source version")
    fs.writefile("/src/other", "same")
    fs.makedirs("/dst/d")
    fs.writefile("/dst/d/victim", "target version")
    fs.writefile("/dst/other", "same")
    target = ReplicatorTarget(fs, "/dst")
    forged = FileNode.from_content("source version").hash[:8]
    seen_hash_lens = []

    def colliding(frame):
        """Make the target's short hash of d/victim equal the source's, as a collision would."""
        reply = decode(target.handle_request(frame))
        if frame[0] in (STREAM_START, STREAM_NEXT):  # apply frames travel in a zstd stream
            return encode(reply)
        request = decode(frame)
        if isinstance(request, Walk):
            seen_hash_lens.append(request.hash_len)
        if isinstance(reply, WalkReply) and request.hash_len < FULL_HASH:
            listings = tuple(
                None
                if listing is None
                else tuple(replace(e, hash=forged) if e.name == "victim" else e for e in listing)
                for listing in reply.listings
            )
            reply = replace(reply, listings=listings)
        return encode(reply)

    rpc = MeteredRpc(colliding)
    ReplicatorSource(fs, "/src", rpc)
    assert same_tree(fs, "/src", fs, "/dst")
    assert seen_hash_lens[0] == 8 and seen_hash_lens[-1] == FULL_HASH
    # short pass: root listing, d listing (victim "equal"), apply with nothing; then the full
    # pass: root listing, d listing, probe, apply
    assert rpc.round_trips == 7
