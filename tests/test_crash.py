"""A target killed (SIGKILL) between writing a file's data and renaming it into place: every
file is then its old or its new version, never a torn one, and the next run cleans the
leftovers and completes the mirror."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from merkle_sync import ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from tests.test_soak import listing

CHILD = textwrap.dedent("""
    import os, signal, sys
    from merkle_sync import ReplicatorSource, ReplicatorTarget
    from merkle_sync.diskfs import DiskFileSystem, DiskStagedFile
    src, dst, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    commits = 0
    commit = DiskStagedFile.commit
    def dying_commit(self, path):
        global commits
        commits += 1
        if commits == kill_at:  # the data is written and flushed, the rename not done
            os.kill(os.getpid(), signal.SIGKILL)
        commit(self, path)
    DiskStagedFile.commit = dying_commit
    fs = DiskFileSystem()
    ReplicatorSource(fs, src, ReplicatorTarget(fs, dst).handle_request, frame_literals=4096)
""")


@pytest.mark.parametrize("kill_at", [1, 3, 6])
def test_a_kill_between_data_and_rename_leaves_no_torn_file(tmp_path, kill_at):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    old = {f"f{i}": os.urandom(5000 + i) for i in range(6)}
    new = {name: os.urandom(7000) for name in old}
    for name, data in old.items():
        (src / name).write_bytes(data)
    fs = DiskFileSystem()
    target = ReplicatorTarget(fs, str(dst))
    ReplicatorSource(fs, str(src), target.handle_request)
    target.close()  # the child process writes next
    for name, data in new.items():
        (src / name).write_bytes(data)
    child = subprocess.run([sys.executable, "-c", CHILD, str(src), str(dst), str(kill_at)])
    assert child.returncode == -signal.SIGKILL
    versions = {name: (dst / name).read_bytes() for name in old}
    for name, data in versions.items():
        assert data in (old[name], new[name]), f"{name} is torn"
    assert sum(data == new[name] for name, data in versions.items()) == kill_at - 1
    assert os.listdir(dst / ".merkle_sync" / "tmp")  # the staged file the kill left behind
    ReplicatorSource(fs, str(src), ReplicatorTarget(fs, str(dst)).handle_request)
    assert listing(dst) == listing(src)
    assert not os.listdir(dst / ".merkle_sync" / "tmp")
