"""``python -m benchmarks.leafsize``: the measurement behind the leaf size (see README).

For each leaf configuration: the speed of chunking and hashing a 64 MiB random file, and the
literal bytes that 100 inserted bytes and a 1-byte overwrite cost, averaged over 12 seeds on
2 MiB files. For the chosen configuration also after refinement into sub-chunks.
"""

from __future__ import annotations

import statistics
import time

from blake3 import blake3
from pyfastcdc import FastCDC

from merkle_sync.chunking import LEAF_KEY, sub_chunks

CONFIGS = [(2048, 256, 8192), (4096, 1024, 16384), (8192, 1024, 32768), (16384, 4096, 65536)]
SEEDS = 12


def _leaves(cdc: FastCDC, data: bytes) -> list[tuple[bytes, int, int]]:
    return [
        (blake3(c.data, key=LEAF_KEY).digest(), c.offset, c.offset + c.length)
        for c in cdc.cut_buf(data)
    ]


def _missing(cdc: FastCDC, old: bytes, new: bytes) -> tuple[int, int]:
    """Literal bytes of the new leaves the old file lacks, before and after refinement."""
    old_leaves, new_leaves = _leaves(cdc, old), _leaves(cdc, new)
    have = {h for h, _, _ in old_leaves}
    kept = {h for h, _, _ in new_leaves}
    basis = {x for h, a, b in old_leaves if h not in kept for x, _, _ in sub_chunks(old[a:b])}
    whole = refined = 0
    for h, a, b in new_leaves:
        if h not in have:
            whole += b - a
            refined += sum(e - s for x, s, e in sub_chunks(new[a:b]) if x not in basis)
    return whole, refined


def main() -> None:
    big = blake3(b"leafsize").digest(length=64 << 20)
    print("| leaves (target / min / max) | tree build GB/s | insert 100 B | overwrite 1 B |")
    print("|---|--:|--:|--:|")
    for avg, low, high in CONFIGS:
        cdc = FastCDC(avg, min_size=low, max_size=high, normalized_chunking=2)
        best = min(_timed(cdc, big) for _ in range(5))
        inserts, overwrites = [], []
        for seed in range(SEEDS):
            old = blake3(b"s%d" % seed).digest(length=2 << 20)
            inserts.append(_missing(cdc, old, blake3(b"i%d" % seed).digest(length=100) + old))
            at = (1 << 20) + seed * 777
            overwrites.append(_missing(cdc, old, old[:at] + bytes([old[at] ^ 1]) + old[at + 1 :]))
        ins = statistics.mean(w for w, _ in inserts), statistics.mean(r for _, r in inserts)
        ovr = statistics.mean(w for w, _ in overwrites), statistics.mean(r for _, r in overwrites)
        print(
            f"| {avg >> 10} KiB / {low} B / {high >> 10} KiB | {len(big) / best / 1e9:.2f} "
            f"| {ins[0]:,.0f} (refined {ins[1]:,.0f}) | {ovr[0]:,.0f} (refined {ovr[1]:,.0f}) |"
        )


def _timed(cdc: FastCDC, data: bytes) -> float:
    t0 = time.perf_counter()
    [blake3(c.data, key=LEAF_KEY).digest() for c in cdc.cut_buf(data)]
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
