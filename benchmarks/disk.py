"""``python -m benchmarks.disk``: merkle_sync against rsync on real directories.

Each workload prepares a source and a target "before" state once. Each run restores the
target, then times one fresh process under ``/usr/bin/time -v`` (wall time from the
process, peak RSS from ``time``): ours (``benchmarks.disk_sync``, both sides in one
process, frames between them) and rsync on the same trees. The table gives medians of
``--runs`` runs (default 3) and the ratio of ours to rsync from the same run. The largest
workloads run only with ``--full``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30
RSYNC = ("rsync", "-a", "--delete", "--stats")


def random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 64 * MIB))
            f.write(block)
            left -= len(block)


def flip_middle_byte(path: Path) -> None:
    with open(path, "r+b") as f:
        middle = os.path.getsize(path) // 2
        f.seek(middle)
        old = f.read(1)
        f.seek(middle)
        f.write(bytes([old[0] ^ 0xFF]))


@dataclass(frozen=True)
class DiskWorkload:
    """Without ``edit``: every run syncs ``src`` into an empty target with cold indexes.
    With ``edit``: each tool first syncs its own target once (untimed); each run then flips
    one byte in the middle of ``src/big.img`` and times the sync of that edit, as after a
    previous sync: our indexes and rsync's target are as the last run left them."""

    name: str
    description: str
    prepare: Callable[[Path], None]
    rsync_args: tuple[str, ...] = ()
    #: Repeat runs: each tool syncs once untimed, then each run makes this change to the
    #: source (``None``: none, a no-op) and times the sync of it, both sides restarted.
    change: Callable[[Path], None] | None = None
    repeat: bool = False
    full_only: bool = False
    side_memory: bool = False


def _initial(size: int) -> Callable[[Path], None]:
    def prepare(src: Path) -> None:
        random_file(src / "big.img", size)

    return prepare


def _many(count: int, size: int) -> Callable[[Path], None]:
    def prepare(src: Path) -> None:
        for i in range(count):
            random_file(src / f"d{i % 32:02}" / f"f{i:05}.bin", size)

    return prepare


def _tiny(count: int) -> Callable[[Path], None]:
    def prepare(src: Path) -> None:
        rng = __import__("random").Random(7)
        for i in range(count):
            path = src / f"d{i % 100:02}" / f"e{(i // 100) % 10}" / f"f{i:06}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randint(0, 2048)))

    return prepare


def _flip(src: Path) -> None:
    flip_middle_byte(src / "big.img")


DJANGO = "5.1.15"
CACHE = Path(__file__).parent / ".cache"


def _django(src: Path) -> None:
    """The Django sdist, downloaded once into ``benchmarks/.cache`` (not tracked)."""
    archive = CACHE / f"django-{DJANGO}.tar.gz"
    if not archive.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-q", "-d", str(CACHE), f"django=={DJANGO}"],
            check=True,
        )  # fmt: skip
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(src, filter="tar")
            return
        for member in tar.getmembers():  # no extraction filters before Python 3.11.4
            name = os.path.normpath(member.name)
            outside = os.path.isabs(name) or name.startswith("..")
            if outside or member.islnk() or (member.issym() and os.path.isabs(member.linkname)):
                raise SystemExit(f"unexpected member in the Django sdist: {member.name!r}")
        tar.extractall(src)


def _toggle_exec(src: Path) -> None:
    path = src / f"django-{DJANGO}" / "django" / "db" / "models" / "query.py"
    path.chmod(path.stat().st_mode ^ 0o111)


def _django_meta(src: Path) -> None:
    _django(src)
    root = src / f"django-{DJANGO}"
    os.symlink("django/__init__.py", root / "link_relative")
    os.symlink("/etc/hostname", root / "link_absolute")
    os.symlink("no/such/file", root / "link_dangling")
    os.symlink("django", root / "link_dir")
    for i, path in enumerate(sorted(root.rglob("*.py"))[:500]):
        path.chmod([0o755, 0o600, 0o640, 0o444, 0o700][i % 5])
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(1_400_000_000_000_000_000 + i, 1_400_000_000_000_000_000 + i),
                 follow_symlinks=False)  # fmt: skip


def find_listing(root: Path) -> list[str]:
    """``find -printf '%P %y %m %s %T@ %l'`` without the target's own state."""
    out = subprocess.run(
        ["find", str(root), "-mindepth", "1", "-printf", r"%P %y %m %s %T@ %l\n"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    return sorted(line for line in out if not line.startswith(".merkle_sync"))


WORKLOADS = [
    DiskWorkload("initial_1g", "one 1 GiB random file into an empty directory", _initial(GIB)),
    DiskWorkload(
        "edit_1g",
        "1 byte overwritten in the middle of a 1 GiB file the target holds",
        _initial(GIB),
        ("--no-whole-file",),
        change=_flip,
        repeat=True,
    ),
    DiskWorkload("files_1100", "1,100 new files of 1 MiB", _many(1100, MIB)),
    DiskWorkload("initial_4g", "one 4 GiB random file", _initial(4 * GIB), full_only=True),
    DiskWorkload(
        "edit_4g",
        "1 byte overwritten in the middle of a 4 GiB file",
        _initial(4 * GIB),
        ("--no-whole-file",),
        change=_flip,
        repeat=True,
        full_only=True,
    ),
    DiskWorkload("django_initial", "Django 5.1 source into an empty directory", _django),
    DiskWorkload(
        "django_noop", "Django again, nothing changed, both sides restarted", _django, repeat=True
    ),
    DiskWorkload(
        "django_chmod",
        "chmod +x (then -x) of one file in Django, both sides restarted",
        _django,
        change=_toggle_exec,
        repeat=True,
    ),
    DiskWorkload(
        "django_meta",
        "Django plus links (relative, absolute, dangling), exec bits, odd modes, old mtimes",
        _django_meta,
    ),
    DiskWorkload(
        "tiny_100k",
        "100,000 files of 0-2 KiB: memory per file on each side",
        _tiny(100_000),
        side_memory=True,
        full_only=True,
    ),
    DiskWorkload(
        "tiny_100k_noop",
        "the same 100,000 files again, nothing changed, both sides restarted",
        _tiny(100_000),
        repeat=True,
        full_only=True,
    ),
    DiskWorkload(
        "tiny_1m_noop",
        "1,000,000 files of 0-2 KiB, nothing changed, both sides restarted",
        _tiny(1_000_000),
        repeat=True,
        full_only=True,
    ),
]

_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_RSYNC_BYTES = re.compile(r"Total bytes (sent|received): ([\d,]+)")


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB and stdout of one fresh process."""
    t0 = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True, env=env
    )
    seconds = time.perf_counter() - t0
    rss = int(_RSS.search(done.stderr).group(1)) / 1024  # type: ignore[union-attr]
    return seconds, rss, done.stdout


def _fresh(*dirs: Path) -> None:
    for d in dirs:
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
    subprocess.run(["sync"], check=True)


def run(workload: DiskWorkload, root: Path, runs: int, command: bool = False) -> dict:
    """``command``: run ours as ``merkle-sync`` (the target in a process of its own) instead
    of both sides in one process."""
    src, ours_dst, rsync_dst, cache = (root / n for n in ("src", "ours", "rsync", "cache"))
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}  # the source's index lives here
    ours_cmd = [sys.executable, "-m", "benchmarks.disk_sync", str(src), str(ours_dst)]
    if command:
        ours_cmd = [sys.executable, "-m", "merkle_sync", "--json", str(src), str(ours_dst)]
    rsync_cmd = [*RSYNC, *workload.rsync_args, f"{src}/", f"{rsync_dst}/"]
    has_rsync = shutil.which("rsync") is not None
    print(f"preparing {workload.name} ...", file=sys.stderr, flush=True)
    src.mkdir()
    workload.prepare(src)
    if workload.repeat:
        _fresh(ours_dst, rsync_dst, cache)
        subprocess.run(ours_cmd, check=True, env=env, capture_output=True)
        if has_rsync:
            subprocess.run(rsync_cmd, check=True, capture_output=True)
    ours: list[dict] = []
    theirs: list[dict] = []
    for i in range(runs):
        print(f"  run {i + 1}/{runs}", file=sys.stderr, flush=True)
        if workload.repeat:
            if workload.change is not None:
                workload.change(src)
            subprocess.run(["sync"], check=True)
        else:
            _fresh(ours_dst, rsync_dst, cache)
        seconds, rss, out = _timed(ours_cmd, env)
        ours.append({"seconds": seconds, "rss_mib": rss, **_figures(json.loads(out))})
        if has_rsync:
            seconds, rss, out = _timed(rsync_cmd)
            sent = sum(int(n.replace(",", "")) for _, n in _RSYNC_BYTES.findall(out))
            theirs.append({"seconds": seconds, "rss_mib": rss, "bytes": sent})
    result = {"description": workload.description, "ours": ours, "rsync": theirs}
    if shutil.which("find"):
        result["meta_identical"] = find_listing(src) == find_listing(ours_dst)
    if workload.side_memory:
        result["sides"] = _side_memory(src)
    return result


def _figures(out: dict) -> dict:
    """The command's ``--json`` in the table's terms (it counts round trips, not frames,
    and entries created or updated, not file writes; content reads are not counted)."""
    if "created" not in out:  # the in-process sync's own figures
        return out
    return {
        **out,
        "bytes": out["bytes_up"] + out["bytes_down"],
        "frames": "n/a",
        "writes": f"{out['created'] + out['updated']} entries",
    }


def _side_memory(src: Path) -> dict:
    """Peak RSS of one side holding the tree, minus an interpreter with the same imports."""
    base = _timed(
        [sys.executable, "-m", "benchmarks.disk_sync", "--side", "source", "/nonexistent"]
    )
    out = {}
    for side in ("source", "target"):
        _, rss, stdout = _timed(
            [sys.executable, "-m", "benchmarks.disk_sync", "--side", side, str(src)]
        )
        files = json.loads(stdout)["files"]
        out[side] = {
            "files": files,
            "rss_mib": rss,
            "bytes_per_file": (rss - base[1]) * MIB / files,
        }
    return out


def _median(rows: list[dict], key: str) -> float | None:
    return statistics.median(r[key] for r in rows) if rows else None


def table(results: dict) -> str:
    head = (
        "| workload | ours s | rsync s | ours/rsync time | ours peak RSS MiB | rsync peak RSS MiB "
        "| ours B on the wire | rsync B | frames (round trips) | writes | content reads "
        "| metadata as source |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for name, r in results.items():
        ours, rsync = r["ours"], r["rsync"]
        ratios = [o["seconds"] / t["seconds"] for o, t in zip(ours, rsync, strict=False)]
        last = ours[-1]
        rsync_s = _median(rsync, "seconds")
        rows.append(
            f"| {name} | {_median(ours, 'seconds'):.2f} | "
            + (f"{rsync_s:.2f}" if rsync_s else "n/a")
            + f" | {statistics.median(ratios):.2f} | {_median(ours, 'rss_mib'):.0f} | "
            + (f"{_median(rsync, 'rss_mib'):.0f}" if rsync else "n/a")
            + f" | {last['bytes']:,} | "
            + (f"{int(_median(rsync, 'bytes')):,}" if rsync else "n/a")
            + f" | {last['frames']} ({last['round_trips']}) | {last['writes']} "
            + f"| {last.get('content_reads', 'n/a')} | "
            + {True: "identical", False: "DIFFERS", None: "n/a"}[r.get("meta_identical")]
            + " |"
        )
        for side, m in r.get("sides", {}).items():
            rows.append(
                f"| {name}: {side} side alone | | | | {m['rss_mib']:.0f} | | "
                f"{m['bytes_per_file']:.0f} B per file | | | | | |"
            )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.disk", description=__doc__)
    parser.add_argument("--full", action="store_true", help="include the 4 GiB and 100k workloads")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="+", metavar="NAME")
    parser.add_argument("--dir", type=Path, help="where to build the trees (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the raw runs here")
    parser.add_argument(
        "--command", action="store_true", help="run ours as the merkle-sync command"
    )
    args = parser.parse_args(argv)
    chosen = [w for w in WORKLOADS if (args.full or not w.full_only)]
    if args.only:
        chosen = [w for w in WORKLOADS if w.name in args.only]
    results = {}
    for workload in chosen:
        with tempfile.TemporaryDirectory(prefix="ms-disk-", dir=args.dir) as tmp:
            results[workload.name] = run(workload, Path(tmp), args.runs, args.command)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
