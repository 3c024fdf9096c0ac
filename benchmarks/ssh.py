"""``python -m benchmarks.ssh``: merkle-sync against ``rsync -az`` over a real, loopback sshd.

A throwaway ``sshd`` (see :func:`start_sshd`, which ``tests/test_ssh.py`` uses too) listens on
127.0.0.1; both tools push the Django 5.1 source (cached by ``benchmarks.disk``) through it,
each from its own copy of the source into its own target directory. Each measurement is one
fresh client process under ``/usr/bin/time -v``: wall time, peak RSS (the client and its ssh
child, whichever is larger; the remote side is not counted) and the bytes the tool reports on
its link (ours: ``bytes_up + bytes_down`` of ``--json``; rsync: ``--stats`` "Total bytes
sent" plus "received"; neither counts ssh's own framing and encryption). Workloads, in order:

- ``initial``: the tree into an empty remote directory (ours with a cold source index);
- ``edit``: a few bytes overwritten in the middle of one ``.py`` file of both copies, then a
  re-sync (each run writes new bytes; the targets are as the previous run left them);
- ``noop``: a re-sync with nothing changed.

The table gives medians of ``--runs`` runs (default 3); the ratio is the median of ours/rsync
from the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"
#: Client options: never prompt, trust the throwaway host key, read no user or system config.
SSH_OPTIONS = (
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "LogLevel=ERROR",
)  # fmt: skip
#: How ``ssh`` runs our remote side: this interpreter by absolute path, so any checkout works.
REMOTE_CMD = f"{shlex.quote(sys.executable)} -m merkle_sync"

_CONFIG = """\
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
MaxStartups 64
LogLevel INFO
"""


class SshdError(RuntimeError):
    """The throwaway sshd did not come up; the message carries its log."""


def sshd_missing() -> str | None:
    """Why a loopback sshd cannot be started here, or ``None`` when it can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not found: install openssh-server (apt-get install -y openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not found: install openssh-client"
    return None


@dataclass
class Sshd:
    """A running throwaway sshd and the client key that logs in to it as the current user."""

    proc: subprocess.Popen
    port: int
    key: Path
    log: Path
    host: str = HOST
    ssh_options: tuple[str, ...] = field(default=SSH_OPTIONS)

    @property
    def ssh_argv(self) -> list[str]:
        return ["ssh", "-p", str(self.port), "-i", str(self.key), *self.ssh_options]

    @property
    def rsh(self) -> str:
        """The ``-e``/``--rsh`` value for merkle-sync and rsync (both split it like a shell)."""
        return shlex.join(self.ssh_argv)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "merkle-sync-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, so a killed
    test run or benchmark leaves no sshd behind (Linux only; elsewhere nothing happens)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _answers_ssh(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(workdir: Path, timeout: float = 10.0, attempts: int = 3) -> Sshd:
    """Start ``sshd -D -e`` on a free 127.0.0.1 port with a fresh host key, and a fresh client
    key authorized for the current user; return once it answers with its banner (at most
    ``timeout`` seconds per attempt; another attempt on another port if it could not bind).
    Stop it with :meth:`Sshd.stop`."""
    workdir.mkdir(parents=True, exist_ok=True)
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            _keygen(key)
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    if os.geteuid() == 0:  # privilege separation needs it; a fresh container may lack it
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = workdir / "sshd.log"
    failures = []
    for _ in range(attempts):
        port = _free_port()
        config = workdir / "sshd_config"
        config.write_text(
            _CONFIG.format(
                host=HOST,
                port=port,
                host_key=host_key,
                pid_file=workdir / "sshd.pid",
                authorized_keys=authorized,
                user=getpass.getuser(),
            )
        )
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        sshd = Sshd(proc, port, client_key, log)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers_ssh(port):
                return sshd
            time.sleep(0.05)
        sshd.stop()
        text = log.read_text(errors="replace").strip()
        failures.append(f"port {port}: exit {proc.returncode}: {text or '(no log)'}")
        if "bind" not in text.lower():  # only a port taken meanwhile is worth another try
            break
    raise SshdError("sshd did not start:\n" + "\n".join(failures))


@contextmanager
def running_sshd(workdir: Path) -> Iterator[Sshd]:
    sshd = start_sshd(workdir)
    try:
        yield sshd
    finally:
        sshd.stop()


# --- the benchmark ------------------------------------------------------------------------

EDITED = Path("django", "db", "models", "query.py")


def _ours(sshd: Sshd, src: Path, dst: Path) -> list[str]:
    return [
        sys.executable, "-m", "merkle_sync", "--json", "-e", sshd.rsh,
        "--remote-cmd", REMOTE_CMD, str(src), f"{sshd.host}:{dst}",
    ]  # fmt: skip


def _rsync(sshd: Sshd, src: Path, dst: Path) -> list[str]:
    return ["rsync", "-az", "--delete", "--stats", "-e", sshd.rsh, f"{src}/", f"{sshd.host}:{dst}/"]


def _edit(tree: Path, data: bytes) -> None:
    path = tree / EDITED
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(data)


def _measure(cmd: list[str], env: dict[str, str], kind: str) -> dict:
    from benchmarks.disk import _RSYNC_BYTES, _timed

    try:
        seconds, rss, out = _timed(cmd, env)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{cmd[0]} failed ({exc.returncode}):\n{exc.stderr}") from exc
    if kind == "ours":
        stats = json.loads(out)
        wire = stats["bytes_up"] + stats["bytes_down"]
        return {"seconds": seconds, "rss_mib": rss, "bytes": wire, **stats}
    wire = sum(int(n.replace(",", "")) for _, n in _RSYNC_BYTES.findall(out))
    return {"seconds": seconds, "rss_mib": rss, "bytes": wire}


def _extract_django(src: Path) -> None:
    from benchmarks.disk import _django

    _django(src)


def bench(root: Path, runs: int) -> dict:
    from benchmarks.disk import DJANGO, _fresh, find_listing

    if shutil.which("rsync") is None:
        raise SystemExit("rsync not installed: nothing to compare against")
    print(f"preparing two copies of Django {DJANGO} ...", file=sys.stderr, flush=True)
    srcs = {"ours": root / "src_ours", "rsync": root / "src_rsync"}
    dsts = {"ours": root / "dst_ours", "rsync": root / "dst_rsync"}
    for src in srcs.values():
        src.mkdir()
        _extract_django(src)
    cache = root / "cache"  # our source's index
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    results: dict[str, dict] = {}
    with running_sshd(root / "sshd") as sshd:
        cmds = {
            "ours": _ours(sshd, srcs["ours"], dsts["ours"]),
            "rsync": _rsync(sshd, srcs["rsync"], dsts["rsync"]),
        }
        for workload in ("initial", "edit", "noop"):
            print(f"{workload} ...", file=sys.stderr, flush=True)
            rows: dict[str, list[dict]] = {"ours": [], "rsync": []}
            for i in range(runs):
                print(f"  run {i + 1}/{runs}", file=sys.stderr, flush=True)
                if workload == "initial":
                    _fresh(*dsts.values(), cache)
                elif workload == "edit":
                    data = os.urandom(6)
                    for src in srcs.values():
                        _edit(src / f"django-{DJANGO}", data)
                    subprocess.run(["sync"], check=True)
                for kind in ("ours", "rsync"):
                    rows[kind].append(_measure(cmds[kind], env, kind))
            identical = {
                kind: find_listing(srcs[kind]) == find_listing(dsts[kind]) for kind in srcs
            }
            results[workload] = {**rows, "identical": identical}
    results["_meta"] = {
        "runs": runs,
        "django": DJANGO,
        "files": sum(1 for p in srcs["ours"].rglob("*") if p.is_file()),
        "tree_bytes": sum(p.stat().st_size for p in srcs["ours"].rglob("*") if p.is_file()),
        "edited": str(EDITED),
        "edited_bytes": (srcs["ours"] / f"django-{DJANGO}" / EDITED).stat().st_size,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "ours_cmd": shlex.join(cmds["ours"]),
        "rsync_cmd": shlex.join(cmds["rsync"]),
    }
    return results


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def table(results: dict) -> str:
    out = [
        "| workload | ours s | rsync s | ours/rsync | ours bytes | rsync bytes "
        "| ours RSS MiB | rsync RSS MiB | ours round trips | mirror identical (ours, rsync) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        ours, rsync = r["ours"], r["rsync"]
        ratio = statistics.median(
            o["seconds"] / t["seconds"] for o, t in zip(ours, rsync, strict=True)
        )
        same = ", ".join("yes" if r["identical"][k] else "NO" for k in ("ours", "rsync"))
        out.append(
            f"| {name} | {_median(ours, 'seconds'):.2f} | {_median(rsync, 'seconds'):.2f} "
            f"| {ratio:.2f} | {int(_median(ours, 'bytes')):,} | {int(_median(rsync, 'bytes')):,} "
            f"| {_median(ours, 'rss_mib'):.0f} | {_median(rsync, 'rss_mib'):.0f} "
            f"| {int(_median(ours, 'round_trips'))} | {same} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ssh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where to build the trees (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the raw runs here")
    args = parser.parse_args(argv)
    why = sshd_missing()
    if why is not None:
        print(f"benchmarks.ssh: {why}", file=sys.stderr)
        return 1
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ms-ssh-", dir=args.dir) as tmp:
        results = bench(Path(tmp), args.runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    meta = results["_meta"]
    print(
        f"Django {meta['django']}: {meta['files']:,} files, {meta['tree_bytes']:,} bytes; "
        f"edit: 6 bytes in the middle of {meta['edited']} ({meta['edited_bytes']:,} bytes); "
        f"load average after: {', '.join(f'{x:.2f}' for x in meta['loadavg_after'])} "
        f"on {meta['cpus']} CPUs."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
