"""Benchmarks: a seeded workload catalogue, a naive baseline, rsync side by side, and a gate."""
