"""What ``merkle-sync`` does once its flags are parsed: open both ends, sync, watch, report.

The target is a ``serve --stdio`` process: started directly for a local DST (so it scans and
hashes on another core), or through the remote shell; either way the source hands it the
same frames as bytes, several apply frames in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shlex
import signal
import subprocess
import sys
import time
from argparse import Namespace
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from merkle_sync import cli
from merkle_sync.checks import ProtocolError, Refused
from merkle_sync.cli import split_remote
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.fs import FileSystemEvent
from merkle_sync.ignore import Ignore, source_patterns
from merkle_sync.kept import KEEP_BUDGET
from merkle_sync.races import SyncError
from merkle_sync.report import Reporter
from merkle_sync.scan import SPECIAL
from merkle_sync.serve import serve
from merkle_sync.source import ReplicatorSource, SyncStats
from merkle_sync.transport import Link, PipeRpc, RemoteError, describe


def overlap(a: str, b: str) -> bool:
    a, b = os.path.realpath(a), os.path.realpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _remote_path(path: str) -> str:
    """Quoted for the remote shell, but a leading ``~`` or ``~/`` still means the remote
    home directory, as with rsync and scp."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


class Peer:
    """The target in a process of its own, speaking records on its stdin and stdout: over
    the remote shell (``rsh host 'remote-cmd serve --stdio path'``) or, for a local DST,
    started directly. A process of its own scans and hashes the target while this one
    does the source, on another core."""

    def __init__(
        self,
        argv: list[str],
        label: str,
        shell: str | None = None,
        started: subprocess.Popen | None = None,
    ) -> None:
        self.argv, self.shell = argv, shell
        if started is not None and started.args == argv and started.poll() is None:
            self.proc = started  # started before the engine loaded (``cli.main``)
        else:
            try:
                self.proc = cli.spawn_peer(argv)
            except OSError as exc:
                raise cli.UsageError(f"cannot run {argv[0]!r}: {exc}") from exc
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.link = Link(self.proc.stdout, self.proc.stdin, label)
        self.link.on_eof = self._why
        self.rpc = PipeRpc(self.link)

    @classmethod
    def remote(cls, rsh: str, host: str, remote_cmd: str, path: str) -> Peer:
        command = f"{remote_cmd} serve --stdio {_remote_path(path)}"
        argv = [*shlex.split(rsh), host, command]
        return cls(argv, f"{host}:{path}", argv[0])

    @classmethod
    def local(cls, path: str, started: subprocess.Popen | None = None) -> Peer:
        return cls(cli.local_target_argv(path), path, started=started)

    def _why(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        if self.shell is None:
            return f" (the target process exited with status {code})"
        hint = {
            127: ": the remote command was not found (see --remote-cmd)",
            255: ": the remote shell could not connect or log in (see --rsh)",
        }.get(code, "")
        return f" (the remote shell {self.shell!r} exited with status {code}{hint})"

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def target_options(args: Namespace, patterns: list[str]) -> dict[str, Any]:
    return {
        "dry_run": args.dry_run,
        "durable": args.durable,
        "verify": args.checksum,
        "max_delete": args.max_delete,
        "force": args.force,
        "exclude": [] if args.delete_excluded else patterns,
    }


def run(args: Namespace, early: subprocess.Popen | None = None) -> int:
    """The one-shot or live sync; returns the exit code (see ``cli.EPILOG``). ``early``:
    the local target's process, if ``cli.main`` started it already."""
    try:
        with ExitStack() as stack:
            if early is not None:
                stack.callback(_unused, early)
            return _run(args, stack, early)
    except KeyboardInterrupt:
        print("merkle-sync: interrupted", file=sys.stderr)
        return cli.EXIT_INTERRUPTED
    except cli.UsageError as exc:
        return _fail(exc, cli.EXIT_USAGE)
    except Refused as exc:
        return _fail(exc, cli.EXIT_LIMIT)
    except (ProtocolError, SyncError) as exc:
        return _fail(exc, cli.EXIT_PEER)
    except RemoteError as exc:
        return _fail(exc, cli.EXIT_IO if exc.kind == "error" else cli.EXIT_PEER)
    except OSError as exc:
        return _fail(exc, cli.EXIT_IO)


def _fail(exc: BaseException, code: int) -> int:
    plain = isinstance(exc, (cli.UsageError, SyncError))
    print(f"merkle-sync: {exc if plain else describe(exc)}", file=sys.stderr)
    return code


def _unused(proc: subprocess.Popen) -> None:
    """A target process started early that the sync did not take (a usage error came
    first): its input closes, so it exits without having touched anything."""
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _run(args: Namespace, stack: ExitStack, early: subprocess.Popen | None = None) -> int:
    started = time.monotonic()
    if args.quiet and args.verbose:
        raise cli.UsageError("-q and -v exclude each other")
    if args.watch and args.dry_run:
        raise cli.UsageError("--watch and --dry-run exclude each other")
    if not 0 < args.window <= 60:
        raise cli.UsageError("--window must be more than 0 and at most 60 seconds")
    if args.compress_level is not None and not 0 <= args.compress_level <= 22:
        raise cli.UsageError("--compress-level must be from 0 (plain) to 22")
    if split_remote(args.src) is not None:
        raise cli.UsageError(
            "SRC must be local: run merkle-sync on the machine that holds the source"
        )
    src = os.path.realpath(args.src)  # the root the user named; below it no link is followed
    if not os.path.isdir(src):
        raise cli.UsageError(f"the source is not a directory: {args.src!r}")
    try:
        patterns = source_patterns(src, args.exclude, args.exclude_from)
        ignore = Ignore(patterns)
    except (OSError, ValueError) as exc:
        raise cli.UsageError(f"exclude patterns: {exc}") from exc
    options = target_options(args, patterns)
    where = split_remote(args.dst)
    if where is None:
        dst = os.path.realpath(args.dst)
        if overlap(src, dst):
            raise cli.UsageError(f"the source and the target overlap: {src!r} and {dst!r}")
        peer = Peer.local(dst, early)
        level = 0 if args.compress_level is None else args.compress_level
        keep = 0 if args.keep_copies is None else args.keep_copies << 20
    else:
        host, path = where
        peer = Peer.remote(args.rsh, host, args.remote_cmd, path)
        level = args.compress_level
        keep = KEEP_BUDGET if args.keep_copies is None else args.keep_copies << 20
    stack.callback(peer.close)
    rpc = peer.rpc
    rpc.start(options)  # the target opens and scans while the source is scanned here
    reporter = Reporter(
        args.verbose, args.quiet, args.stats, args.json, args.progress, args.dry_run, args.force
    )
    fs = _WatchedDisk()
    watcher = None
    if args.watch:
        from merkle_sync.watcher import DirWatcher

        def rescan() -> None:
            with fs.sync_now():
                source.rescan()

        watcher = DirWatcher(fs, src, window=args.window, on_overflow=rescan)
        stack.callback(watcher.close)
        watcher.start()  # before the first scan, so nothing changed during it is missed
    source = ReplicatorSource(
        fs,
        src,
        rpc,
        verify=args.checksum,
        compression=level,
        ignore=ignore or None,
        dry_run=args.dry_run,
        on_plan=reporter.plan,
        on_frame=reporter.frame,
        on_read=reporter.read,
        keep=keep,
    )
    fig = reporter.figures(SyncStats(), source.stats, started, source.skipped)
    reporter.done(fig)
    if watcher is None:
        failed = [why for _, why in source.skipped if why != SPECIAL]
        return cli.EXIT_PARTIAL if failed else cli.EXIT_OK
    return _watch(source, watcher, reporter, fs)


class _WatchedDisk(DiskFileSystem):
    """Notes when delivered events are being synced, so Ctrl-C can let that sync finish."""

    syncing = False
    since = 0.0  # when the current burst's first sync began

    def handle_event(self, event: FileSystemEvent) -> None:
        with self.sync_now():
            super().handle_event(event)

    @contextlib.contextmanager
    def sync_now(self) -> Iterator[None]:
        if not self.since:
            self.since = time.monotonic()
        self.syncing = True
        try:
            yield
        finally:
            self.syncing = False


def _watch(source: ReplicatorSource, watcher: Any, reporter: Reporter, fs: _WatchedDisk) -> int:
    """Sync each burst of changes until Ctrl-C. Waiting is interrupted at once; a Ctrl-C
    during a sync lets that sync finish first (a second one interrupts it)."""
    stop: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        if stop or not fs.syncing:
            raise KeyboardInterrupt
        stop.append(True)
        print("merkle-sync: stopping after this sync (Ctrl-C again to stop now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    _freeze()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # the way out, at any point
            while not stop:
                before = dataclasses.replace(source.stats)
                fs.since = 0.0
                if watcher.pump(1.0) and source.stats.syncs != before.syncs:
                    fig = reporter.figures(before, source.stats, fs.since, source.skipped)
                    reporter.done(fig)
                    _freeze()
    finally:
        signal.signal(signal.SIGINT, previous)
    print("merkle-sync: stopped watching; every file on the target is whole", file=sys.stderr)
    return cli.EXIT_INTERRUPTED


def _freeze() -> None:
    """The trees are long-lived: the collector need not walk them while idle. What a sync
    left in reference cycles is collected first: frozen, it would never be (each change's
    session, with the target's content counts, stayed behind: 5 MB per event on 100,000
    files, 1.2 GB after 200 events)."""
    gc.collect()
    gc.freeze()


def serve_stdio(path: str) -> int:
    """``merkle-sync serve --stdio DIR``: stdout carries records only."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by mistake cannot corrupt the stream
    try:
        return serve(path, sys.stdin.buffer, out)
    except KeyboardInterrupt:
        return cli.EXIT_INTERRUPTED
    except RemoteError:
        return cli.EXIT_PEER  # the client went away mid-record
    except ProtocolError as exc:
        print(f"merkle-sync serve: {exc}", file=sys.stderr)
        return cli.EXIT_PEER
