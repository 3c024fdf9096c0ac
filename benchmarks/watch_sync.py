"""``python -m benchmarks.watch_sync [--files N]``: live mirroring end to end, through the command.

Builds a tree of ``--files`` small files (100 to a directory, as ``benchmarks.watch``), runs
``merkle-sync --watch --json SRC DST`` in its own process, waits for the initial sync, then:

* latency: ``--samples`` single-file writes spaced ``--gap`` seconds apart, each a new small
  file in one of the directories; from the writer's ``close`` to the file's appearance on
  the target (its rename into place; polled every 0.5 ms), median and 99th percentile;
* idle CPU: utime + stime of the command and its target process over ``--idle`` seconds
  with nothing changing, as a share of one core; and their resident memory (summed) then;
* a burst of ``--burst`` new files written at once: how many syncs (JSON lines) it took.

The trees are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.watch import _cpu_seconds, _rss_kib, build_tree


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def _lines(proc: subprocess.Popen, out: list[dict]) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        out.append(json.loads(line))


def measure(root: Path, files: int, samples: int, gap: float, idle: float, burst: int) -> dict:
    src, dst = root / "src", root / "dst"
    dirs = build_tree(src, files)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "merkle_sync", "--watch", "--json", str(src), str(dst)],
        stdout=subprocess.PIPE,
        text=True,
    )
    syncs: list[dict] = []
    threading.Thread(target=_lines, args=(proc, syncs), daemon=True).start()
    try:
        while not syncs:
            if proc.poll() is not None:
                raise SystemExit("merkle-sync --watch exited early")
            time.sleep(0.05)
        initial = time.monotonic() - started
        time.sleep(1.0)
        lat = []
        for i in range(samples):
            name = f"d{i % dirs:05d}/live{i}.txt"
            path, mirror = src / name, dst / name
            with open(path, "wb") as f:
                f.write(b"x" * 100)
            closed = time.monotonic()
            while not mirror.exists():
                if time.monotonic() - closed > 30:
                    raise SystemExit(f"{name} did not reach the target in 30 s")
                time.sleep(0.0005)
            lat.append(time.monotonic() - closed)
            time.sleep(gap)
        time.sleep(1.0)
        pids = [proc.pid, *_children(proc.pid)]  # the command and its target process
        cpu0, t0 = sum(map(_cpu_seconds, pids)), time.monotonic()
        time.sleep(idle)
        idle_cpu = (sum(map(_cpu_seconds, pids)) - cpu0) / (time.monotonic() - t0)
        rss = sum(_rss_kib(p) for p in pids) / 1024
        before = len(syncs)
        for i in range(burst):
            (src / f"d{i % dirs:05d}" / f"burst{i}.txt").write_bytes(b"y" * 50)
        deadline = time.monotonic() + 60
        last = src / f"d{(burst - 1) % dirs:05d}" / f"burst{burst - 1}.txt"
        while not (dst / last.relative_to(src)).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(2.0)
        burst_syncs = len(syncs) - before
    finally:
        proc.send_signal(2)
        proc.wait(timeout=60)
    lat.sort()
    return {
        "files": files,
        "initial_s": round(initial, 2),
        "latency_p50_ms": round(statistics.median(lat) * 1000, 1),
        "latency_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
        "idle_cpu_pct": round(idle_cpu * 100, 3),
        "idle_rss_mib": round(rss, 1),
        "burst_files": burst,
        "burst_syncs": burst_syncs,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.watch_sync", description=__doc__)
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--gap", type=float, default=0.2)
    p.add_argument("--idle", type=float, default=20.0)
    p.add_argument("--burst", type=int, default=1000)
    p.add_argument("--dir", type=Path, default=None, help="where to build the trees")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="watch-sync-", dir=args.dir))
    try:
        result = measure(root, args.files, args.samples, args.gap, args.idle, args.burst)
    finally:
        shutil.rmtree(root)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
