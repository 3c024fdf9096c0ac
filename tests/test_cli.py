"""The ``merkle-sync`` command end to end, through real processes: mirror semantics, flags and
exit codes, locally, over a pipe to ``serve --stdio``, and through a remote-shell shim."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import signal
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import termios
import textwrap
import time
from pathlib import Path

import pytest

from merkle_sync.diskfs import DiskFileSystem
from merkle_sync.source import ReplicatorSource
from merkle_sync.transport import Link, PipeRpc
from tests.test_soak import listing

PY = sys.executable


def cli(*args: str, check: int | None = 0, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [PY, "-m", "merkle_sync", *args], capture_output=True, text=True, timeout=120, **kw
    )
    if check is not None:
        assert done.returncode == check, (done.returncode, done.stdout, done.stderr)
    return done


def tree(root: Path) -> dict[str, tuple]:
    """Every entry below ``root`` (the target's private state left out): kind, mode, mtime
    and content or link text, as ``rsync -a`` would keep them."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirs[:] = [d for d in dirs if d != ".merkle_sync"]
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            elif not stat.S_ISREG(st.st_mode):
                out[rel] = ("?",)  # never opened: a FIFO would block
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_mtime_ns, Path(path).read_bytes())
    return out


def raw_state(root: Path, private: bool = True) -> dict[str, tuple]:
    """Everything below ``root`` (with the target's private state unless ``private`` is
    false), inode numbers included, for "changed nothing"."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if not private and dirpath == str(root):
            dirs[:] = [d for d in dirs if d != ".merkle_sync"]
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, st.st_ino, data)
    return out


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    (s / "pkg" / "sub").mkdir(parents=True)
    (s / "pkg" / "mod.py").write_text("print('hello')\n" * 50)
    (s / "pkg" / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    (s / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (s / "run.sh").chmod(0o755)
    (s / "link").symlink_to("pkg/mod.py")
    os.utime(s / "pkg" / "mod.py", ns=(1_000_000_000, 1_000_000_000))
    return s


@pytest.fixture
def shim(tmp_path: Path) -> str:
    """A remote shell that ignores the host and runs the command here, as ssh would there."""
    path = tmp_path / "rsh"
    path.write_text('#!/bin/sh\nshift\nexec sh -c "$1"\n')
    path.chmod(0o755)
    return str(path)


def remote_cmd() -> str:
    return f"{PY} -m merkle_sync"


def test_a_local_mirror_keeps_metadata_deletes_extras_and_reports(src, tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "extra.txt").write_text("not in the source")
    refused = cli(str(src), str(dst), check=25)  # never a mirror: nothing deleted unasked
    assert "never been a merkle-sync mirror" in refused.stderr
    assert (dst / "extra.txt").exists()
    first = json.loads(cli("--json", "--force", str(src), str(dst)).stdout)
    assert tree(dst) == tree(src)
    assert first["created"] == 6 and first["deleted"] == 1 and first["files_scanned"] == 4
    again = json.loads(cli("--json", str(src), str(dst)).stdout)
    assert (again["round_trips"], again["created"], again["updated"]) == (1, 0, 0)
    (src / "run.sh").chmod(0o700)
    meta = json.loads(cli("--json", str(src), str(dst)).stdout)
    assert (meta["attrs"], meta["literal_bytes"], meta["updated"]) == (1, 0, 0)
    assert tree(dst) == tree(src)
    stats = cli("--stats", str(src), str(dst)).stdout
    for key in (
        "files scanned",
        "created",
        "updated",
        "deleted",
        "bytes up",
        "bytes down",
        "literal bytes",
        "reused bytes",
        "round trips",
        "seconds",
    ):
        assert key in stats


def test_a_wrong_remote_path_such_as_the_home_directory_is_not_emptied(src, tmp_path, shim):
    """``host:`` is the remote home directory: not empty, never a mirror, so the deletions a
    mirror needs there are refused, and nothing is changed."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    before = raw_state(home)
    done = cli("-e", shim, "--remote-cmd", remote_cmd(), str(src), "host:", cwd=home, check=25)
    assert "--force" in done.stderr
    assert raw_state(home, private=False) == before
    again = cli("-e", shim, "--remote-cmd", remote_cmd(), str(src), "host:", cwd=home, check=25)
    assert "--force" in again.stderr  # the refused run did not make it a mirror
    assert raw_state(home, private=False) == before


def test_help_documents_every_flag_the_mirror_semantics_and_the_exit_codes():
    text = cli("--help").stdout
    for flag in (
        "--dry-run",
        "--exclude",
        "--exclude-from",
        "--delete-excluded",
        "--max-delete",
        "--force",
        "--stats",
        "--json",
        "--progress",
        "--watch",
        "--window",
        "--rsh",
        "--remote-cmd",
        "--checksum",
        "--quiet",
        "--verbose",
    ):
        assert flag in text
    assert "DELETED" in text
    for code in ("0 ", "1 ", "11", "12", "23", "25", "130"):
        assert f"  {code}" in text
    assert "--stdio" in cli("serve", "--help").stdout


def test_serve_stdio_speaks_frames_over_a_pipe(src, tmp_path):
    dst = tmp_path / "dst"
    proc = subprocess.Popen(
        [PY, "-m", "merkle_sync", "serve", "--stdio", str(dst)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    rpc = PipeRpc(Link(proc.stdout, proc.stdin, "pipe"))
    assert rpc.handshake({})["program"] == "merkle-sync"
    source = ReplicatorSource(DiskFileSystem(), str(src), rpc)
    assert tree(dst) == tree(src)
    (src / "pkg" / "mod.py").write_text("print('changed')\n")
    source.rescan()
    assert tree(dst) == tree(src)
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def test_a_remote_target_through_the_remote_shell(src, tmp_path, shim):
    dst = tmp_path / "far away"
    out = cli("--json", "-e", shim, "--remote-cmd", remote_cmd(), str(src), f"me@host:{dst}")
    assert tree(dst) == tree(src) and json.loads(out.stdout)["created"] == 6
    (src / "pkg" / "sub" / "data.bin").write_bytes(b"x" * 10)
    cli("-q", "-e", shim, "--remote-cmd", remote_cmd(), str(src), f"host:{dst}")
    assert tree(dst) == tree(src)


def test_a_peer_that_is_not_merkle_sync_or_of_another_version_is_a_clear_error(src, tmp_path, shim):
    banner = cli("-e", shim, "--remote-cmd", "echo Welcome;", str(src), "h:x", check=12)
    assert "remote shell print" in banner.stderr
    missing = cli("-e", shim, "--remote-cmd", "false", str(src), "h:x", check=12)
    assert "exited with status 1" in missing.stderr
    fake = tmp_path / "old_peer.py"
    fake.write_text(
        textwrap.dedent("""
        import sys, msgpack, struct
        body = msgpack.packb({"program": "merkle-sync", "protocol": 99, "version": "9.0"})
        sys.stdout.buffer.write(struct.pack(">cI", b"H", len(body)) + body)
        sys.stdout.buffer.flush()
    """)
    )
    other = cli("-e", shim, "--remote-cmd", f"{PY} {fake} #", str(src), "h:x", check=12)
    assert "protocol 99" in other.stderr and "same version" in other.stderr


def test_a_peer_that_answers_garbage_is_a_peer_protocol_error(src, tmp_path, shim):
    fake = tmp_path / "bad_peer.py"
    fake.write_text(
        textwrap.dedent("""
        import sys, msgpack, struct
        out, inp = sys.stdout.buffer, sys.stdin.buffer
        def send(kind, body):
            out.write(struct.pack(">cI", kind, len(body)) + body); out.flush()
        def receive():
            kind, size = struct.unpack(">cI", inp.read(5)); return inp.read(size)
        receive()
        send(b"H", msgpack.packb({"program": "merkle-sync", "protocol": 1}))
        while True:
            receive(); send(b"F", b"\\xc1 not a frame")
    """)
    )
    done = cli("-e", shim, "--remote-cmd", f"{PY} {fake} #", str(src), "h:x", check=12)
    assert "merkle-sync:" in done.stderr


@pytest.mark.parametrize("remote", [False, True])
def test_a_dry_run_lists_the_plan_and_its_bytes_and_changes_nothing(src, tmp_path, shim, remote):
    dst = tmp_path / "dst"
    cli(str(src), str(dst))
    (src / "pkg" / "mod.py").write_text("print('edited')\n")
    (src / "new.txt").write_text("new")
    (dst / "stale.txt").write_text("stale")
    before = raw_state(dst)
    where = (
        ["-e", shim, "--remote-cmd", remote_cmd(), str(src), f"h:{dst}"]
        if remote
        else [str(src), str(dst)]
    )
    out = cli("-n", *where).stdout
    assert "would update  pkg/mod.py" in out
    assert "would create  new.txt" in out
    assert "would delete  stale.txt" in out
    assert "would send" in out
    assert raw_state(dst) == before
    nothing = tmp_path / "never"
    cli("-n", str(src), str(nothing))
    assert not nothing.exists()
    planned = json.loads(cli("-n", "--json", "--force", *where).stdout)
    done = json.loads(cli("--json", "--force", *where).stdout)
    assert planned["bytes_up"] == done["bytes_up"]  # exactly what the real run sent
    assert (planned["created"], planned["updated"], planned["deleted"]) == (1, 1, 1)


@pytest.mark.parametrize("remote", [False, True])
def test_a_dry_run_predicts_the_targets_refusals(src, tmp_path, shim, remote):
    """``-n`` asks the target (``merkle_sync.preflight``) whether it would refuse the plan's
    deletions, so it exits 25 where the real run would, and still changes nothing."""
    dst, foreign = tmp_path / "dst", tmp_path / "foreign"
    cli(str(src), str(dst))
    (dst / "stale.txt").write_text("stale")
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine")

    def where(d: Path) -> list[str]:
        return ["-e", shim, "--remote-cmd", remote_cmd(), str(src), f"h:{d}"] if remote else [
            str(src), str(d)]  # fmt: skip

    for args, d in ((["--max-delete", "0"], dst), ([], foreign)):
        before = raw_state(d)
        dry = cli("-n", *args, *where(d), check=25)
        assert "would delete" in dry.stdout
        assert raw_state(d) == before
        cli(*args, *where(d), check=25)  # as the real run
    cli("-n", "--max-delete", "1", *where(dst))  # within the limit: the plan, exit 0


def test_excluded_paths_are_neither_sent_nor_deleted_unless_asked(src, tmp_path):
    dst = tmp_path / "dst"
    (src / "debug.log").write_text("log")
    (src / "build").mkdir()
    (src / "build" / "out.o").write_bytes(b"obj")
    (src / ".merkleignore").write_text("# built files\nbuild/\n")
    patterns = tmp_path / "patterns"
    patterns.write_text("*.tmp\n")
    (src / "scratch.tmp").write_text("tmp")
    dst.mkdir()
    (dst / "keep.log").write_text("the target's own log")
    cli("--exclude", "*.log", "--exclude-from", str(patterns), str(src), str(dst))
    assert not (dst / "debug.log").exists() and not (dst / "build").exists()
    assert not (dst / "scratch.tmp").exists()
    assert (dst / ".merkleignore").exists()  # mirrored, as .gitignore is
    assert (dst / "keep.log").read_text() == "the target's own log"
    again = json.loads(
        cli(
            "--json", "--exclude", "*.log", "--exclude-from", str(patterns), str(src), str(dst)
        ).stdout
    )
    assert again["round_trips"] == 1  # both sides leave the same entries out
    cli("--exclude", "*.log", "--delete-excluded", str(src), str(dst))
    assert not (dst / "keep.log").exists()


@pytest.mark.parametrize("remote", [False, True])
def test_max_delete_stops_before_deleting_anything(src, tmp_path, shim, remote):
    dst = tmp_path / "dst"
    cli(str(src), str(dst))
    shutil.rmtree(src / "pkg")  # three entries: pkg, pkg/mod.py, pkg/sub, pkg/sub/data.bin
    (src / "new.txt").write_text("new")
    before = raw_state(dst, private=False)
    where = (
        ["-e", shim, "--remote-cmd", remote_cmd(), str(src), f"h:{dst}"]
        if remote
        else [str(src), str(dst)]
    )
    done = cli("--max-delete", "3", *where, check=25)
    assert "more than 3" in done.stderr
    assert raw_state(dst, private=False) == before
    cli("--max-delete", "4", *where)
    assert tree(dst) == tree(src)


def test_an_empty_source_does_not_empty_the_target_without_force(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (dst / "precious.txt").write_text("keep me")
    done = cli(str(src), str(dst), check=25)
    assert "--force" in done.stderr and (dst / "precious.txt").read_text() == "keep me"
    cli("--force", str(src), str(dst))
    assert tree(dst) == {}


def test_usage_errors_exit_1(src, tmp_path):
    assert "unrecognized" in cli("--no-such-flag", str(src), "x", check=1).stderr
    assert "not a directory" in cli(str(tmp_path / "missing"), str(tmp_path / "d"), check=1).stderr
    assert not (tmp_path / "d").exists()  # the target's process, started early, did nothing
    assert "overlap" in cli(str(src), str(src / "pkg" / "mirror"), check=1).stderr
    assert "overlap" in cli(str(src / "pkg"), str(src), check=1).stderr
    assert "overlap" in cli(str(src), str(src), check=1).stderr
    assert not (src / "pkg" / "mirror").exists()
    assert "must be local" in cli("host:dir", str(tmp_path / "d"), check=1).stderr
    assert "--window" in cli("--watch", "--window", "0", str(src), "d", check=1).stderr
    assert "--compress-level" in cli("--compress-level", "99", str(src), "d", check=1).stderr


def test_special_files_are_skipped_with_a_warning(src, tmp_path):
    os.mkfifo(src / "a_fifo")
    dst = tmp_path / "dst"
    done = cli(str(src), str(dst))
    assert "skipped a_fifo" in done.stderr
    assert tree(dst) == {k: v for k, v in tree(src).items() if k != "a_fifo"}


def _python_for(prefix: list[str]) -> tuple[str, dict[str, str]]:
    """An interpreter the unprivileged user can run *and* can start again, as the command
    starts its local target with ``sys.executable``. A venv whose interpreter lives under
    root's home (pyenv) runs once through setpriv but cannot start itself again, so the
    system's interpreter of the same version is tried next, given this venv's packages."""
    spawn = (
        "import merkle_sync, subprocess, sys; "
        "subprocess.run([sys.executable, '-c', 'import merkle_sync'], check=True)"
    )
    packages = sysconfig.get_paths()
    path = os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent), packages["purelib"], packages["platlib"]]
    )
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    for python, extra in ((PY, {}), (system, {"PYTHONPATH": path})):
        env = {**os.environ, **extra}
        probe = subprocess.run([*prefix, python, "-c", spawn], capture_output=True, env=env)
        if probe.returncode == 0:
            return python, extra
    pytest.skip(f"an unprivileged user can run neither {PY} nor {system} with merkle_sync")


def _unprivileged() -> tuple[list[str], str, dict[str, str]]:
    """How to run the command as a user whom permission bits bind (root ignores them)."""
    if os.geteuid() != 0:
        return [], PY, {}
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv to drop privileges")
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return (prefix, *_python_for(prefix))


def test_an_unreadable_file_exits_23_and_the_rest_is_synced(tmp_path):
    """Run as an unprivileged user (root reads everything), as rsync's exit 23."""
    prefix, python, extra_env = _unprivileged()
    base = Path(tempfile.mkdtemp(prefix="merkle-sync-test-"))  # pytest's tmp is root-only
    try:
        base.chmod(0o777)
        src, dst, cache = base / "src", base / "dst", base / "cache"
        src.mkdir()
        (src / "ok.txt").write_text("fine")
        (src / "secret.txt").write_text("hidden")
        (src / "secret.txt").chmod(0)
        if prefix:
            for p in (src, src / "ok.txt", src / "secret.txt"):
                os.chown(p, 65534, 65534)
        env = {**os.environ, **extra_env, "XDG_CACHE_HOME": str(cache)}
        done = subprocess.run(
            [*prefix, python, "-m", "merkle_sync", str(src), str(dst)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 23, done.stderr
        assert "skipped secret.txt" in done.stderr
        assert (dst / "ok.txt").read_text() == "fine"
    finally:
        shutil.rmtree(base)


def test_read_only_directories_are_mirrored_written_into_and_removed(tmp_path):
    """A read-only source directory (mode 555) is mirrored read-only; a file added to it
    later must still go in, and a read-only tree removed from the source must go from the
    target, as rsync does (the target failed with exit 11 on every run before)."""
    prefix, python, extra_env = _unprivileged()
    base = Path(tempfile.mkdtemp(prefix="merkle-sync-test-"))
    src, dst = base / "src", base / "dst"

    def own_all() -> None:
        for path in [base, *base.rglob("*")] if prefix else ():
            os.chown(path, 65534, 65534, follow_symlinks=False)

    def sync() -> None:
        env = {**os.environ, **extra_env, "XDG_CACHE_HOME": str(base / "cache")}
        done = subprocess.run(
            [*prefix, python, "-m", "merkle_sync", str(src), str(dst)],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert listing(dst) == listing(src)

    deep = "gone/sub/" + "d/" * 70  # deeper than REMOVE_DEPTH: moved up before removal
    try:
        for d in ("ro", "gone/sub", deep):
            (src / d).mkdir(parents=True, exist_ok=True)
            (src / d / "f").write_text(d)
        for path in sorted(src.rglob("*"), reverse=True):  # every directory, deepest first
            if path.is_dir():
                path.chmod(0o555)
        own_all()
        sync()
        assert stat.S_IMODE((dst / "ro").stat().st_mode) == 0o555
        (src / "ro").chmod(0o755)
        (src / "ro" / "new").write_text("new")
        (src / "ro").chmod(0o555)
        for path in [src / "gone", *(src / "gone").rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(src / "gone")
        own_all()
        sync()
        assert (dst / "ro" / "new").read_text() == "new"
        assert not (dst / "gone").exists()
    finally:
        for path in [base, *base.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(base)


def test_progress_shows_a_bar_on_a_terminal_and_nothing_otherwise(src, tmp_path):
    quiet = cli("--progress", "-q", str(src), str(tmp_path / "a"))
    assert quiet.stderr == "" and quiet.stdout == ""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        done = subprocess.run(
            [PY, "-m", "merkle_sync", "--progress", "-q", str(src), str(tmp_path / "b")],
            stderr=follower,
            stdout=subprocess.PIPE,
            timeout=120,
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert done.returncode == 0
    assert b"hashing" in seen and b"sending" in seen and b"B/s" in seen
    assert b"4/4 files" in seen  # the files written, of the plan


def test_verbose_lists_every_change_once_then_the_summary(src, tmp_path):
    """The plan that ran is listed when the sync ends: a sync that started over (the
    source changed under it) planned twice and listed everything twice before."""
    lines = cli("-v", str(src), str(tmp_path / "dst")).stdout.splitlines()
    for line in ("create  pkg/", "create  pkg/sub/data.bin", "create  link", "create  run.sh"):
        assert lines.count(line) == 1
    assert all(x.startswith("create  ") for x in lines[:-1])
    assert lines[-1].startswith(f"{len(lines) - 1} created, 0 updated")


def test_a_remote_path_under_the_home_directory(src, tmp_path, shim):
    """``host:~/x`` is ``x`` in the remote home (as rsync and scp read it), not ``./~/x``."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    cli("-e", shim, "--remote-cmd", remote_cmd(), str(src), "h:~/my mirror", env=env, cwd=tmp_path)
    assert tree(home / "my mirror") == tree(src)
    assert not (tmp_path / "~").exists()


def test_watch_mirrors_live_one_line_per_sync_and_ctrl_c_exits_130(src, tmp_path):
    import time

    dst = tmp_path / "dst"
    proc = subprocess.Popen(
        [PY, "-m", "merkle_sync", "--watch", "--json", str(src), str(dst)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = json.loads(proc.stdout.readline())
        assert first["created"] == 6 and tree(dst) == tree(src)
        (src / "pkg" / "live.txt").write_text("written while watching")
        line = json.loads(proc.stdout.readline())  # the next sync's own line
        assert line["created"] == 1 and line["round_trips"] >= 1
        deadline = time.monotonic() + 10
        while tree(dst) != tree(src) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree(dst) == tree(src)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "stopped watching" in err


def test_an_io_error_on_the_target_exits_11(src, tmp_path, shim):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("a file where the mirror should go")
    local = cli(str(src), str(not_a_dir), check=11)
    assert "not a directory" in local.stderr
    remote = cli("-e", shim, "--remote-cmd", remote_cmd(), str(src), f"h:{not_a_dir}", check=11)
    assert "not a directory" in remote.stderr
    assert not_a_dir.read_text() == "a file where the mirror should go"


def test_src_and_dst_named_through_links_are_followed_at_the_root_only(src, tmp_path):
    """``~/backup -> /mnt/disk/backup``: the directory the user named is resolved once;
    links below the roots are still mirrored as links, never followed."""
    real = tmp_path / "disk" / "backup"
    real.mkdir(parents=True)
    (tmp_path / "backup").symlink_to(real)
    (tmp_path / "source").symlink_to(src)
    cli(str(tmp_path / "source"), str(tmp_path / "backup"))
    assert tree(real) == tree(src)
    assert (tmp_path / "backup").is_symlink()
    assert (real / "link").is_symlink()


def test_a_second_writer_into_the_same_target_is_refused(src, tmp_path):
    dst = tmp_path / "dst"
    cli(str(src), str(dst))
    holder = subprocess.Popen(
        [PY, "-c", "import sys, time; from merkle_sync.diskfs import DiskFileSystem; "
         f"lock = DiskFileSystem().lock({str(dst / '.merkle_sync' / 'lock')!r}); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        done = cli(str(src), str(dst), check=11)
        assert f"pid {holder.pid}" in done.stderr
    finally:
        holder.kill()
        holder.wait()
    cli(str(src), str(dst))  # free again once the other process is gone


def test_kept_copies_make_edits_deltas_locally_only_when_asked(src, tmp_path):
    """Locally bytes cost nothing, so by default no copies are kept and an edit is sent as
    chunks; with --keep-copies the next edit travels as a delta against the kept copy."""
    mod = src / "pkg" / "mod.py"
    for dst, flags, deltas in (
        (tmp_path / "plain", (), 0),
        (tmp_path / "kept", ("--keep-copies", "16"), 1),
    ):
        mod.write_text("print('hello')\n" * 50)
        cli("-q", "--force", *flags, str(src), str(dst))
        mod.write_text("print('hello')\n" * 25 + "print('edited')\n" + "print('hello')\n" * 24)
        out = json.loads(cli("--json", *flags, str(src), str(dst)).stdout)
        assert tree(dst) == tree(src)
        assert (out["updated"], out["delta_files"]) == (1, deltas), out


def test_ctrl_c_mid_file_leaves_no_staged_bytes_behind(tmp_path):
    """Ctrl-C reaches the command and its target process alike (one process group). The
    target closes on the way out, so a file staged across frames is removed, not left in
    ``DST/.merkle_sync/tmp`` until the next run (it held 90-100 MB there before)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(3):
        (src / f"big{i}").write_bytes(os.urandom(24 << 20))
    proc = subprocess.Popen(
        [PY, "-m", "merkle_sync", str(src), str(dst)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    staging = dst / ".merkle_sync" / "tmp"
    for _ in range(600):  # until a file is being staged (or the sync ended first)
        if proc.poll() is not None or (staging.is_dir() and any(staging.iterdir())):
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    for _ in range(100):  # the target process may outlive the command by a moment
        if not _group_alive(proc.pid):
            break
        time.sleep(0.05)
    assert not staging.is_dir() or list(staging.iterdir()) == []


def _group_alive(pgid: int) -> bool:
    """Whether a process of this group is still running (``pgrep -g``, without procps)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pgid:
                    return True
            except OSError:
                continue
    return False
