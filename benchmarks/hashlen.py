"""``python -m benchmarks.hashlen``: what 8-byte hashes on the wire save against 32-byte ones."""

from __future__ import annotations

from benchmarks.runner import measure
from benchmarks.workloads import CATALOGUE


def main() -> None:
    print("| workload | 8-byte hashes B | 32-byte hashes B | saved |")
    print("|---|--:|--:|--:|")
    for workload in CATALOGUE:
        if workload.full_only:
            continue
        short = measure(workload)["bytes"]
        full = measure(workload, "ours-full-hashes")["bytes"]
        print(f"| {workload.name} | {short:,} | {full:,} | {1 - short / full:.1%} |")


if __name__ == "__main__":
    main()
