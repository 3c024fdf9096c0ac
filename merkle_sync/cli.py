"""``merkle-sync``: flags, help and exit codes. The work itself is in ``merkle_sync.command``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import NoReturn

from merkle_sync import __version__

EXIT_OK = 0
EXIT_USAGE = 1  # a bad flag or argument, a missing source, overlapping directories
EXIT_IO = 11  # a file could not be read or written (either side), the disk is full
EXIT_PEER = 12  # the peer broke the protocol, speaks another version, or the link broke
EXIT_PARTIAL = 23  # some entries could not be synced (listed on stderr); the rest was
EXIT_LIMIT = 25  # a safety limit stopped the sync before anything changed
EXIT_INTERRUPTED = 130  # Ctrl-C

DESCRIPTION = """\
Mirror SRC into DST and, with --watch, keep it mirrored.

DST ENDS EQUAL TO SRC: entries in DST that are not in SRC are DELETED (like
rsync -a --delete). Files, directories and symbolic links (copied as links,
never followed) are mirrored with their permission bits and modification
times. Only what DST lacks travels: unchanged files cost nothing, renamed or
copied content costs hashes, an edited file costs the changed chunks.

DST may be [user@]host:path: merkle-sync then runs `ssh host merkle-sync
serve --stdio path` and speaks to it over ssh's stdin and stdout (merkle-sync
must be installed on that host; see --rsh and --remote-cmd). A path with a
colon before any slash is taken as remote: write ./a:b for a local one.

Each side keeps an index of its files, so a re-sync reads only what changed:
the target's in DST/.merkle_sync/ (never mirrored; safe to delete), the
source's in ~/.cache/merkle_sync/.
"""

EPILOG = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_USAGE}    usage error (a bad flag or argument, a missing source, SRC and DST overlap)
  {EXIT_IO}   I/O error on either side (unreadable, disk full)
  {EXIT_PEER}   the peer broke the protocol, runs another version, or the link broke
  {EXIT_PARTIAL}   some entries could not be synced (listed on stderr); everything else was
  {EXIT_LIMIT}   stopped before deleting: --max-delete, an empty SRC, or a DST that was never a
       mirror (see --force)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); every file on DST is either its old or its new version

examples:
  merkle-sync ~/photos /mnt/backup/photos          mirror locally
  merkle-sync -n --stats src/ host:dst/            what would change, and its bytes
  merkle-sync --exclude '*.o' --watch src user@host:/srv/src
                                                   mirror over ssh, then live
"""

SERVE_DESCRIPTION = """\
Serve DIR as a target over stdin and stdout (what `merkle-sync SRC host:DIR`
starts through ssh). Records go to stdout, logs to stderr.
"""


class UsageError(Exception):
    """A wrong flag, argument or combination: exit code 1, with the message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2; rsync users expect 1
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def sync_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="merkle-sync",
        usage="merkle-sync [options] SRC DST\n       merkle-sync serve --stdio DIR",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="the directory to mirror (local)")
    p.add_argument("dst", metavar="DST", help="the mirror: a local path or [user@]host:path")
    p.add_argument("--version", action="version", version=f"merkle-sync {__version__}")
    what = p.add_argument_group("what to sync")
    what.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave out paths matching PATTERN (gitignore syntax; repeatable); "
        "SRC/.merkleignore is read too",
    )
    what.add_argument(
        "--exclude-from",
        action="append",
        default=[],
        metavar="FILE",
        help="read exclude patterns from FILE, one per line (repeatable)",
    )
    what.add_argument(
        "--delete-excluded",
        action="store_true",
        help="also delete excluded paths on DST (by default they are left alone)",
    )
    what.add_argument(
        "-c",
        "--checksum",
        action="store_true",
        help="hash every file on both sides, ignoring the indexes (finds changes that kept "
        "size and mtime)",
    )
    safety = p.add_argument_group("safety")
    safety.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="show what would be created, updated and deleted and the bytes it would send; "
        "change nothing",
    )
    safety.add_argument(
        "--max-delete",
        type=_count,
        metavar="N",
        help=f"stop before deleting more than N entries on DST (exit {EXIT_LIMIT})",
    )
    safety.add_argument(
        "--force",
        action="store_true",
        help="allow deletions that are refused otherwise: an empty SRC emptying DST, and "
        "any deletion in a non-empty DST that has never been a merkle-sync mirror (no "
        ".merkle_sync in it: perhaps the wrong directory)",
    )
    safety.add_argument(
        "--no-fsync",
        dest="durable",
        action="store_false",
        help="do not flush DST to disk after each batch of files (faster; a power loss "
        "may then lose files a finished sync wrote)",
    )
    live = p.add_argument_group("live mirroring")
    live.add_argument(
        "-w",
        "--watch",
        action="store_true",
        help="after the first sync, keep DST mirrored as SRC changes, until Ctrl-C",
    )
    live.add_argument(
        "--window",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="with --watch: gather changes for this long after the first one, then sync "
        "them together (default 0.05)",
    )
    link = p.add_argument_group("remote")
    link.add_argument(
        "-e",
        "--rsh",
        default="ssh",
        metavar="COMMAND",
        help="the remote shell used for host:path (default: ssh)",
    )
    link.add_argument(
        "--remote-cmd",
        default="merkle-sync",
        metavar="COMMAND",
        help="the merkle-sync command on the remote host (default: merkle-sync)",
    )
    link.add_argument(
        "--compress-level",
        type=int,
        metavar="N",
        help="zstd level of file data, fixed: 0 sends it plain; default: none locally; over "
        "ssh it starts from the size to send and follows the link's measured speed",
    )
    link.add_argument(
        "--keep-copies",
        type=_count,
        metavar="MIB",
        help="keep up to MIB MiB (compressed) of the small files each sync sends, so that "
        "their next edits travel as deltas against them; 0 keeps none (default: 256 over "
        "ssh, 0 locally, where bytes cost nothing and deltas cost CPU)",
    )
    out = p.add_argument_group("output")
    out.add_argument("-v", "--verbose", action="store_true", help="list every change")
    out.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    out.add_argument(
        "--stats",
        action="store_true",
        help="print files scanned, created, updated, deleted, bytes up and down, literal "
        "and reused bytes, round trips and seconds",
    )
    out.add_argument(
        "--json", action="store_true", help="print the stats as JSON, one line per sync"
    )
    out.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on long syncs (only when stderr is a terminal)",
    )
    return p


def serve_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="merkle-sync serve", description=SERVE_DESCRIPTION)
    p.add_argument("--stdio", action="store_true", required=True, help="speak on stdin/stdout")
    p.add_argument("dir", metavar="DIR", help="the target directory (created if missing)")
    return p


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        from merkle_sync import command

        args = serve_parser().parse_args(argv[1:])
        return command.serve_stdio(args.dir)
    args = sync_parser().parse_args(argv)
    early = start_local_target(args.src, args.dst)
    from merkle_sync import command  # the engine loads while the target's process starts

    return command.run(args, early)


def split_remote(spec: str) -> tuple[str, str] | None:
    """``[user@]host:path`` as ``(host, path)``; ``None`` for a local path (rsync's rule: a
    colon before any slash)."""
    colon, slash = spec.find(":"), spec.find("/")
    if colon <= 0 or (slash != -1 and slash < colon):
        return None
    return spec[:colon], spec[colon + 1 :] or "."


def local_target_argv(dst: str) -> list[str]:
    """The target's process for a local DST (``dst`` resolved)."""
    return [sys.executable, "-m", "merkle_sync", "serve", "--stdio", dst]


def start_local_target(src: str, dst: str) -> subprocess.Popen | None:
    """The local target's process, started before this one loads the engine, so the two
    start at once (a no-op of Django is a fifth of a second, half of it starting up). It
    does nothing until it is greeted: if the command stops at a usage error first, it
    sees its input close and exits. ``None`` for a remote DST, or if it cannot start (the
    command then reports why when it tries again)."""
    if split_remote(src) is not None or split_remote(dst) is not None:
        return None
    try:
        return spawn_peer(local_target_argv(os.path.realpath(dst)))
    except OSError:
        return None


def spawn_peer(argv: list[str]) -> subprocess.Popen:
    """The target's process, speaking records on its stdin and stdout. In a session of its
    own: Ctrl-C reaches us only, and we close the link cleanly."""
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )


if __name__ == "__main__":
    sys.exit(main())
