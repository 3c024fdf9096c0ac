"""``python -m benchmarks.disk_sync SRC DST``: one sync on real directories, as a fresh process.

Both sides run in this process on ``DiskFileSystem``; every request and reply crosses as frame
bytes. Prints the sync's figures as JSON on stdout (time and memory are measured outside, by
``/usr/bin/time -v``). ``--side target DIR`` / ``--side source DIR`` only build one side's
tree, to measure what a side holds in memory per file.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem, DiskStagedFile
from merkle_sync.frames import FRAME_LITERALS
from merkle_sync.merkle import FileNode, iter_tree
from merkle_sync.scan import scan


class CountingDiskFileSystem(DiskFileSystem):
    """Counts the files the target writes (staged and patched commits, whole-file writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.reads = 0  # calls that read file content, on either side

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        self.reads += 1
        return super().read_range(path, offset, length)

    def readfile(self, path: str) -> bytes:
        self.reads += 1
        return super().readfile(path)

    def _counted(self, sink: Any) -> Any:
        commit = sink.commit

        def counted(path: str) -> None:
            commit(path)
            self.writes += 1

        sink.commit = counted
        return sink

    def stage(self, tmp_dir: str) -> DiskStagedFile:
        return self._counted(super().stage(tmp_dir))

    def patch(self, path: str, journal_dir: str) -> Any:
        return self._counted(super().patch(path, journal_dir))

    def writefile(self, path: str, content: Any) -> None:
        super().writefile(path, content)
        self.writes += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.disk_sync")
    parser.add_argument("--side", choices=("source", "target"))
    parser.add_argument("--frame-literals", type=int, default=FRAME_LITERALS)
    parser.add_argument("--compression", type=int, help="zstd level of apply frames (0: off)")
    parser.add_argument("--no-durable", action="store_true", help="no flush per frame")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    fs = CountingDiskFileSystem()
    if args.side:  # one side's tree (and, for the target, its content index) and nothing else
        path = args.paths[0]
        tree = ReplicatorTarget(fs, path).tree if args.side == "target" else scan(fs, path)
        files = sum(isinstance(n, FileNode) for _, n in iter_tree(tree)) if tree else 0
        print(json.dumps({"files": files}))
        return
    src, dst = args.paths
    target = ReplicatorTarget(fs, dst, durable=not args.no_durable)
    source = ReplicatorSource(
        fs,
        src,
        target.handle_request,
        frame_literals=args.frame_literals,
        compression=args.compression,
    )
    s = source.stats
    out = {
        "bytes_up": s.bytes_up,
        "bytes_down": s.bytes_down,
        "bytes": s.bytes_up + s.bytes_down,
        "frames": s.frames,
        "round_trips": s.round_trips,
        "writes": fs.writes,
        "content_reads": fs.reads,
        "literal_bytes": s.literal_bytes,
        "reused_bytes": s.reused_bytes,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
