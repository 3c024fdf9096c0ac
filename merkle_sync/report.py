"""What the command prints: the plan (``-v``, ``--dry-run``), one line or a table per sync, JSON,
and a progress bar. Everything a user reads goes through here; the sync never prints."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from merkle_sync.checks import Refused
from merkle_sync.session import SyncSession
from merkle_sync.source import SyncStats


@dataclass
class Figures:
    """One sync's figures, as ``--stats`` and ``--json`` give them."""

    files_scanned: int = 0
    created: int = 0
    updated: int = 0
    attrs: int = 0
    deleted: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    literal_bytes: int = 0
    reused_bytes: int = 0
    delta_files: int = 0
    #: The zstd level of the last apply frame (0: plain), and how often it followed the link.
    level: int = 0
    level_changes: int = 0
    round_trips: int = 0
    seconds: float = 0.0
    skipped: list[list[str]] = field(default_factory=list)
    dry_run: bool = False
    #: With ``-v`` or ``--dry-run``: ``[what, path]`` for every change planned.
    changes: list[list[str]] = field(default_factory=list)


class Reporter:
    """Prints for one run of the command; ``plan`` and ``frame`` are the source's hooks."""

    def __init__(
        self,
        verbose: bool = False,
        quiet: bool = False,
        stats: bool = False,
        as_json: bool = False,
        progress: bool = False,
        dry_run: bool = False,
        force: bool = False,
        out: TextIO | None = None,
    ) -> None:
        self.verbose = verbose and not quiet
        self.quiet = quiet
        self.stats = stats
        self.as_json = as_json
        self.dry_run = dry_run
        self.force = force
        self.out = out or sys.stdout
        self.progress = progress and sys.stderr.isatty()
        self._bar: Any = None
        self._sent = 0
        self._changes: list[list[str]] = []

    # -- hooks of the source -----------------------------------------------------------------
    def plan(self, session: SyncSession) -> None:
        """Called before a plan's first apply frame: refuse, list, start the progress bar."""
        if not session.root.children and session.removes and not self.force:
            raise Refused(
                "the source is empty and the target is not: refusing to delete everything "
                "on the target (use --force if that is what you want)"
            )
        if self.verbose or (self.dry_run and not self.quiet):
            self._list(session)
        if self.progress:
            self._close_bar()
            from tqdm import tqdm

            self._bar = tqdm(
                total=session.planned_bytes(),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="sending",
                file=sys.stderr,
                leave=False,
            )
            self._sent = 0

    def read(self, nbytes: int) -> None:
        """Content read to be hashed: a bar with the bytes and the rate (no total is known
        before the scan ends), replaced by the sending bar once the plan is made."""
        if not self.progress:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                unit="B", unit_scale=True, unit_divisor=1024, desc="hashing",
                file=sys.stderr, leave=False,
            )  # fmt: skip
        self._bar.update(nbytes)

    def frame(self, session: SyncSession, nbytes: int) -> None:
        if self._bar is not None and session.cutter is not None:
            done = session.cutter.literal_bytes
            self._bar.set_postfix_str(
                f"{session.cutter.files_done:,}/{len(session.writes):,} files"
            )
            self._bar.update(max(done - self._sent, 0))
            self._sent = done

    def _list(self, session: SyncSession) -> None:
        changes = [["delete", p] for p in session.removes]
        changes += [["create", f"{p}/"] for p in session.mkdirs]
        for rel in session.writes:
            changes.append(["update" if rel in session.updated else "create", rel])
        made = set(session.mkdirs)
        changes += [["set mode/time", a.path or "."] for a in session.attrs if a.path not in made]
        self._changes = changes  # the last plan is the one that ran
        if self.dry_run and not self.as_json:  # now: a refusal may follow
            for what, path in changes:
                print(f"would {what}  {path}", file=self.out)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- after a sync ---------------------------------------------------------------------------
    def figures(
        self, before: SyncStats, after: SyncStats, started: float, skipped: list
    ) -> Figures:
        return Figures(
            files_scanned=after.files_scanned - before.files_scanned,
            created=after.created - before.created,
            updated=after.updated - before.updated,
            attrs=after.attrs - before.attrs,
            deleted=after.deleted - before.deleted,
            bytes_up=after.bytes_up - before.bytes_up,
            bytes_down=after.bytes_down - before.bytes_down,
            literal_bytes=after.literal_bytes - before.literal_bytes,
            reused_bytes=after.reused_bytes - before.reused_bytes,
            delta_files=after.delta_files - before.delta_files,
            level=after.level,
            level_changes=after.level_changes - before.level_changes,
            round_trips=after.round_trips - before.round_trips,
            seconds=round(time.monotonic() - started, 3),
            skipped=[[r, why] for r, why in skipped],
            dry_run=self.dry_run,
            changes=self._changes,
        )

    def done(self, fig: Figures, what: str = "") -> None:
        """One sync finished: skipped entries on stderr, then its line, table or JSON."""
        self._close_bar()
        if not self.dry_run and not self.as_json:  # the plan that ran, once (a sync that
            for change, path in self._changes:  # started over planned again)
                print(f"{change}  {path}", file=self.out)
        self._changes = []
        for rel, why in fig.skipped:
            print(f"merkle-sync: skipped {rel or '.'}: {why}", file=sys.stderr)
        if self.as_json:
            print(json.dumps(asdict(fig)), file=self.out, flush=True)
            return
        if self.quiet:
            return
        if self.stats:
            self._table(fig)
            return
        verb = "would send" if fig.dry_run else "sent"
        changes = (
            f"{fig.created} created, {fig.updated} updated, {fig.attrs} metadata, "
            f"{fig.deleted} deleted"
        )
        print(
            f"{what}{changes}; {verb} {fig.bytes_up:,} B, received {fig.bytes_down:,} B, "
            f"{fig.round_trips} round trip{'' if fig.round_trips == 1 else 's'}, "
            f"{fig.seconds * 1000:,.0f} ms",
            file=self.out,
            flush=True,
        )

    def _table(self, fig: Figures) -> None:
        rows = [
            ("files scanned", f"{fig.files_scanned:,}"),
            ("created", f"{fig.created:,}"),
            ("updated", f"{fig.updated:,}"),
            ("metadata only", f"{fig.attrs:,}"),
            ("deleted", f"{fig.deleted:,}"),
            ("bytes up" + (" (would send)" if fig.dry_run else ""), f"{fig.bytes_up:,}"),
            ("bytes down", f"{fig.bytes_down:,}"),
            ("literal bytes", f"{fig.literal_bytes:,}"),
            ("reused bytes", f"{fig.reused_bytes:,}"),
            ("files sent as deltas", f"{fig.delta_files:,}"),
            ("zstd level (changes)", f"{fig.level} ({fig.level_changes})"),
            ("round trips", f"{fig.round_trips:,}"),
            ("seconds", f"{fig.seconds:.3f}"),
            ("skipped", f"{len(fig.skipped):,}"),
        ]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value:>15}", file=self.out)
        self.out.flush()
