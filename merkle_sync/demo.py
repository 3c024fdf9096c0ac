"""A small end-to-end run: sync a generated tree, change it, and show what crossed the wire."""

from __future__ import annotations

import random

from merkle_sync import (
    FileSystemEvent,
    FileSystemEventType,
    MemoryFileSystem,
    ReplicatorSource,
    ReplicatorTarget,
)
from merkle_sync.testing import MeteredRpc, same_tree, snapshot


def main() -> None:
    rng = random.Random(7)
    fs = MemoryFileSystem()
    for d in range(20):
        fs.makedirs(f"/src/pkg{d}/sub")
        for f in range(10):
            words = " ".join(rng.choice(["def", "return", "self", "x", "1"]) for _ in range(200))
            fs.writefile(f"/src/pkg{d}/sub/m{f}.py", words)
    original = rng.randbytes(4 << 20)
    fs.writefile("/src/blob.bin", original)
    target = ReplicatorTarget(fs, "/dst")
    rpc = MeteredRpc(target.handle_request)

    def report(what: str, writes_before: int) -> None:
        assert same_tree(fs, "/src", fs, "/dst")
        writes = fs.get_num_operations("writefile") - writes_before
        print(
            f"{what:<44} {rpc.round_trips:>3} round trips {rpc.bytes_up:>10,} B up "
            f"{rpc.bytes_down:>8,} B down {writes:>4} writes"
        )
        rpc.reset()

    w = fs.get_num_operations("writefile")
    source = ReplicatorSource(fs, "/src", rpc)
    size = sum(len(c) for c in snapshot(fs, "/src").values() if c is not None)
    report(f"initial sync (201 files, {size:,} B)", w)
    w = fs.get_num_operations("writefile")
    ReplicatorSource(fs, "/src", rpc)
    report("no-op re-sync", w)
    blob = bytearray(original)
    blob[2_000_000] ^= 0xFF
    fs.writefile("/src/blob.bin", bytes(blob))
    w = fs.get_num_operations("writefile")
    source.handle_event(FileSystemEvent("/src/blob.bin", FileSystemEventType.FILE_MODIFIED))
    report("1-byte edit in the 4 MiB file", w)


if __name__ == "__main__":
    main()
