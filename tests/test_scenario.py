"""The seed task's classic scenario, with exact writes, watch counts and round trips per step."""

from __future__ import annotations

import pytest

from merkle_sync import (
    FileSystemEvent,
    FileSystemEventType,
    MemoryFileSystem,
    ReplicatorSource,
    ReplicatorTarget,
)
from merkle_sync.testing import MeteredRpc, same_tree, snapshot

ADDED = FileSystemEventType.FILE_OR_SUBDIR_ADDED
REMOVED = FileSystemEventType.FILE_OR_SUBDIR_REMOVED
MODIFIED = FileSystemEventType.FILE_MODIFIED


def make_world() -> MemoryFileSystem:
    fs = MemoryFileSystem()
    for d in ("/base/src/sub1/sub11", "/base/src/sub2", "/base/src/sub3", "/base/src/to_dir"):
        fs.makedirs(d)
    files = {
        "a.txt": "A",
        "b.txt": "B",
        "same.txt": "same content",
        "diff.txt": "new content",
        "to_file": b"was a directory on the target",
        "sub1/c.txt": "C",
        "sub1/sub11/d.bin": b"\x00D",
        "sub3/e.txt": "",
        "to_dir/f.txt": "F",
    }
    for rel, content in files.items():
        fs.writefile(f"/base/src/{rel}", content)
    for d in ("/base/dst/to_file/inner", "/base/dst/extra_dir/nested/deeper"):
        fs.makedirs(d)
    target_files = {
        "to_dir": "a file where the source has a directory",
        "to_file/inner/x": "x",
        "same.txt": "same content",
        "diff.txt": "old content",
        "extra.txt": "extra",
        "extra_dir/nested/deeper/y": b"y",
    }
    for rel, content in target_files.items():
        fs.writefile(f"/base/dst/{rel}", content)
    # Unrelated trees beside both, including a sibling with a common prefix.
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


STEPS = [
    # (description, mutate, event path, event type, writes, watched dirs, round trips)
    (
        "remove a file",
        lambda fs: fs.removefile("/base/src/a.txt"),
        "/base/src/a.txt",
        REMOVED,
        0,
        6,
        2,
    ),
    (
        "modify a file",
        lambda fs: fs.writefile("/base/src/b.txt", "B2"),
        "/base/src/b.txt",
        MODIFIED,
        1,
        6,
        3,
    ),
    (
        "remove a file in a subdir",
        lambda fs: fs.removefile("/base/src/sub1/c.txt"),
        "/base/src/sub1/c.txt",
        REMOVED,
        0,
        6,
        3,
    ),
    (
        "remove an empty subdir",
        lambda fs: fs.removedir("/base/src/sub2"),
        "/base/src/sub2",
        REMOVED,
        0,
        5,
        2,
    ),
    (
        "remove a non-empty subdir",
        lambda fs: fs.removedir("/base/src/sub1"),
        "/base/src/sub1",
        REMOVED,
        0,
        3,
        2,
    ),
    (
        "add a file",
        lambda fs: fs.writefile("/base/src/new.txt", "new"),
        "/base/src/new.txt",
        ADDED,
        1,
        3,
        3,
    ),
    (
        "add an empty subdir",
        lambda fs: fs.makedir("/base/src/newdir"),
        "/base/src/newdir",
        ADDED,
        0,
        4,
        2,
    ),
    (
        "add a file inside it",
        lambda fs: fs.writefile("/base/src/newdir/g.txt", b"g"),
        "/base/src/newdir/g.txt",
        ADDED,
        1,
        4,
        4,
    ),
]


def add_populated(fs):
    fs.makedirs("/base/src/pop/p1/p11")
    fs.makedirs("/base/src/pop/p2")
    fs.writefile("/base/src/pop/top.txt", "top")
    fs.writefile("/base/src/pop/p1/one.txt", "one")
    fs.writefile("/base/src/pop/p1/p11/deep.bin", b"deep")


STEPS += [
    ("add a populated subtree", add_populated, "/base/src/pop", ADDED, 3, 8, 3),
    (
        "write deep in it, reported as ADDED on the existing subdir",
        lambda fs: fs.writefile("/base/src/pop/p1/p11/later.txt", "later"),
        "/base/src/pop/p1/p11",
        ADDED,
        1,
        8,
        6,  # four listings (root, pop, p1, p11), one content probe, apply
    ),
    (
        "modify that file",
        lambda fs: fs.writefile("/base/src/pop/p1/p11/later.txt", "later, changed"),
        "/base/src/pop/p1/p11/later.txt",
        MODIFIED,
        1,
        8,
        6,
    ),
    (
        "remove nested subdirs",
        lambda fs: fs.removedir("/base/src/pop/p1"),
        "/base/src/pop/p1",
        REMOVED,
        0,
        6,
        3,
    ),
]


def test_classic_event_sequence(world):
    fs, rpc, _, _ = world
    for what, mutate, path, kind, writes, watched, trips in STEPS:
        mutate(fs)
        rpc.reset()
        before = fs.get_num_operations("writefile")
        fs.handle_event(FileSystemEvent(path, kind))
        assert same_tree(fs, "/base/src", fs, "/base/dst"), what
        assert fs.get_num_operations("writefile") - before == writes, what
        assert fs.num_watched_dirs() == watched, what
        assert rpc.round_trips == trips, what


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
    assert rpc.total == 145
    assert fs.get_num_operations("writefile") == writes
