"""Content-addressed deltas: exact figures of the issue's table, and edits that must stay exact."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.runner import measure
from benchmarks.workloads import BY_NAME, MODIFIED
from merkle_sync import (
    FileSystemEvent,
    MemoryFileSystem,
    ReplicatorSource,
    ReplicatorTarget,
)
from merkle_sync.protocol import Apply
from merkle_sync.testing import MeteredRpc, same_tree


@pytest.mark.parametrize(
    ("name", "max_bytes", "writes", "round_trips"),
    [
        ("overwrite_8mib", 8 << 10, 1, 2),  # refine the changed leaf, then apply
        ("overwrite_64mib", 8 << 10, 1, 2),
        ("insert_8mib", 4 << 10, 1, 2),
        ("rename_dir", 16 << 10, 50, 3),  # remove; probe (the target kept the bytes); apply
        ("copy_file", 512, 1, 1),
        ("noop_10k", 200, 0, 1),
    ],
)
def test_table_figures(name, max_bytes, writes, round_trips):
    got = measure(BY_NAME[name])
    assert got["bytes"] <= max_bytes
    assert got["writes"] == writes
    assert got["round_trips"] == round_trips


class LiteralMeter:
    """Counts the literal content bytes every Apply carries."""

    def __init__(self, handle):
        self.handle = handle
        self.literal_bytes = 0

    def __call__(self, request):
        if isinstance(request, Apply):
            self.literal_bytes += len(request.literals)
        return self.handle(request)


def test_rename_and_copy_send_no_content_bytes():
    for name in ("rename_dir", "copy_file"):
        workload = BY_NAME[name]
        src, dst = MemoryFileSystem(), MemoryFileSystem()
        workload.setup(src, "/src", dst, "/dst")
        meter = LiteralMeter(ReplicatorTarget(dst, "/dst").handle_request)
        source = ReplicatorSource(src, "/src", MeteredRpc(meter))
        meter.literal_bytes = 0
        for events in workload.steps(src, "/src"):
            for event in events:
                source.handle_event(event)
        assert same_tree(src, "/src", dst, "/dst")
        assert meter.literal_bytes == 0, name


def test_content_is_reused_from_anywhere_on_the_target_in_a_walk():
    """A fresh source over a target that holds the content under other names sends none."""
    rng = random.Random(1)
    blobs = [rng.randbytes(50_000) for _ in range(3)]
    fs = MemoryFileSystem()
    for i, blob in enumerate(blobs):
        fs.makedirs(f"/dst/old{i}")
        fs.writefile(f"/dst/old{i}/x.bin", blob)
        fs.makedirs(f"/src/new/deeper{i}")
        fs.writefile(f"/src/new/deeper{i}/y.bin", blob)
    meter = LiteralMeter(ReplicatorTarget(fs, "/dst").handle_request)
    ReplicatorSource(fs, "/src", MeteredRpc(meter))
    assert same_tree(fs, "/src", fs, "/dst")
    assert meter.literal_bytes == 0


edits = st.lists(
    st.tuples(
        st.sampled_from(["overwrite", "insert", "delete", "append", "truncate", "replace"]),
        st.floats(0, 1),
        st.integers(1, 3000),
        st.integers(0, 2**32),
    ),
    min_size=1,
    max_size=6,
)


def edit(data: bytes, how: str, where: float, size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    at = int(where * len(data))
    if how == "overwrite":
        return data[:at] + rng.randbytes(size) + data[at + size :]
    if how == "insert":
        return data[:at] + rng.randbytes(size) + data[at:]
    if how == "delete":
        return data[:at] + data[at + size :]
    if how == "append":
        return data + rng.randbytes(size)
    if how == "truncate":
        return data[:at]
    return rng.randbytes(size * 20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 300_000), st.integers(0, 2**32), edits, st.booleans())
def test_any_edit_sequence_on_large_files_stays_exact(size, seed, steps, as_text):
    """Leaves, refinement and reuse never change what lands: exact content, one write each."""
    rng = random.Random(seed)
    fs = MemoryFileSystem()
    fs.makedirs("/src")
    data = rng.randbytes(size)
    content = data.hex() if as_text else data
    fs.writefile("/src/f", content)
    fs.writefile("/src/g", content)  # a duplicate, so pieces may come from another file
    ReplicatorSource(fs, "/src", MeteredRpc(ReplicatorTarget(fs, "/dst").handle_request))
    for how, where, n, s in steps:
        data = edit(data, how, where, n, s)
        before = fs.get_num_operations("writefile")
        fs.writefile("/src/f", data.hex() if as_text else data)
        fs.handle_event(FileSystemEvent("/src/f", MODIFIED))
        assert same_tree(fs, "/src", fs, "/dst")
        assert fs.get_num_operations("writefile") - before <= 2  # the edit and its mirror


@pytest.mark.parametrize("how", ["overwrite", "insert"])
def test_a_walk_refines_changed_leaves_against_the_old_version(how):
    """A fresh source over a target holding yesterday's version: a small edit stays small."""
    old = random.Random(3).randbytes(8 << 20)
    new = edit(old, how, 0.5 if how == "overwrite" else 0.0, 1 if how == "overwrite" else 100, 4)
    fs = MemoryFileSystem()
    fs.makedirs("/src/deep/er")
    fs.makedirs("/dst/deep/er")
    fs.writefile("/dst/deep/er/big.bin", old)
    fs.writefile("/src/deep/er/big.bin", new)
    meter = LiteralMeter(ReplicatorTarget(fs, "/dst").handle_request)
    rpc = MeteredRpc(meter)
    ReplicatorSource(fs, "/src", rpc)
    assert same_tree(fs, "/src", fs, "/dst")
    assert meter.literal_bytes < 1024  # sub-chunks, not a whole 8 KiB leaf
    assert rpc.total <= 8 << 10
    # root, deep and er listings; the file's four content levels probed; one refinement;
    # the apply
    assert rpc.round_trips == 9
