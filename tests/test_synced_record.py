"""The source's record of the synced tree: after a restart, a small change is planned from
it (no walk), and a target that is not as recorded is walked as before."""

from __future__ import annotations

import os
import random

import pytest

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.checks import Refused
from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.kept import KEEP_BUDGET
from tests.test_soak import listing


def _tree(src) -> None:
    for d in range(6):
        sub = src / f"pkg{d}" / "deep" / "deeper"
        sub.mkdir(parents=True)
        for f in range(20):
            (sub / f"m{f}.py").write_bytes(os.urandom(300))


def _restart(fs, src, dst, **kw) -> ReplicatorSource:
    return ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request, **kw)


def test_a_chmod_after_a_restart_is_planned_from_the_record(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    fs = DiskFileSystem()
    _restart(fs, src, dst)
    (src / "pkg3" / "deep" / "deeper" / "m7.py").chmod(0o755)
    source = _restart(fs, src, dst)
    assert listing(dst) == listing(src)
    assert source.stats.round_trips == 2  # the roots compared, then the apply
    assert source.stats.bytes_up + source.stats.bytes_down < 400
    again = _restart(fs, src, dst)
    assert again.stats.round_trips == 1 and listing(dst) == listing(src)


def test_edits_renames_and_removals_after_a_restart_end_equal(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    fs = DiskFileSystem()
    _restart(fs, src, dst)
    (src / "pkg1" / "deep" / "deeper" / "m1.py").write_bytes(b"edited")
    (src / "pkg2").rename(src / "renamed")
    (src / "pkg4" / "deep" / "deeper" / "m4.py").unlink()
    (src / "pkg5" / "new").mkdir()
    source = _restart(fs, src, dst)
    assert listing(dst) == listing(src)
    assert source.stats.round_trips <= 4  # never a level-by-level walk


def test_a_target_not_as_recorded_is_walked(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    fs = DiskFileSystem()
    _restart(fs, src, dst)
    (dst / "pkg0" / "deep" / "stray.txt").write_text("made by hand")
    (src / "pkg3" / "deep" / "deeper" / "m7.py").chmod(0o700)
    planned = _restart(fs, src, dst, dry_run=True)
    assert listing(dst) != listing(src)  # a dry run changed nothing
    source = _restart(fs, src, dst)
    assert listing(dst) == listing(src)  # the stray file is gone: the walk saw it
    assert planned.stats.bytes_up == source.stats.bytes_up  # the dry run walked too


@pytest.mark.parametrize("keep", [0, KEEP_BUDGET])
def test_an_edit_after_a_restart_reuses_the_old_version_without_probing(tmp_path, keep):
    """The index kept the edited file's old leaves (even when it was written just before
    it was hashed): they are what the target holds, so the plan needs no probes. With the
    old version itself kept, the edit is a delta against it: not even a refinement."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    big = src / "pkg0" / "big.bin"
    big.write_bytes(random.Random(7).randbytes(400_000))  # seeded: the cut points are fixed
    fs = DiskFileSystem()
    _restart(fs, src, dst)
    for at in (100_000, 300_000):  # edited right after the last sync, twice
        data = bytearray(big.read_bytes())
        data[at : at + 4] = b"edit"
        big.write_bytes(bytes(data))
        source = _restart(fs, src, dst, keep=keep)
        assert listing(dst) == listing(src)
        # Roots compared, (without a kept copy) the leaf refined, the apply.
        assert source.stats.round_trips == (2 if keep else 3)
        assert source.stats.delta_files == (1 if keep else 0)
        assert source.stats.literal_bytes < 2_000


@pytest.mark.parametrize("between", ["dry_run", "refused"])
def test_a_run_that_synced_nothing_leaves_the_next_plan_as_good(tmp_path, between):
    """A dry run, or a plan refused by a safety limit, scans and stores rows of files the
    target never got: the next restart must not plan as if the target held them (it was
    refused with an unknown piece, then walked: 2 syncs, 5 round trips)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    fs = DiskFileSystem()
    _restart(fs, src, dst)
    (src / "pkg0" / "new.py").write_text("fresh\n")  # within the racy second: hashed again
    if between == "dry_run":
        _restart(fs, src, dst, dry_run=True)
    else:

        def refuse(session):
            raise Refused("not now")

        with pytest.raises(Refused):
            _restart(fs, src, dst, on_plan=refuse)
    source = _restart(fs, src, dst)
    assert listing(dst) == listing(src)
    assert (source.stats.syncs, source.stats.round_trips) == (1, 2)
