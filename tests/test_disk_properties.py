"""On a real disk, after any mix of changes, events, restarts and small frames, the target's
``find -printf`` listing equals the source's: content, kinds, modes, mtimes and links."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merkle_sync import FileSystemEvent, FileSystemEventType, ReplicatorSource, ReplicatorTarget
from merkle_sync.diskfs import DiskFileSystem
from tests.test_metadata import find

NAMES = st.sampled_from(["a", "b", "c", "dir", "x.txt", "é", "sub"])
BLOB = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda seed, n: (bytes([seed]) * 7 + os.urandom(1)) * n, st.integers(0, 255),
              st.integers(1, 6000)),
)  # fmt: skip
MODES = st.sampled_from([0o644, 0o755, 0o600, 0o700])


def entries(root: Path) -> tuple[list[Path], list[Path]]:
    files, dirs = [], [root]
    for dirpath, dnames, fnames in os.walk(root):
        dirs += [Path(dirpath) / d for d in dnames if not (Path(dirpath) / d).is_symlink()]
        files += [Path(dirpath) / f for f in fnames]
        files += [Path(dirpath) / d for d in dnames if (Path(dirpath) / d).is_symlink()]
    return files, dirs


def change(root: Path, data) -> Path:
    """One user change; returns the path an event would name."""
    files, dirs = entries(root)
    ops = ["write", "mkdir", "link"]
    ops += ["modify", "chmod", "touch", "remove", "rename"] if files else []
    ops += ["rmdir"] if len(dirs) > 1 else []
    op = data.draw(st.sampled_from(ops))
    if op in ("write", "mkdir", "link"):
        parent = data.draw(st.sampled_from(dirs))
        path = parent / data.draw(NAMES)
        if path.exists() or path.is_symlink():
            return path
        if op == "write":
            path.write_bytes(data.draw(BLOB))
            path.chmod(data.draw(MODES))
        elif op == "mkdir":
            path.mkdir()
        else:
            os.symlink(data.draw(st.sampled_from(["a", "../x", "/etc/hostname", "gone"])), path)
        return path
    if op == "rmdir":
        path = data.draw(st.sampled_from(dirs[1:]))
        shutil.rmtree(path)
        return path
    path = data.draw(st.sampled_from(files))
    if op == "rename":  # a move: removal and addition, the content kept by the target
        to = data.draw(st.sampled_from(dirs)) / data.draw(NAMES)
        if not (to.exists() or to.is_symlink()):
            path.rename(to)
        return to.parent
    if op == "remove":
        path.unlink()
    elif path.is_symlink():
        return path
    elif op == "modify":
        old = path.read_bytes()
        at = data.draw(st.integers(0, len(old)))
        path.write_bytes(old[:at] + data.draw(st.binary(min_size=1, max_size=9)) + old[at:])
    elif op == "chmod":
        path.chmod(data.draw(MODES))
    else:
        os.utime(path, ns=(data.draw(st.integers(0, 2**40)),) * 2)
    return path


@settings(
    max_examples=int(os.environ.get("DISK_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.data())
def test_the_target_lists_exactly_as_the_source_after_any_changes(data):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        src.mkdir()
        fs = DiskFileSystem()
        kw = {"frame_literals": data.draw(st.sampled_from([1024, 4 << 20]))}
        target = ReplicatorTarget(fs, str(dst), patch_min=data.draw(st.sampled_from([4096, None])))
        source = ReplicatorSource(fs, str(src), target.handle_request, **kw)
        for _ in range(data.draw(st.integers(1, int(os.environ.get("DISK_STEPS", "8"))))):
            path = change(src, data)
            how = data.draw(st.sampled_from(["event", "rescan", "restart"]))
            if how == "event":
                event = FileSystemEvent(str(path), FileSystemEventType.FILE_MODIFIED)
                fs.handle_event(FileSystemEvent(str(path.parent), event.event_type))
                fs.handle_event(event)
            elif how == "rescan":
                source.rescan()
            else:
                target = ReplicatorTarget(fs, str(dst), patch_min=4096)
                source = ReplicatorSource(fs, str(src), target.handle_request, **kw)
            if how != "event":
                assert find(dst) == find(src)
        source.rescan()
        assert find(dst) == find(src)
