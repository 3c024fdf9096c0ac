"""Upgrades of a real, versioned source tree: the sdists of a popular package.

pip's own sdists are used (not Django, which issue 11's first figures were measured on, so the
design is checked on a second tree). They are downloaded once into ``benchmarks/.cache``
(untracked) with ``pip download``; without a registry the workloads are skipped with the
reason, never faked. Each tree is the sdist's content below its versioned top directory, so
an upgrade changes files, not the name of the whole tree.

Two releases apart, two ways each:

* a **walk**: the target already holds the old release, the source starts with the new one;
* a **change**: the source synced the old release, then the tree is replaced by the new one
  and one event names the root (what the watcher delivers when a whole tree is rewritten).
"""

from __future__ import annotations

import posixpath
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import zstandard

from merkle_sync import FileSystemEvent, FileSystemEventType

PACKAGE = "pip"
#: (old, new): across a minor release, and a patch release.
MINOR = ("24.1.2", "24.2")
PATCH = ("24.1.1", "24.1.2")
CACHE = Path(__file__).parent / ".cache"


class Offline(Exception):
    """The sdist is not cached and could not be downloaded."""


def archive(version: str) -> Path:
    """The cached sdist of ``version``, downloaded the first time."""
    path = CACHE / f"{PACKAGE}-{version}.tar.gz"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-q", "-d", str(CACHE), f"{PACKAGE}=={version}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode or not path.exists():
            raise Offline(f"{PACKAGE} {version} could not be downloaded: {done.stderr.strip()}")
    return path


@cache
def files(version: str) -> dict[str, bytes]:
    """Regular files of the sdist by path below its top directory (links and modes are not
    part of these byte counts: the memory filesystem keeps content only)."""
    out: dict[str, bytes] = {}
    with tarfile.open(archive(version)) as tar:
        for member in tar.getmembers():
            _top, _, rel = member.name.partition("/")
            if not member.isfile() or not rel:
                continue
            norm = posixpath.normpath(rel)
            if norm.startswith(("/", "..")):
                raise SystemExit(f"unexpected member in the sdist: {member.name!r}")
            handle = tar.extractfile(member)
            assert handle is not None
            out[norm] = handle.read()
    return out


def available(versions: tuple[str, str]) -> str | None:
    """``None`` when both sdists are at hand, else why the workload is skipped."""
    try:
        for version in versions:
            files(version)
    except Offline as exc:
        return str(exc)
    return None


def write_tree(fs: Any, root: str, version: str) -> None:
    fs.makedirs(root)
    for rel, data in sorted(files(version).items()):
        path = posixpath.join(root, rel)
        fs.makedirs(posixpath.dirname(path))
        fs.writefile(path, data)


def replace_tree(fs: Any, root: str, version: str) -> None:
    """Make ``root`` hold exactly ``version``: changed files rewritten, stale ones removed."""
    new = files(version)
    stack = [root]
    while stack:  # remove files and directories the new release does not have
        d = stack.pop()
        for name in fs.listdir(d):
            path = posixpath.join(d, name)
            rel = posixpath.relpath(path, root)
            if fs.isdir(path):
                if any(k.startswith(rel + "/") for k in new):
                    stack.append(path)
                else:
                    fs.removedir(path)
            elif rel not in new:
                fs.removefile(path)
    for rel, data in sorted(new.items()):
        path = posixpath.join(root, rel)
        if fs.exists(path) and fs.isfile(path) and _read(fs, path) == data:
            continue
        fs.makedirs(posixpath.dirname(path))
        fs.writefile(path, data)


def _read(fs: Any, path: str) -> bytes:
    data = fs.readfile(path)
    return data.encode() if isinstance(data, str) else bytes(data)


def walk_setup(versions: tuple[str, str]) -> Any:
    def setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
        write_tree(src_fs, src, versions[1])
        write_tree(dst_fs, dst, versions[0])

    return setup


def change_setup(versions: tuple[str, str]) -> Any:
    def setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
        write_tree(src_fs, src, versions[0])
        dst_fs.makedirs(dst)

    return setup


def change_steps(versions: tuple[str, str]) -> Any:
    def steps(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
        replace_tree(fs, src, versions[1])
        yield [FileSystemEvent(src, FileSystemEventType.FILE_MODIFIED)]

    return steps


def bound(versions: tuple[str, str]) -> Any:
    """The issue's information bound: each changed file as ``zstd -19 --patch-from`` the old
    version, plus the new files in one zstd -19 stream."""

    def compute() -> int:
        old, new = files(versions[0]), files(versions[1])
        total = 0
        for rel, data in new.items():
            if rel in old and old[rel] != data:
                base = zstandard.ZstdCompressionDict(
                    old[rel], dict_type=zstandard.DICT_TYPE_RAWCONTENT
                )
                total += len(
                    zstandard.ZstdCompressor(
                        level=19, dict_data=base, write_checksum=False, write_dict_id=False
                    ).compress(data)
                )
        added = b"".join(data for rel, data in sorted(new.items()) if rel not in old)
        return total + (len(zstandard.ZstdCompressor(level=19).compress(added)) if added else 0)

    return compute


def workloads(workload: Any) -> list[Any]:
    """The catalogue's rows for these upgrades and for an initial sync of the new tree
    (``workload`` is the catalogue's class, passed in to avoid an import cycle)."""
    out = []
    for label, versions in (("minor", MINOR), ("patch", PATCH)):
        old, new = versions
        why = f"{PACKAGE} {old} -> {new}"
        ways = (
            ("walk", f"a walk, the target holds {old}", walk_setup(versions), None),
            ("change", f"one event after a good sync of {old}", change_setup(versions),
             change_steps(versions)),
        )  # fmt: skip
        for way, what, setup, steps in ways:
            out.append(
                workload(
                    f"{PACKAGE}_{label}_{way}",
                    f"{why}: {what}",
                    setup,
                    steps,
                    bound=bound(versions),
                    unavailable=lambda v=versions: available(v),
                )
            )
    out.append(
        workload(
            f"{PACKAGE}_initial",
            f"{PACKAGE} {MINOR[1]} source tree into an empty target",
            initial_setup(MINOR[1]),
            unavailable=lambda: available((MINOR[1], MINOR[1])),
        )
    )
    return out


def initial_setup(version: str) -> Any:
    def setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
        write_tree(src_fs, src, version)
        dst_fs.makedirs(dst)

    return setup
