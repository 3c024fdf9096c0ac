"""``merkle-sync SRC host:DST`` through a real ``sshd`` on 127.0.0.1 (started per module with a
throwaway host key and client key by ``benchmarks.ssh.start_sshd``); skipped without
openssh-server. The remote side runs this interpreter by absolute path, through the login
shell, and inherits nothing from the client's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.ssh import REMOTE_CMD, Sshd, sshd_missing, start_sshd
from tests.test_cli import raw_state, tree

PY = sys.executable


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    why = sshd_missing()
    if why is not None:
        pytest.skip(f"no loopback sshd: {why}")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def over_ssh(
    sshd: Sshd, *args: str, remote_cmd: str = REMOTE_CMD, check: int | None = 0
) -> subprocess.CompletedProcess:
    """``merkle-sync -e <ssh to the loopback sshd> --remote-cmd ... ARGS`` in a fresh process."""
    done = subprocess.run(
        [PY, "-m", "merkle_sync", "-e", sshd.rsh, "--remote-cmd", remote_cmd, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


def remote(sshd: Sshd, path: Path) -> str:
    return f"{sshd.host}:{path}"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    (s / "pkg" / "sub" / "deep").mkdir(parents=True)
    (s / "pkg" / "mod.py").write_text("print('hello')\n" * 50)
    (s / "pkg" / "sub" / "deep" / "data.bin").write_bytes(os.urandom(1 << 20))
    (s / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (s / "run.sh").chmod(0o755)
    (s / "private.txt").write_text("secret")
    (s / "private.txt").chmod(0o600)
    (s / "link").symlink_to("pkg/mod.py")
    (s / "dangling").symlink_to("no/such/file")
    os.utime(s / "pkg" / "mod.py", ns=(1_000_000_000, 1_000_000_000))
    os.utime(s / "pkg" / "sub", ns=(1_200_000_000, 1_200_000_000))
    return s


def test_an_initial_sync_over_ssh_mirrors_content_modes_mtimes_and_links(sshd, src, tmp_path):
    dst = tmp_path / "dst over ssh"  # a space: the path is quoted through the login shell
    out = json.loads(over_ssh(sshd, "--json", str(src), remote(sshd, dst)).stdout)
    assert tree(dst) == tree(src)
    assert (out["created"], out["deleted"], out["files_scanned"]) == (9, 0, 6)
    assert out["bytes_up"] > 0 and out["bytes_down"] > 0 and not out["dry_run"]


def test_an_edit_then_a_resync_sends_far_less_than_the_file(sshd, src, tmp_path):
    dst = tmp_path / "dst"
    over_ssh(sshd, "-q", str(src), remote(sshd, dst))
    big = src / "pkg" / "sub" / "deep" / "data.bin"
    size = big.stat().st_size
    with open(big, "r+b") as f:
        f.seek(size // 2)
        f.write(b"edited!")
    out = json.loads(over_ssh(sshd, "--json", str(src), remote(sshd, dst)).stdout)
    assert tree(dst) == tree(src)
    assert out["updated"] == 1 and out["created"] == 0
    assert out["bytes_up"] + out["bytes_down"] < size // 20, out
    assert out["delta_files"] == 1, out  # against the copy the source kept of what it sent


def test_a_noop_resync_over_ssh_is_one_round_trip(sshd, src, tmp_path):
    dst = tmp_path / "dst"
    over_ssh(sshd, "-q", str(src), remote(sshd, dst))
    before = tree(dst)
    out = json.loads(over_ssh(sshd, "--json", str(src), remote(sshd, dst)).stdout)
    assert out["round_trips"] == 1, out
    assert (out["created"], out["updated"], out["attrs"], out["deleted"]) == (0, 0, 0, 0)
    assert tree(dst) == before == tree(src)


def test_a_dry_run_over_ssh_changes_nothing(sshd, src, tmp_path):
    dst = tmp_path / "dst"
    over_ssh(sshd, "-q", str(src), remote(sshd, dst))
    (src / "pkg" / "mod.py").write_text("print('edited')\n")
    (src / "new.txt").write_text("new")
    (src / "run.sh").chmod(0o700)
    (dst / "stale.txt").write_text("stale")
    before = raw_state(dst)
    done = over_ssh(sshd, "-n", "--json", str(src), remote(sshd, dst))
    assert raw_state(dst) == before
    assert json.loads(done.stdout.splitlines()[-1])["dry_run"] is True
    plan = over_ssh(sshd, "-n", str(src), remote(sshd, dst)).stdout
    assert "would update  pkg/mod.py" in plan
    assert "would create  new.txt" in plan
    assert "would delete  stale.txt" in plan
    assert raw_state(dst) == before
    nothing = tmp_path / "never"
    over_ssh(sshd, "-n", str(src), remote(sshd, nothing))
    assert not nothing.exists()


def test_a_wrong_remote_command_is_exit_12_naming_its_exit_status(sshd, src, tmp_path):
    dst = tmp_path / "dst"
    done = over_ssh(sshd, str(src), remote(sshd, dst), remote_cmd="false", check=12)
    assert "exited with status 1" in done.stderr, done.stderr
    missing = over_ssh(sshd, str(src), remote(sshd, dst), remote_cmd="/no/such/cmd", check=12)
    assert "exited with status 127" in missing.stderr, missing.stderr
    assert not dst.exists()
