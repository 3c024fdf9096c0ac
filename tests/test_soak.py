"""A random soak on a real disk: thousands of mixed user changes, delivered as events, as
rescans or through restarts of either side, with hand edits inside the target now and then;
after each sync the target lists and reads exactly as the source (content, kinds, modes,
mtimes, links). CI runs a bounded version; ``pytest -m soak`` runs the long one
(``SOAK_STEPS`` sets its length, ``SOAK_SEED`` its seed)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest

from merkle_sync import FileSystemEvent, FileSystemEventType, ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from tests.test_metadata import find

NAMES = ["a", "b", "c", "dir", "x.txt", "é", "sub", "big.bin"]


def listing(root: Path) -> list[str]:
    """``find`` fields plus a digest of every regular file's bytes."""
    lines = find(root)
    for dirpath, dirs, files in os.walk(root):
        if dirpath == str(root):
            dirs[:] = [d for d in dirs if d != ".merkle_sync"]
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                digest = hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
                lines.append(f"{path.relative_to(root)} = {digest}")
    return sorted(lines)


def _tree(root: Path) -> tuple[list[Path], list[Path]]:
    files, dirs = [], [root]
    for dirpath, dnames, fnames in os.walk(root):
        base = Path(dirpath)
        if base == root:
            dnames[:] = [d for d in dnames if d != ".merkle_sync"]
        dirs += [base / d for d in dnames if not (base / d).is_symlink()]
        files += [base / f for f in fnames] + [base / d for d in dnames if (base / d).is_symlink()]
    return files, dirs


def change(root: Path, rng: random.Random) -> list[Path]:
    """One user change somewhere in ``root``; returns the paths an OS watcher would name
    (a move names both ends; nobody names the directory whose mtime moved)."""
    files, dirs = _tree(root)
    op = rng.choice(
        ["write", "write", "mkdir", "link"]
        + (["modify", "modify", "chmod", "touch", "remove", "rename"] if files else [])
        + (["rmdir"] if len(dirs) > 1 else [])
    )
    if op in ("write", "mkdir", "link"):
        path = rng.choice(dirs) / rng.choice(NAMES)
        if path.exists() or path.is_symlink():
            return [path]
        if op == "write":
            size = rng.choice([0, 10, 3000, 70_000, 300_000])
            path.write_bytes(rng.randbytes(size // 2) * 2)
            path.chmod(rng.choice([0o644, 0o755, 0o600]))
        elif op == "mkdir":
            path.mkdir()
        else:
            os.symlink(rng.choice(["a", "../x", "/etc/hostname", "gone"]), path)
        return [path]
    if op == "rmdir":
        path = rng.choice(dirs[1:])
        shutil.rmtree(path)
        return [path]
    path = rng.choice(files)
    if op == "rename":
        to = rng.choice(dirs) / rng.choice(NAMES)
        if not (to.exists() or to.is_symlink()) and not str(to).startswith(f"{path}/"):
            path.rename(to)
        return [path, to]
    if op == "remove":
        path.unlink()
    elif path.is_symlink():
        return [path]
    elif op == "modify":
        data = path.read_bytes()
        at = rng.randrange(len(data) + 1)
        path.write_bytes(data[:at] + rng.randbytes(rng.randint(1, 40)) + data[at + 5 :])
    elif op == "chmod":
        path.chmod(rng.choice([0o644, 0o755, 0o600, 0o700]))
    else:
        os.utime(path, ns=(rng.randrange(2**40),) * 2)
    return [path]


def soak(tmp: Path, steps: int, seed: int) -> None:
    rng = random.Random(seed)
    src, dst = tmp / "src", tmp / "dst"
    src.mkdir()
    fs = DiskFileSystem()

    def start() -> ReplicatorSource:
        target = ReplicatorTarget(fs, str(dst), patch_min=rng.choice([4096, None]))
        frames = rng.choice([2048, 64 << 10, 4 << 20])
        return ReplicatorSource(fs, str(src), target.handle_request, frame_literals=frames)

    source = start()
    for step in range(steps):
        paths = change(src, rng)
        how = rng.choice(["event"] * 6 + ["rescan", "restart", "hand"])
        if how == "event":
            for path in paths:
                fs.handle_event(FileSystemEvent(str(path), FileSystemEventType.FILE_MODIFIED))
        elif how == "rescan":
            source.rescan()
        else:
            if how == "hand":  # someone edits the mirror; a restart of the target sees it
                hand_files, _ = _tree(dst)
                if hand_files:
                    victim = rng.choice(hand_files)
                    if victim.is_file() and not victim.is_symlink():
                        victim.write_bytes(b"edited by hand")
            source = start()
        assert listing(dst) == listing(src), f"step {step} ({how}), seed {seed}"
    source.rescan()
    assert listing(dst) == listing(src)


def test_a_bounded_soak(tmp_path):
    soak(tmp_path, int(os.environ.get("SOAK_CI_STEPS", "600")), seed=11)


@pytest.mark.soak
def test_the_long_soak(tmp_path):
    soak(tmp_path, int(os.environ.get("SOAK_STEPS", "3000")), int(os.environ.get("SOAK_SEED", "5")))
