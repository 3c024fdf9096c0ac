"""The workload catalogue: every tree and change is generated from a fixed seed.

A workload builds a source and a target tree with ``setup`` on any contract filesystem. Without
``steps`` the measured sync is the source's constructor (an initial or a no-op sync). With
``steps`` the initial sync runs unmeasured, then ``steps`` mutates the source and yields the
events a watcher would emit, and the handling of those events is measured.
"""

from __future__ import annotations

import posixpath
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from benchmarks import sdist
from merkle_sync import FileSystemEvent, FileSystemEventType

ADDED = FileSystemEventType.FILE_OR_SUBDIR_ADDED
REMOVED = FileSystemEventType.FILE_OR_SUBDIR_REMOVED
MODIFIED = FileSystemEventType.FILE_MODIFIED

Setup = Callable[[Any, str, Any, str], None]
Steps = Callable[[Any, str], Iterator[list[FileSystemEvent]]]


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    setup: Setup
    steps: Steps | None = None
    #: Literal bytes of the change (the information bound); ``None``: all source content;
    #: a callable computes it (from trees that are downloaded first).
    bound: int | Callable[[], int] | None = None
    #: Too large for the CI gate; run by the report and by ``--check --full``.
    full_only: bool = False
    #: Why the workload cannot run here (its input could not be downloaded), or ``None``.
    unavailable: Callable[[], str | None] | None = None

    def skip_reason(self) -> str | None:
        return self.unavailable() if self.unavailable is not None else None


def _write(fs: Any, path: str, content: str | bytes) -> None:
    fs.makedirs(posixpath.dirname(path))
    fs.writefile(path, content)


# -- generators ------------------------------------------------------------------------------
_WORDS = [
    "self",
    "value",
    "result",
    "index",
    "count",
    "name",
    "data",
    "items",
    "config",
    "path",
    "node",
    "tree",
    "hash",
    "size",
    "offset",
    "buffer",
    "request",
    "response",
    "error",
    "event",
    "handler",
    "parent",
    "child",
    "key",
    "entry",
    "total",
    "level",
    "chunk",
]
_TEMPLATES = (
    "{i}def {a}_{b}(self, {c}, {d}=None):",
    '{i}    """Return the {a} of {b} for {c}."""',
    "{i}    {a} = self.{b}.get({c}, {d})",
    "{i}    if {a} is None or len({b}) > {n}:",
    "{i}        raise ValueError(f'bad {a}: {{{b}!r}}')",
    "{i}    for {a} in range({n}):",
    "{i}        {b}[{a}] = {c}({d}, {a} + {n})",
    "{i}    return {a}, {b}",
    "{i}class {A}{B}({C}):",
    "{i}import {a}.{b}",
    "",
)


def source_text(rng: random.Random, lines: int) -> str:
    """Python-like text: repetitive at the token level like real code, never identical."""
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(4)]
        out.append(
            rng.choice(_TEMPLATES).format(
                i="    " * rng.randint(0, 2),
                a=words[0],
                b=words[1],
                c=words[2],
                d=words[3],
                A=words[0].title(),
                B=words[1].title(),
                C=words[2].title(),
                n=rng.randint(0, 999),
            )
        )
    return "\n".join(out) + "\n"


def _code_tree(fs: Any, root: str, seed: int, files: int) -> None:
    rng = random.Random(seed)
    for i in range(files):
        depth = rng.randint(0, 3)
        parts = [f"pkg{rng.randint(0, 5)}" for _ in range(depth)]
        _write(
            fs, posixpath.join(root, *parts, f"mod{i}.py"), source_text(rng, rng.randint(20, 400))
        )


# -- setups ----------------------------------------------------------------------------------
def _empty_target(fs: Any, path: str) -> None:
    fs.makedirs(path)


def initial_text(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    _code_tree(src_fs, src, 1, 300)
    _empty_target(dst_fs, dst)


def initial_binary(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    rng = random.Random(2)
    for i in range(32):
        _write(src_fs, f"{src}/bin/{i:02}.dat", rng.randbytes(128 << 10))
    _empty_target(dst_fs, dst)


def _many(fs: Any, root: str, seed: int, dirs: int, per_dir: int, low: int, high: int) -> None:
    rng = random.Random(seed)
    for d in range(dirs):
        fs.makedirs(f"{root}/d{d:04}")
        for f in range(per_dir):
            text = "".join(rng.choice("abcdefghij \n") for _ in range(rng.randint(low, high)))
            fs.writefile(f"{root}/d{d:04}/f{f:03}.txt", text)


def noop_10k(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    _many(src_fs, src, 3, 100, 100, 20, 200)
    _many(dst_fs, dst, 3, 100, 100, 20, 200)


def _tiny(n_dirs: int) -> Setup:
    def setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
        _many(src_fs, src, 4, n_dirs, 100, 1, 99)
        _empty_target(dst_fs, dst)

    return setup


def _big_file(size: int) -> Setup:
    def setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
        _write(src_fs, f"{src}/big.bin", random.Random(5).randbytes(size))
        _empty_target(dst_fs, dst)

    return setup


def _overwrite(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    path = f"{src}/big.bin"
    data = bytearray(fs.readfile(path))
    data[len(data) // 2] ^= 0x5A
    fs.writefile(path, bytes(data))
    yield [FileSystemEvent(path, MODIFIED)]


def _insert_start(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    path = f"{src}/big.bin"
    fs.writefile(path, random.Random(6).randbytes(100) + fs.readfile(path))
    yield [FileSystemEvent(path, MODIFIED)]


def _append(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    path = f"{src}/big.bin"
    fs.writefile(path, fs.readfile(path) + random.Random(7).randbytes(4096))
    yield [FileSystemEvent(path, MODIFIED)]


def scattered_setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    rng = random.Random(8)
    for i in range(2000):
        _write(src_fs, f"{src}/d{i % 40:02}/f{i:04}.txt", source_text(rng, rng.randint(50, 150)))
    _empty_target(dst_fs, dst)


def scattered_steps(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    rng = random.Random(9)
    for i in rng.sample(range(2000), 20):
        path = f"{src}/d{i % 40:02}/f{i:04}.txt"
        text = fs.readfile(path)
        if isinstance(text, bytes):
            text = text.decode()
        middle = len(text) // 2
        fs.writefile(path, text[:middle] + "# edited: 20 bytes\n" + text[middle:])
        yield [FileSystemEvent(path, MODIFIED)]


def rename_setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    rng = random.Random(10)
    for i in range(50):
        _write(src_fs, f"{src}/assets/a{i:02}.bin", rng.randbytes(64 << 10))
    _write(src_fs, f"{src}/keep.txt", "unchanged")
    _empty_target(dst_fs, dst)


def rename_steps(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    old, new = f"{src}/assets", f"{src}/renamed"
    fs.makedirs(new)
    for name in sorted(fs.listdir(old)):
        fs.writefile(f"{new}/{name}", fs.readfile(f"{old}/{name}"))
    fs.removedir(old)
    yield [FileSystemEvent(old, REMOVED), FileSystemEvent(new, ADDED)]


def copy_setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    _write(src_fs, f"{src}/data/original.bin", random.Random(11).randbytes(1 << 20))
    _empty_target(dst_fs, dst)


def copy_steps(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    fs.writefile(f"{src}/data/copy.bin", fs.readfile(f"{src}/data/original.bin"))
    yield [FileSystemEvent(f"{src}/data/copy.bin", ADDED)]


def type_setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    _write(src_fs, f"{src}/thing", random.Random(12).randbytes(256 << 10))
    _empty_target(dst_fs, dst)


def type_steps(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    rng = random.Random(13)
    fs.removefile(f"{src}/thing")
    for i in range(3):
        _write(fs, f"{src}/thing/part{i}.bin", rng.randbytes(1024))
    yield [FileSystemEvent(f"{src}/thing", REMOVED), FileSystemEvent(f"{src}/thing", ADDED)]


# -- the seed task's classic scenario ----------------------------------------------------------
CLASSIC_SOURCE = {
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
CLASSIC_TARGET = {
    "to_dir": "a file where the source has a directory",
    "to_file/inner/x": "x",
    "same.txt": "same content",
    "diff.txt": "old content",
    "extra.txt": "extra",
    "extra_dir/nested/deeper/y": b"y",
}


def classic_setup(src_fs: Any, src: str, dst_fs: Any, dst: str) -> None:
    for d in ("sub1/sub11", "sub2", "sub3", "to_dir"):
        src_fs.makedirs(f"{src}/{d}")
    for rel, content in CLASSIC_SOURCE.items():
        src_fs.writefile(f"{src}/{rel}", content)
    for rel, content in CLASSIC_TARGET.items():
        _write(dst_fs, f"{dst}/{rel}", content)


def _populate(fs: Any, src: str) -> None:
    fs.makedirs(f"{src}/pop/p1/p11")
    fs.makedirs(f"{src}/pop/p2")
    fs.writefile(f"{src}/pop/top.txt", "top")
    fs.writefile(f"{src}/pop/p1/one.txt", "one")
    fs.writefile(f"{src}/pop/p1/p11/deep.bin", b"deep")


#: (what, mutate(fs, src), event path relative to src, event type)
CLASSIC_STEPS: list[tuple[str, Callable[[Any, str], None], str, FileSystemEventType]] = [
    ("remove a file", lambda fs, s: fs.removefile(f"{s}/a.txt"), "a.txt", REMOVED),
    ("modify a file", lambda fs, s: fs.writefile(f"{s}/b.txt", "B2"), "b.txt", MODIFIED),
    (
        "remove a file in a subdir",
        lambda fs, s: fs.removefile(f"{s}/sub1/c.txt"),
        "sub1/c.txt",
        REMOVED,
    ),
    ("remove an empty subdir", lambda fs, s: fs.removedir(f"{s}/sub2"), "sub2", REMOVED),
    ("remove a non-empty subdir", lambda fs, s: fs.removedir(f"{s}/sub1"), "sub1", REMOVED),
    ("add a file", lambda fs, s: fs.writefile(f"{s}/new.txt", "new"), "new.txt", ADDED),
    ("add an empty subdir", lambda fs, s: fs.makedir(f"{s}/newdir"), "newdir", ADDED),
    (
        "add a file inside it",
        lambda fs, s: fs.writefile(f"{s}/newdir/g.txt", b"g"),
        "newdir/g.txt",
        ADDED,
    ),
    ("add a populated subtree", _populate, "pop", ADDED),
    (
        "write deep in it, reported as ADDED on the existing subdir",
        lambda fs, s: fs.writefile(f"{s}/pop/p1/p11/later.txt", "later"),
        "pop/p1/p11",
        ADDED,
    ),
    (
        "modify that file",
        lambda fs, s: fs.writefile(f"{s}/pop/p1/p11/later.txt", "later, changed"),
        "pop/p1/p11/later.txt",
        MODIFIED,
    ),
    ("remove nested subdirs", lambda fs, s: fs.removedir(f"{s}/pop/p1"), "pop/p1", REMOVED),
]


def classic_steps(fs: Any, src: str) -> Iterator[list[FileSystemEvent]]:
    for _, mutate, rel, kind in CLASSIC_STEPS:
        mutate(fs, src)
        yield [FileSystemEvent(f"{src}/{rel}", kind)]


MIB = 1 << 20
CATALOGUE = [
    Workload("initial_text", "initial sync, 300-file source-code tree, empty target", initial_text),
    Workload(
        "initial_binary", "initial sync, 32 x 128 KiB random files, empty target", initial_binary
    ),
    Workload(
        "noop_10k", "no-op re-sync of a 10,000-file tree over an equal target", noop_10k, bound=0
    ),
    Workload(
        "overwrite_8mib",
        "1-byte overwrite in the middle of an 8 MiB random file",
        _big_file(8 * MIB),
        _overwrite,
        bound=1,
    ),
    Workload(
        "overwrite_64mib",
        "1-byte overwrite in the middle of a 64 MiB random file",
        _big_file(64 * MIB),
        _overwrite,
        bound=1,
        full_only=True,
    ),
    Workload(
        "insert_8mib",
        "100 random bytes inserted at the start of an 8 MiB file",
        _big_file(8 * MIB),
        _insert_start,
        bound=100,
    ),
    Workload(
        "insert_64mib",
        "100 random bytes inserted at the start of a 64 MiB file",
        _big_file(64 * MIB),
        _insert_start,
        bound=100,
        full_only=True,
    ),
    Workload(
        "append_8mib",
        "4 KiB of random bytes appended to an 8 MiB file",
        _big_file(8 * MIB),
        _append,
        bound=4096,
    ),
    Workload(
        "scattered_2000",
        "a 19-byte line inserted in 1% of a 2,000-file tree",
        scattered_setup,
        scattered_steps,
        bound=20 * 19,
    ),
    Workload(
        "rename_dir",
        "directory of 50 x 64 KiB random files renamed",
        rename_setup,
        rename_steps,
        bound=0,
    ),
    Workload("copy_file", "1 MiB file copied to a new name", copy_setup, copy_steps, bound=0),
    Workload(
        "file_to_dir",
        "256 KiB file replaced by a directory of 3 x 1 KiB files",
        type_setup,
        type_steps,
        bound=3 * 1024,
    ),
    Workload("tiny_10k", "initial sync of 10,000 files under 100 bytes", _tiny(100)),
    Workload(
        "tiny_100k", "initial sync of 100,000 files under 100 bytes", _tiny(1000), full_only=True
    ),
    Workload(
        "classic",
        "the seed task's scenario: 12 single changes with events",
        classic_setup,
        classic_steps,
        bound=2 + 3 + 1 + 10 + 5 + 14,
    ),
]

CATALOGUE += sdist.workloads(Workload)

BY_NAME = {w.name: w for w in CATALOGUE}
