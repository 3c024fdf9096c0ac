"""Hashing and chunking speed, measured against blake3 alone in the same run."""

from __future__ import annotations

import time

from blake3 import blake3

from merkle_sync.contenttree import build_tree


def _best(fn, data: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(data)
        best = min(best, time.perf_counter() - t0)
    return len(data) / best / 1e9


def measure_throughput(size: int = 64 << 20, rounds: int = 7) -> dict[str, float]:
    """GB/s of building a content tree (chunk + hash every leaf + inner nodes) of random data."""
    data = blake3(b"throughput").digest(length=size)
    return {
        "size_mib": size >> 20,
        "tree_gb_s": _best(build_tree, data, rounds),
        "blake3_gb_s": _best(lambda d: blake3(d).digest(), data, rounds),
    }
