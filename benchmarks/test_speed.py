"""pytest-benchmark timings: ``python -m pytest benchmarks`` (not part of the test suite).

Timing is compared inside one run (ours against the naive baseline on the same workload,
tree building against blake3 alone), never against an absolute threshold.
"""

from __future__ import annotations

import pytest
from blake3 import blake3

from benchmarks.naive import NaiveSource, NaiveTarget
from benchmarks.workloads import BY_NAME
from merkle_sync import MemoryFileSystem, ReplicatorSource, ReplicatorTarget
from merkle_sync.contenttree import build_tree
from merkle_sync.testing import MeteredRpc

DATA = blake3(b"throughput").digest(length=64 << 20)


def test_tree_64mib(benchmark):
    benchmark.extra_info["bytes"] = len(DATA)
    benchmark(build_tree, DATA)


def test_blake3_alone_64mib(benchmark):
    benchmark(lambda: blake3(DATA).digest())


@pytest.mark.parametrize("impl", ["ours", "naive"])
@pytest.mark.parametrize("name", ["initial_text", "noop_10k", "overwrite_8mib", "rename_dir"])
def test_sync(benchmark, name, impl):
    workload = BY_NAME[name]
    source_cls, target_cls = {
        "ours": (ReplicatorSource, ReplicatorTarget),
        "naive": (NaiveSource, NaiveTarget),
    }[impl]

    def setup():
        src, dst = MemoryFileSystem(), MemoryFileSystem()
        workload.setup(src, "/src", dst, "/dst")
        rpc = MeteredRpc(target_cls(dst, "/dst").handle_request)
        if workload.steps is None:
            return (lambda: source_cls(src, "/src", rpc),), {}
        source = source_cls(src, "/src", rpc)
        batches = list(workload.steps(src, "/src"))
        return (lambda: [source.handle_event(e) for batch in batches for e in batch],), {}

    benchmark.pedantic(lambda run: run(), setup=setup, rounds=3)
