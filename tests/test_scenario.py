"""The seed task's classic scenario, with exact writes, watch counts and round trips per step."""

from __future__ import annotations

import pytest

from benchmarks.workloads import ADDED, CLASSIC_STEPS, MODIFIED, classic_setup
from merkle_sync import FileSystemEvent, MemoryFileSystem, ReplicatorSource, ReplicatorTarget
from merkle_sync.testing import MeteredRpc, same_tree, snapshot


def make_world() -> MemoryFileSystem:
    fs = MemoryFileSystem()
    classic_setup(fs, "/base/src", fs, "/base/dst")
    # Unrelated trees beside both, including siblings with a common prefix.
    for d in ("/base/unrelated/u", "/base/src2", "/base/dst2", "/other"):
        fs.makedirs(d)
        fs.writefile(f"{d}/keep.txt", "keep")
    return fs


@pytest.fixture
def world():
    fs = make_world()
    unrelated = {
        d: snapshot(fs, d) for d in ("/base/unrelated", "/base/src2", "/base/dst2", "/other")
    }
    fs.writes_before_sync = fs.get_num_operations("writefile")
    target = ReplicatorTarget(fs, "/base/dst")
    rpc = MeteredRpc(target.handle_request)
    source = ReplicatorSource(fs, "/base/src", rpc)
    yield fs, rpc, source, unrelated
    for d, snap in unrelated.items():
        assert snapshot(fs, d) == snap, f"{d} was touched"


def test_initial_sync_mirrors_and_writes_only_differences(world):
    fs, rpc, _, _ = world
    assert same_tree(fs, "/base/src", fs, "/base/dst")
    # a, b, diff, to_file, sub1/c, sub1/sub11/d, sub3/e, to_dir/f; same.txt is not rewritten.
    assert fs.get_num_operations("writefile") - fs.writes_before_sync == 8
    assert fs.num_watched_dirs() == 6  # src, sub1, sub11, sub2, sub3, to_dir
    # Root listing (every differing directory is new, so nothing deeper is listed),
    # one probe of the written files' content against the target's index, then apply.
    assert rpc.round_trips == 3


def test_no_op_resync_is_one_round_trip(world):
    fs, rpc, _, _ = world
    rpc.reset()
    writes = fs.get_num_operations("writefile")
    ReplicatorSource(fs, "/base/src", rpc)
    assert rpc.round_trips == 1
    assert rpc.total < 200
    assert fs.get_num_operations("writefile") == writes


#: Per step of CLASSIC_STEPS: (target writes, watched directories).
EXPECTED = [
    (0, 6),  # remove a file
    (1, 6),  # modify a file
    (0, 6),  # remove a file in a subdir
    (0, 5),  # remove an empty subdir
    (0, 3),  # remove a non-empty subdir (sub1 and sub11 unwatched)
    (1, 3),  # add a file
    (0, 4),  # add an empty subdir
    (1, 4),  # add a file inside it
    (3, 8),  # add a populated subtree: pop, p1, p11, p2 watched at once
    (1, 8),  # write deep in it, reported as ADDED on the existing subdir
    (1, 8),  # modify that file
    (0, 6),  # remove nested subdirs
]


def run_classic_steps(world, round_trips, forget_target=False):
    fs, rpc, source, _ = world
    for (what, mutate, rel, kind), (writes, watched), trips in zip(
        CLASSIC_STEPS, EXPECTED, round_trips, strict=True
    ):
        if forget_target:
            source._known, source._in_sync = None, False  # as after a failed sync
        mutate(fs, "/base/src")
        rpc.reset()
        before = fs.get_num_operations("writefile")
        fs.handle_event(FileSystemEvent(f"/base/src/{rel}", kind))
        assert same_tree(fs, "/base/src", fs, "/base/dst"), what
        assert fs.get_num_operations("writefile") - before == writes, what
        assert fs.num_watched_dirs() == watched, what
        assert rpc.round_trips == trips, what


def test_classic_event_sequence(world):
    """Once synced, the source knows the target: each event is one Apply round trip."""
    run_classic_steps(world, [1] * len(CLASSIC_STEPS))


def test_classic_event_sequence_when_the_target_state_is_unknown(world):
    """Without the source's record of the target, every event walks from the root. A file
    modified where the target still lists the version the source kept goes as a delta
    against it, with no refinement round trip (steps 2 and 11)."""
    run_classic_steps(world, [2, 2, 3, 2, 2, 3, 2, 4, 3, 6, 5, 3], forget_target=True)


def test_a_full_disk_fails_loudly_writes_nothing_partial_and_recovers(world):
    fs, _, _, _ = world

    def disk_full(op, path):
        if op == "writefile" and path.startswith("/base/dst/"):
            raise OSError(28, "No space left on device", path)

    fs.writefile("/base/src/b.txt", "B, edited")
    fs.writefile("/base/src/new.txt", "new")
    fs.fault = disk_full
    with pytest.raises(OSError):
        fs.handle_event(FileSystemEvent("/base/src/b.txt", MODIFIED))
    assert fs.readfile("/base/dst/b.txt") == "B"  # the old content, never a partial one
    fs.fault = None
    fs.handle_event(FileSystemEvent("/base/src/new.txt", ADDED))
    assert same_tree(fs, "/base/src", fs, "/base/dst")


@pytest.mark.parametrize("keep_removed", [0, 1 << 20])
def test_each_side_reads_each_file_once_and_nothing_outside(keep_removed):
    fs = make_world()
    fs.log = []
    target = ReplicatorTarget(fs, "/base/dst", keep_removed=keep_removed)
    ReplicatorSource(fs, "/base/src", MeteredRpc(target.handle_request))
    reads = [p for op, p in fs.log if op == "readfile"]
    once = {p for p in reads if reads.count(p) == 1}
    twice = {p for p in reads if reads.count(p) > 1}
    # Only with reuse of removed content on: each removed file is read once more, just before
    # its removal, so that a later rename costs hashes instead of content.
    removed = {"/base/dst/extra.txt", "/base/dst/extra_dir/nested/deeper/y", "/base/dst/to_dir"}
    removed |= {"/base/dst/to_file/inner/x"}
    assert twice == (removed if keep_removed else set())
    assert "/base/dst/same.txt" in once
    assert {p.split("/")[2] for p in reads} == {"src", "dst"}
    touched = {p for _, p in fs.log}
    assert all(
        p.startswith(("/base/src/", "/base/dst/")) or p in ("/base/src", "/base/dst")
        for p in touched
    )


def test_event_reads_only_at_or_below_its_path(world):
    fs, _, _, _ = world
    fs.writefile("/base/src/sub1/sub11/d.bin", b"changed")
    fs.log = []
    fs.handle_event(FileSystemEvent("/base/src/sub1/sub11/d.bin", MODIFIED))
    source_reads = [p for op, p in fs.log if op == "readfile" and p.startswith("/base/src/")]
    assert source_reads == ["/base/src/sub1/sub11/d.bin"]
    # The target rebuilds from its tree and index: it reads nothing it does not reuse.
    assert [p for op, p in fs.log if op == "readfile" and p.startswith("/base/dst/")] == []
    # 8 initial writes, the source edit itself, and exactly one target write.
    assert fs.get_num_operations("writefile") - fs.writes_before_sync == 10


def test_ten_thousand_file_noop_resync():
    fs = MemoryFileSystem()
    for d in range(100):
        fs.makedirs(f"/src/d{d:03}")
        for f in range(100):
            fs.writefile(f"/src/d{d:03}/f{f:03}.txt", f"file {d} {f}\n" * 3)
    target = ReplicatorTarget(fs, "/dst")
    rpc = MeteredRpc(target.handle_request)
    ReplicatorSource(fs, "/src", rpc)
    assert same_tree(fs, "/src", fs, "/dst")
    writes = fs.get_num_operations("writefile")
    rpc.reset()
    ReplicatorSource(fs, "/src", rpc)
    assert rpc.round_trips == 1
    assert rpc.total == 78
    assert fs.get_num_operations("writefile") == writes


def test_rescan_after_lost_events_restores_the_mirror(world):
    fs, _, source, _ = world
    fs.removedir("/base/src/sub1")
    fs.makedirs("/base/src/quiet/deeper")
    fs.writefile("/base/src/quiet/deeper/z", "no event was delivered")
    before = fs.get_num_operations("writefile")
    source.rescan()
    assert same_tree(fs, "/base/src", fs, "/base/dst")
    assert fs.get_num_operations("writefile") - before == 1
    assert fs.watched_dirs() == {
        "/base/src",
        "/base/src/sub2",
        "/base/src/sub3",
        "/base/src/to_dir",
        "/base/src/quiet",
        "/base/src/quiet/deeper",
    }


def test_a_small_read_budget_costs_reads_not_correctness():
    fs = make_world()
    fs.log = []
    target = ReplicatorTarget(fs, "/base/dst", keep_removed=0)
    ReplicatorSource(fs, "/base/src", MeteredRpc(target.handle_request), keep_read=0)
    reads = [p for op, p in fs.log if op == "readfile" and p.startswith("/base/src/")]
    assert same_tree(fs, "/base/src", fs, "/base/dst")
    # Every file is read to hash it; 7 of the 8 written ones once more to send their bytes
    # (the empty sub3/e.txt fits even a zero budget).
    assert len(reads) == 9 + 7
