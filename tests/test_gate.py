"""The benchmark gate can fail: a baseline lowered by one for any figure makes --check exit 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import GATED
from benchmarks.runner import measure
from benchmarks.workloads import BY_NAME

ROOT = Path(__file__).resolve().parent.parent
BASELINE = json.loads((ROOT / "benchmarks" / "baseline.json").read_text())
MEASURED = {"copy_file": {f: measure(BY_NAME["copy_file"])[f] for f in GATED}}


def run_check(baseline: dict, tmp_path: Path, workload: str) -> subprocess.CompletedProcess:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--check",
            "--only",
            workload,
            "--baseline",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_gate_passes_on_the_committed_baseline(tmp_path):
    result = run_check(BASELINE, tmp_path, "copy_file")
    assert result.returncode == 0, result.stderr


def test_gate_passes_at_exactly_the_measured_figures(tmp_path):
    result = run_check(MEASURED, tmp_path, "copy_file")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("figure", GATED)
def test_gate_fails_when_a_figure_is_above_baseline(tmp_path, figure):
    lowered = json.loads(json.dumps(MEASURED))
    lowered["copy_file"][figure] -= 1
    result = run_check(lowered, tmp_path, "copy_file")
    assert result.returncode == 1
    measured = MEASURED["copy_file"][figure]
    assert f"copy_file: {figure}" in result.stderr
    assert f"baseline {measured - 1}, measured {measured}" in result.stderr
