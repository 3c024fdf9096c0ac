"""``python -m benchmarks.watch [--files N]``: watchdog against watchfiles, and our adapter.

Builds a tree of ``--files`` small files (100 to a directory) under ``--dir`` (default the
temporary directory), then, for each backend, starts one child process that watches the
whole tree and prints every change it is told about with a ``CLOCK_MONOTONIC`` stamp
(system-wide, so comparable with the parent's). The parent measures:

* setup: the child's time to put the recursive watch in place;
* idle CPU: the child's utime + stime (``/proc/<pid>/stat``) over ``--idle`` seconds with
  nothing changing, as a share of one core;
* RSS: the child's resident memory once watching, and what watching added to it (kernel
  memory for the inotify watches is not in it);
* latency: ``--samples`` single-file writes spaced apart, each a new small file in one of
  the directories; from the writer's ``close`` to the first report of that path stamped
  at or after it (median and 99th percentile);
* overflow: with the child stopped (``SIGSTOP``), ``--burst`` files are written, far more
  events than the kernel queue holds (``fs.inotify.max_queued_events``); after
  ``SIGCONT``, whether the backend tells its user that changes were lost;
* a file name that is not UTF-8, then a plain file: whether the plain one is still reported.

Backends: ``watchdog`` (an ``Observer`` with a handler, as documented), ``watchfiles`` and
``watchfiles-5ms`` (``RustNotify.watch`` with its default 50 ms step, and with 5 ms),
``adapter`` (``merkle_sync.watcher.DirWatcher`` on a ``DiskFileSystem`` whose every
directory has a callback, as the source registers them: latency is from the close to
``fs.handle_event`` reaching the callback, so it includes the coalescing window).

The tree is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BACKENDS = ("watchdog", "watchfiles", "watchfiles-5ms", "adapter")
PER_DIR = 100
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _now() -> int:
    return time.monotonic_ns()


def _rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


# -- the child: one backend watching the tree ---------------------------------------------
_SAY = threading.Lock()


def _say(*words: Any) -> None:
    """One whole line at a time: reports come from several threads."""
    line = " ".join(map(str, words)) + "\n"
    with _SAY:
        sys.stdout.write(line)
        sys.stdout.flush()


def _child(backend: str, root: str, window: float) -> None:
    """Watch ``root`` with ``backend`` and print ``EV <ns> <path>`` for every report."""
    sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    if backend == "watchdog":
        _child_watchdog(root)
    elif backend.startswith("watchfiles"):
        _child_watchfiles(root, 5 if backend.endswith("5ms") else 50)
    else:
        _child_adapter(root, window)


def _ready(setup: float, rss_before: int) -> None:
    _say("READY", json.dumps({"setup": setup, "rss_before": rss_before, "rss": _rss_kib()}))


def _child_watchdog(root: str) -> None:
    import logging

    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    class Report(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            t = _now()
            for path in (event.src_path, getattr(event, "dest_path", "")):
                if path:
                    _say("EV", t, os.fsdecode(path))

    class Logged(logging.Handler):
        """The only place watchdog reports an overflow: a log warning."""

        def emit(self, record: logging.LogRecord) -> None:
            if "overflow" in record.getMessage():
                _say("OVERFLOW", _now(), "log-warning-only")

    logging.getLogger("watchdog").addHandler(Logged(logging.WARNING))
    rss = _rss_kib()
    t0 = time.perf_counter()
    observer = Observer()
    observer.schedule(Report(), root, recursive=True)
    observer.start()
    _ready(time.perf_counter() - t0, rss)
    while True:
        time.sleep(3600)


def _child_watchfiles(root: str, step_ms: int) -> None:
    from watchfiles._rust_notify import RustNotify

    rss = _rss_kib()
    t0 = time.perf_counter()
    notify = RustNotify([root], False, False, 300, True, False)
    _ready(time.perf_counter() - t0, rss)
    errors: set[str] = set()
    while True:
        try:
            got = notify.watch(1600, step_ms, 1000, None)
        except RuntimeError as exc:
            if str(exc) not in errors:
                errors.add(str(exc))
                _say("ERROR", _now(), str(exc).replace("\n", " "))
            time.sleep(step_ms / 1000)
            continue
        if isinstance(got, set):
            t = _now()
            for _, path in got:
                _say("EV", t, path)


def _child_adapter(root: str, window: float) -> None:
    from merkle_sync.diskfs import DiskFileSystem
    from merkle_sync.fs import FileSystemEvent
    from merkle_sync.watcher import DirWatcher

    fs = DiskFileSystem()

    def report(event: FileSystemEvent) -> None:
        _say("EV", _now(), event.path)
        if os.path.isdir(event.path):  # as the source does: watch the new directories
            for top, _, _ in os.walk(event.path):
                fs.watchdir(top, report)

    for top, _, _ in os.walk(root):  # what the source registers: every directory
        fs.watchdir(top, report)
    rss = _rss_kib()
    watcher = DirWatcher(fs, root, window=window, on_overflow=lambda: _say("OVERFLOW", _now()))
    t0 = time.perf_counter()
    watcher.start()
    _ready(time.perf_counter() - t0, rss)
    while True:
        watcher.pump(1.0)


# -- the parent: builds the tree, drives each child, prints the table ------------------------
def build_tree(root: Path, files: int) -> int:
    """``files`` files of 32 bytes, ``PER_DIR`` to a directory; returns the directories."""
    dirs = max(1, (files + PER_DIR - 1) // PER_DIR)
    for d in range(dirs):
        sub = root / f"d{d:05}"
        sub.mkdir(parents=True)
        for i in range(min(PER_DIR, files - d * PER_DIR)):
            (sub / f"f{i:03}").write_bytes(os.urandom(16).hex().encode())
    return dirs


class Child:
    """A backend's process and the lines it prints, read by a thread into a queue."""

    def __init__(self, backend: str, root: Path, window: float, log: Path) -> None:
        self.stderr = open(log, "wb")  # noqa: SIM115  (closed in stop)
        cmd = [sys.executable, "-m", "benchmarks.watch", "--child", backend, "--dir", str(root)]
        self.proc = subprocess.Popen(
            [*cmd, "--window", str(window)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            errors="replace",
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.lines: queue.Queue[list[str]] = queue.Queue()
        self.flags: dict[str, str] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            words = line.rstrip("\n").split(" ", 2)
            if words[0] in ("OVERFLOW", "ERROR"):
                self.flags.setdefault(words[0], words[2] if len(words) > 2 else "yes")
            self.lines.put(words)

    def ready(self, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            words = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            if words[0] == "READY":
                return json.loads(" ".join(words[1:]))

    def wait_for(self, path: str, after: int, timeout: float) -> int | None:
        """The stamp of the first report of ``path`` stamped at or after ``after``."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                words = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if words[0] == "EV" and words[2] == path and int(words[1]) >= after:
                return int(words[1])
        return None

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.lines.get(timeout=left)
            except queue.Empty:
                return

    def settle(self, quiet: float, limit: float) -> None:
        """Read until the child has said nothing for ``quiet`` seconds (or ``limit`` pass)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                self.lines.get(timeout=quiet)
            except queue.Empty:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case it was left stopped
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def measure(backend: str, root: Path, dirs: int, args: argparse.Namespace) -> dict[str, Any]:
    child = Child(backend, root, args.window, root.parent / f"{backend}.stderr")
    try:
        out: dict[str, Any] = {"backend": backend}
        ready = child.ready(timeout=900)
        out["setup_s"] = ready["setup"]
        out["rss_mib"] = ready["rss"] / 1024
        out["rss_added_mib"] = (ready["rss"] - ready["rss_before"]) / 1024
        child.drain(1.0)
        cpu0, t0 = _cpu_seconds(child.proc.pid), time.monotonic()
        time.sleep(args.idle)
        cpu = _cpu_seconds(child.proc.pid) - cpu0
        out["idle_cpu_pct"] = 100 * cpu / (time.monotonic() - t0)
        out["rss_idle_mib"] = _rss_kib(child.proc.pid) / 1024
        lat, missed = [], 0
        for i in range(args.samples):
            path = root / f"d{(i * 7) % dirs:05}" / f"lat-{backend}-{i}"
            with open(path, "wb") as f:
                f.write(b"x" * 64)
            closed = _now()
            got = child.wait_for(str(path), closed, timeout=5.0)
            if got is None:
                missed += 1
            else:
                lat.append((got - closed) / 1e6)
            child.drain(0.02 + 0.01 * (i % 3))  # spaced apart, not in step with a poll
        out["lat_p50_ms"] = statistics.median(lat) if lat else float("nan")
        out["lat_p99_ms"] = statistics.quantiles(lat, n=100)[98] if len(lat) > 1 else float("nan")
        out["missed"] = missed
        out.update(_probe_bad_name(child, root, backend))
        out.update(_probe_overflow(child, root, backend, args.burst))
        return out
    finally:
        child.stop()


def _probe_bad_name(child: Child, root: Path, backend: str) -> dict[str, Any]:
    """A name that is not UTF-8, then a plain file: is the plain one still reported?"""
    d = root / f"names-{backend}"
    d.mkdir()
    child.drain(0.5)
    with open(os.path.join(os.fsencode(d), b"bad-\xff"), "wb") as f:
        f.write(b"x")
    child.drain(0.5)
    (d / "plain").write_bytes(b"x")
    got = child.wait_for(str(d / "plain"), 0, timeout=3.0)
    return {"after_bad_name": "reported" if got else "lost", "error": child.flags.get("ERROR")}


def _probe_overflow(child: Child, root: Path, backend: str, burst: int) -> dict[str, Any]:
    d = root / f"overflow-{backend}"
    d.mkdir()
    child.drain(0.5)
    os.kill(child.proc.pid, signal.SIGSTOP)
    try:
        for i in range(burst):
            (d / f"o{i:06}").write_bytes(b"x")
    finally:
        os.kill(child.proc.pid, signal.SIGCONT)
    child.settle(quiet=3.0, limit=120.0)  # until it has worked through what it read
    return {"overflow_surfaced": child.flags.get("OVERFLOW", "no")}


def _fmt(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'backend':<15}{'setup s':>9}{'p50 ms':>9}{'p99 ms':>9}{'missed':>8}{'idle CPU':>10}"
        f"{'RSS MiB':>9}{'+watch':>8}  {'overflow told':<18}{'after bad name'}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['backend']:<15}{r['setup_s']:>9.2f}{r['lat_p50_ms']:>9.1f}{r['lat_p99_ms']:>9.1f}"
            f"{r['missed']:>8}{r['idle_cpu_pct']:>9.2f}%{r['rss_idle_mib']:>9.1f}"
            f"{r['rss_added_mib']:>8.1f}  {r['overflow_surfaced']:<18}{r['after_bad_name']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU")
    parser.add_argument("--burst", type=int, default=20_000, help="files written while stopped")
    parser.add_argument("--window", type=float, default=0.05, help="the adapter's window")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--dir", default=None, help="where to build the tree")
    parser.add_argument("--keep", action="store_true", help="keep the tree")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.dir, args.window)
        return
    base = Path(tempfile.mkdtemp(prefix="watch-bench-", dir=args.dir))
    try:
        root = base / "tree"
        t0 = time.perf_counter()
        dirs = build_tree(root, args.files)
        print(f"tree: {args.files} files in {dirs} directories under {root}", end="")
        print(f" (built in {time.perf_counter() - t0:.1f} s)", flush=True)
        rows = []
        for backend in args.backends.split(","):
            rows.append(measure(backend, root, dirs, args))
            print(json.dumps(rows[-1]), flush=True)
        print(_fmt(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
        for backend in args.backends.split(","):
            log = base / f"{backend}.stderr"
            if log.stat().st_size:
                print(f"[{backend} stderr] " + log.read_text(errors="replace")[-300:].strip())
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base)


if __name__ == "__main__":
    main()
