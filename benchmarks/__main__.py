"""``python -m benchmarks``: the side-by-side report; ``--check``: the regression gate.

Report mode runs every workload (``--quick`` skips the largest) once with ours, the naive
baseline and rsync, each in its own process so peak memory is per run, and prints the table.
Only with ``--write`` does it replace the tracked ``results/latest.json``,
``results/latest.md``, ``results/bytes.png`` and the README's table.
Gate mode recomputes the deterministic figures of ours (the largest workloads only with
``--full``) and fails when any is above ``baseline.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.report import plot, table
from benchmarks.runner import measure
from benchmarks.throughput import measure_throughput
from benchmarks.workloads import CATALOGUE

HERE = Path(__file__).parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
GATED = ("bytes_up", "bytes_down", "round_trips", "frames", "writes")


def _isolated(name: str, impl: str) -> dict[str, Any] | None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.runner", name, impl],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return json.loads(out) if out else None


def report(names: list[str], write: bool = False) -> None:
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        reason = next(w for w in CATALOGUE if w.name == name).skip_reason()
        if reason is not None:
            print(f"skipping {name}: {reason}", file=sys.stderr)
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = {impl: _isolated(name, impl) for impl in ("ours", "naive", "rsync")}
        if results[name]["rsync"] is None:
            print("  rsync skipped: not installed", file=sys.stderr)
    speed = measure_throughput()
    md = table(results) + (
        f"\nContent tree of a {speed['size_mib']} MiB random file (FastCDC + blake3 per leaf + "
        f"inner nodes): {speed['tree_gb_s']:.2f} GB/s; blake3 alone in the same run: "
        f"{speed['blake3_gb_s']:.2f} GB/s.\n"
    )
    print(md)
    if not write:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(
        json.dumps({"workloads": results, "throughput": speed}, indent=1) + "\n"
    )
    (RESULTS / "latest.md").write_text(md)
    plot(results, RESULTS / "bytes.png")
    if len(names) == len(CATALOGUE):  # a partial run never replaces the README's table
        _embed(md)


def _embed(md: str) -> None:
    """Put the new table between the README's result markers, so one command refreshes both."""
    if not README.exists():
        return
    text = README.read_text()
    start, end = MARKERS
    if start in text and end in text:
        head, rest = text.split(start, 1)
        README.write_text(head + start + "\n" + md + rest[rest.index(end) :])


def check(names: list[str], baseline_path: Path) -> int:
    baseline = json.loads(baseline_path.read_text())
    failures = []
    skipped = 0
    for name in names:
        workload = next(w for w in CATALOGUE if w.name == name)
        reason = workload.skip_reason()
        if reason is not None:
            print(f"{name}: skipped: {reason}")
            skipped += 1
            continue
        measured = measure(workload)
        base = baseline.get(name)
        if base is None or set(GATED) - set(base):
            failures.append(f"{name}: no baseline for every figure (run --update-baseline)")
            continue
        for figure in GATED:
            if measured[figure] > base[figure]:
                failures.append(
                    f"{name}: {figure} rose above its baseline: "
                    f"baseline {base[figure]}, measured {measured[figure]}"
                )
        print(f"{name}: " + ", ".join(f"{f} {measured[f]} (<= {base[f]})" for f in GATED))
    for failure in failures:
        print("GATE FAILED " + failure, file=sys.stderr)
    failed = len({f.split(":")[0] for f in failures})
    print(f"gate: {len(names) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    return 1 if failures else 0


def update(names: list[str], baseline_path: Path) -> None:
    baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() else {}
    for name in names:
        measured = measure(next(w for w in CATALOGUE if w.name == name))
        baseline[name] = {f: measured[f] for f in GATED}
        print(f"{name}: {baseline[name]}")
    ordered = {w.name: baseline[w.name] for w in CATALOGUE if w.name in baseline}
    baseline_path.write_text(json.dumps(ordered, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if a figure exceeds baseline")
    mode.add_argument("--update-baseline", action="store_true", help="rewrite the baseline")
    parser.add_argument("--full", action="store_true", help="gate: include the largest workloads")
    parser.add_argument("--quick", action="store_true", help="report: skip the largest workloads")
    parser.add_argument(
        "--write", action="store_true", help="report: update results/ and the README's table"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="just these workloads")
    parser.add_argument("--baseline", type=Path, default=HERE / "baseline.json")
    args = parser.parse_args(argv)
    gate = args.check or args.update_baseline
    skip_large = (gate and not args.full) or (not gate and args.quick)
    names = [w.name for w in CATALOGUE if not (skip_large and w.full_only)]
    if args.only:
        unknown = set(args.only) - {w.name for w in CATALOGUE}
        if unknown:
            parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
        names = [n for n in names if n in args.only] or list(args.only)
    if args.check:
        return check(names, args.baseline)
    if args.update_baseline:
        update(names, args.baseline)
        return 0
    report(names, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
