"""Runs one workload with one replicator (ours, naive) or with rsync, and measures it."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from typing import Any

from benchmarks.naive import NaiveSource, NaiveTarget
from benchmarks.workloads import BY_NAME, Workload
from merkle_sync import MemoryFileSystem, ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.protocol import FULL_HASH
from merkle_sync.testing import MeteredRpc, same_tree, snapshot

SRC, DST = "/src", "/dst"
MUTATING = ("removefile", "removedir", "makedir", "makedirs")
IMPLS: dict[str, tuple[Any, Any]] = {
    "ours": (ReplicatorSource, ReplicatorTarget),
    "ours-full-hashes": (partial(ReplicatorSource, hash_len=FULL_HASH), ReplicatorTarget),
    "naive": (NaiveSource, NaiveTarget),
}


def _delta(after: dict[str, int], before: dict[str, int], *names: str) -> int:
    return sum(after.get(n, 0) - before.get(n, 0) for n in names)


def _waits(source: Any, calls: int) -> int:
    """Round trips a byte-stream transport waits a latency for: every call of a replicator
    without apply streams, the walks and stream ends of ours."""
    stats = getattr(source, "stats", None)
    return stats.round_trips if stats is not None else calls


def measure(workload: Workload, impl: str = "ours") -> dict[str, Any]:
    """Bytes, round trips, writes, reads and time of the workload's measured sync."""
    source_cls, target_cls = IMPLS[impl]
    src, dst = MemoryFileSystem(), MemoryFileSystem()
    workload.setup(src, SRC, dst, DST)
    bound = workload.bound() if callable(workload.bound) else workload.bound
    if bound is None:
        bound = sum(len(c) for c in snapshot(src, SRC).values() if c is not None)
    target = target_cls(dst, DST)
    rpc = MeteredRpc(target.handle_request)
    d0 = dst.operation_counts()
    waits0 = 0
    if workload.steps is None:
        r0 = src.operation_counts().get("readfile", 0)
        t0 = time.perf_counter()
        source = source_cls(src, SRC, rpc)
        seconds = time.perf_counter() - t0
        source_reads = src.operation_counts().get("readfile", 0) - r0
    else:
        source = source_cls(src, SRC, rpc)
        rpc.reset()
        waits0 = _waits(source, 0)
        d0 = dst.operation_counts()
        seconds, source_reads = 0.0, 0
        for events in workload.steps(src, SRC):  # the steps' own reads are not counted
            r0 = src.operation_counts().get("readfile", 0)
            t0 = time.perf_counter()
            for event in events:
                source.handle_event(event)
            seconds += time.perf_counter() - t0
            source_reads += src.operation_counts().get("readfile", 0) - r0
    d1 = dst.operation_counts()
    if not same_tree(src, SRC, dst, DST):
        raise AssertionError(f"{impl} left the target different from the source in {workload.name}")
    return {
        "bytes_up": rpc.bytes_up,
        "bytes_down": rpc.bytes_down,
        "bytes": rpc.total,
        "round_trips": _waits(source, rpc.round_trips) - waits0,
        "frames": rpc.round_trips,
        "writes": _delta(d1, d0, "writefile"),
        "other_mutations": _delta(d1, d0, *MUTATING),
        "source_reads": source_reads,
        "target_reads": _delta(d1, d0, "readfile"),
        "seconds": seconds,
        "bound": bound,
    }


_STATS = re.compile(r"Total bytes (sent|received): ([\d,]+)")
RSYNC_ARGS = ["-a", "--delete", "-c", "-z", "--no-whole-file", "--stats"]


def _rsync(src: str, dst: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        ["rsync", *RSYNC_ARGS, src + "/", dst + "/"], check=True, capture_output=True, text=True
    ).stdout
    seconds = time.perf_counter() - t0
    return sum(int(n.replace(",", "")) for _, n in _STATS.findall(out)), seconds


def measure_rsync(workload: Workload) -> dict[str, Any] | None:
    """rsync on the same trees written to disk: total bytes sent plus received, and wall time."""
    if shutil.which("rsync") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ms-bench-") as tmp:
        fs = DiskFileSystem()
        src, dst = f"{tmp}/src", f"{tmp}/dst"
        workload.setup(fs, src, fs, dst)
        if workload.steps is None:
            total, seconds = _rsync(src, dst)
        else:
            _rsync(src, dst)
            total, seconds = 0, 0.0
            for _ in workload.steps(fs, src):
                step_bytes, step_seconds = _rsync(src, dst)
                total += step_bytes
                seconds += step_seconds
    return {"bytes": total, "seconds": seconds}


def main() -> None:
    """``python -m benchmarks.runner NAME IMPL``: one measurement as JSON, in its own process."""
    name, impl = sys.argv[1], sys.argv[2]
    workload = BY_NAME[name]
    result = measure_rsync(workload) if impl == "rsync" else measure(workload, impl)
    if result is not None:
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
