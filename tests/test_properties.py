"""After any source changes, each followed by its events, the target mirrors the source."""

from __future__ import annotations

import posixpath

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.workloads import ADDED, MODIFIED, REMOVED
from merkle_sync import FileSystemEvent, MemoryFileSystem, ReplicatorSource, ReplicatorTarget
from merkle_sync.testing import MeteredRpc, same_tree, snapshot
from tests.strategies import contents, names, trees, write_tree

SRC, DST = "/w/src", "/w/dst"


def changed_files(before: dict, after: dict) -> int:
    """Files that are new or whose exact content (or str/bytes kind) changed."""
    return sum(
        1
        for k, v in after.items()
        if v is not None and (k not in before or type(before[k]) is not type(v) or before[k] != v)
    )


def source_dirs(fs) -> set[str]:
    return {SRC} | {posixpath.join(SRC, k) for k, v in snapshot(fs, SRC).items() if v is None}


def apply_random_change(fs, data) -> list[FileSystemEvent]:
    """Mutate the source like a user would; return the events a watcher would emit."""
    snap = snapshot(fs, SRC)
    dirs = [""] + [k for k, v in snap.items() if v is None]
    files = [k for k, v in snap.items() if v is not None]
    choices = ["add file", "add tree"]
    if files:
        choices += ["modify", "remove file", "file to dir"]
    if len(dirs) > 1:
        choices += ["remove dir", "dir to file", "deep write"]
    op = data.draw(st.sampled_from(choices))
    if op in ("add file", "add tree"):
        parent = data.draw(st.sampled_from(dirs))
        name = data.draw(names.filter(lambda n: posixpath.join(parent, n) not in snap))
        path = posixpath.join(SRC, parent, name)
        if op == "add file":
            fs.writefile(path, data.draw(contents))
        else:
            write_tree(fs, path, data.draw(trees))
        return [FileSystemEvent(path, ADDED)]
    if op == "modify":
        path = posixpath.join(SRC, data.draw(st.sampled_from(files)))
        fs.writefile(path, data.draw(contents))
        return [FileSystemEvent(path, MODIFIED)]
    if op == "remove file":
        path = posixpath.join(SRC, data.draw(st.sampled_from(files)))
        fs.removefile(path)
        return [FileSystemEvent(path, REMOVED)]
    if op == "file to dir":
        path = posixpath.join(SRC, data.draw(st.sampled_from(files)))
        fs.removefile(path)
        write_tree(fs, path, data.draw(trees))
        return [FileSystemEvent(path, REMOVED), FileSystemEvent(path, ADDED)]
    rel = data.draw(st.sampled_from(dirs[1:]))
    path = posixpath.join(SRC, rel)
    if op == "remove dir":
        fs.removedir(path)
        return [FileSystemEvent(path, REMOVED)]
    if op == "dir to file":
        fs.removedir(path)
        fs.writefile(path, data.draw(contents))
        return [FileSystemEvent(path, REMOVED), FileSystemEvent(path, ADDED)]
    # deep write: a new file inside an existing directory, reported as ADDED on that directory
    name = data.draw(names.filter(lambda n: posixpath.join(rel, n) not in snap))
    fs.writefile(posixpath.join(path, name), data.draw(contents))
    return [FileSystemEvent(path, ADDED)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=trees, target=trees, data=st.data())
def test_target_mirrors_source_after_every_event(source, target, data):
    fs = MemoryFileSystem()
    write_tree(fs, SRC, source)
    write_tree(fs, DST, target)
    expected = changed_files(snapshot(fs, DST), snapshot(fs, SRC))
    rpc = MeteredRpc(ReplicatorTarget(fs, DST).handle_request)
    writes = fs.get_num_operations("writefile")
    ReplicatorSource(fs, SRC, rpc)
    assert same_tree(fs, SRC, fs, DST)
    assert fs.get_num_operations("writefile") - writes == expected
    assert fs.watched_dirs() == source_dirs(fs)
    for _ in range(data.draw(st.integers(1, 6))):
        before = snapshot(fs, SRC)
        events = apply_random_change(fs, data)
        after = snapshot(fs, SRC)
        writes = fs.get_num_operations("writefile")
        for event in events:
            fs.handle_event(event)
            assert same_tree(fs, SRC, fs, DST)
            assert fs.watched_dirs() == source_dirs(fs)
        assert fs.get_num_operations("writefile") - writes == changed_files(before, after)
