"""Benchmarks must keep running: each `--quick` mode runs and writes numbers (no thresholds —
speed is measured in bench/, never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    ("script", "result"),
    [
        ("bench_gil.py", "gil.json"),
        ("bench_sockets.py", "sockets.json"),
        ("bench_packets.py", "packets.json"),
        ("bench_tasks.py", "tasks.json"),
        ("bench_overhead.py", "overhead.json"),
        ("bench_cost.py", "cost.json"),
        ("bench_ui.py", "ui.json"),
        ("bench_compare.py", "compare.json"),
        ("bench_remote.py", "remote.json"),
        ("bench_record_cost.py", "record_cost_quick.json"),
        ("bench_breakdown.py", "breakdown_quick.json"),
        ("bench_wakeup_floor.py", "wakeup_floor_quick.json"),
    ],
)
def test_quick_benchmark_runs(script: str, result: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"], capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    data = json.loads((BENCH / "results" / result).read_text())
    assert data, "empty result"
