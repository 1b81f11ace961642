"""GIL numbers against targets whose truth is known, on every CPython 3.8–3.13 found here."""

from __future__ import annotations

import glob
import json
import subprocess
import threading
import time

import pytest

from lifescope.analysis import report
from lifescope.session import collect
from tests.conftest import PYTHON

PYTHONS = {
    f"3.{minor}": sorted(glob.glob(f"/root/.pyenv/versions/3.{minor}.*/bin/python3.{minor}"))
    for minor in range(8, 14)
}


def interpreter(version: str) -> str:
    if version == "this":
        return PYTHON
    found = PYTHONS.get(version)
    if not found:
        pytest.skip(f"CPython {version} is not installed here")
    return found[-1]


TWO_CPU_THREADS = """
import threading, time
def spin():
    while True:
        sum(range(200))
for i in range(2):
    threading.Thread(target=spin, name=f"spin{i}", daemon=True).start()
print("READY", flush=True)
time.sleep(120)
"""

IDLE = """
import time
print("READY", flush=True)
time.sleep(120)
"""

HALF_IN_2MS_BURSTS = """
import time
print("READY", flush=True)
while True:
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    time.sleep(0.002)
"""


def gil_report(pid: int, seconds: float = 3.0, probes: tuple[str, ...] = ("gil", "threads")):
    timeline = collect(pid, seconds, probes=probes)
    return report.build(timeline.window())


@pytest.mark.parametrize("version", ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"])
def test_two_cpu_bound_threads(python_target, version: str) -> None:  # type: ignore[no-untyped-def]
    proc = python_target(TWO_CPU_THREADS, python=interpreter(version))
    result = gil_report(proc.pid)
    probe = {p.name: p for p in result.probes}["gil"]
    assert probe.status == "ok", probe
    assert probe.rate_hz >= 1500, probe
    gil = result.gil
    assert gil.source == "memory"
    assert gil.held_share is not None and gil.held_share >= 0.9
    spinners = [t for t in result.threads if (t.gil_share or 0) > 0.2]
    assert len(spinners) == 2, [(t.name, t.gil_share) for t in result.threads]
    for thread in spinners:
        assert 0.3 <= thread.gil_share <= 0.7, thread  # type: ignore[operator]
        # each waits while the other holds: both must be seen in futex on the GIL
        assert (thread.waiting_gil_share or 0) > 0.05, thread
    # A forced switch every 5 ms interval: at most ~200/s, and well above 0 with two spinners.
    assert gil.switches_per_s is not None and 50 <= gil.switches_per_s <= 250, gil
    hold = dict(gil.hold_ms)
    assert hold["p50"] is not None and 3.0 <= hold["p50"] <= 8.0, hold  # the 5 ms interval
    assert gil.waiters_mean is not None and 0.5 <= gil.waiters_mean <= 1.0, gil


@pytest.mark.parametrize("version", ["3.8", "3.11", "3.13"])
def test_idle_target_holds_nothing(python_target, version: str) -> None:  # type: ignore[no-untyped-def]
    proc = python_target(IDLE, python=interpreter(version))
    gil = gil_report(proc.pid, 2.0).gil
    assert gil.source == "memory"
    assert gil.held_share is not None and gil.held_share < 0.05


@pytest.mark.parametrize("version", ["3.9", "3.12", "this"])
def test_half_held_in_2ms_bursts(python_target, version: str) -> None:  # type: ignore[no-untyped-def]
    proc = python_target(HALF_IN_2MS_BURSTS, python=interpreter(version))
    gil = gil_report(proc.pid).gil
    # sleep(0.002) overshoots by ~0.05-0.1 ms, and busy and sleep each get the probe's
    # ±0.5 ms edges: 0.5 ± 0.12 holds for every run seen here
    assert gil.held_share is not None and 0.38 <= gil.held_share <= 0.62, gil
    p50 = dict(gil.hold_ms)["p50"]
    assert p50 is not None and 1.5 <= p50 <= 2.8, gil


SPARSE_20MS_BURSTS = """
import time
print("READY", flush=True)
while True:
    time.sleep(0.8)
    end = time.perf_counter() + 0.020
    while time.perf_counter() < end:
        pass
"""


def test_quiet_gil_is_read_slower_and_bursts_still_measured(python_target) -> None:  # type: ignore[no-untyped-def]
    """Truth: 20 ms of GIL every 0.82 s. While the GIL is quiet the probe slows to 500 Hz, so
    the reads per second fall well under 2,000; the first read that finds it held returns to
    full rate, so each burst is still measured as ~20 ms (±2 ms: one slow gap at its start)."""
    from lifescope.samples import FREE, GilRuns

    proc = python_target(SPARSE_20MS_BURSTS)
    timeline = collect(proc.pid, 4.0, probes=("gil",))
    batches = [s for s in timeline.window().gil_runs if isinstance(s, GilRuns)]
    reads = sum(b.reads for b in batches)
    covered = sum(b.t - b.start for b in batches)
    assert covered > 3.0
    assert 600 < reads / covered < 1300, reads / covered  # 2,000/s without the idle rate
    held: list[list[float]] = []
    for batch in batches:
        for start, end, holder in batch.runs:
            if holder == FREE:
                continue
            if held and start - held[-1][1] < 0.002:
                held[-1][1] = end  # one hold split across two batches
            else:
                held.append([start, end])
    durations = [round((end - start) * 1000, 1) for start, end in held]
    assert len(durations) >= 3, durations
    assert all(18.0 <= d <= 22.5 for d in durations), durations


SELF_MEASURING_HALF = """
import sys, time
print("READY", flush=True)
busy = slept = 0.0
stop = time.perf_counter() + 4.0
while time.perf_counter() < stop:
    a = time.perf_counter()
    end = a + 0.002
    while time.perf_counter() < end:
        pass
    b = time.perf_counter()
    time.sleep(0.002)
    busy += b - a
    slept += time.perf_counter() - b
print(busy / (busy + slept), flush=True)
time.sleep(60)
"""


def test_held_share_matches_the_targets_own_measurement(python_target) -> None:  # type: ignore[no-untyped-def]
    """Truth from inside: the target times its own GIL-holding spins over the same seconds."""
    proc = python_target(SELF_MEASURING_HALF)
    result = gil_report(proc.pid, 3.0)
    truth = float(proc.stdout.readline())
    assert result.gil.held_share is not None
    assert abs(result.gil.held_share - truth) <= 0.06, (result.gil.held_share, truth)


def test_memory_probe_agrees_with_pyspy_owns_gil(python_target) -> None:  # type: ignore[no-untyped-def]
    """Same target, same seconds: our held share vs the share of py-spy dumps in which some
    thread owns the GIL, on two CPU-bound threads.

    Not on a 50 % target: there py-spy itself reads low on this 2-core VM (seen: 0.26 when
    the truth was 0.49 and our SCHED_FIFO reader said 0.494), because a normal-priority
    sampler mostly gets the CPU while the target sleeps — the bias our probe avoids.
    """
    from lifescope.probes.pyspy import find_pyspy
    from lifescope.session import CollectorProcess
    from lifescope.timeline import Timeline

    proc = python_target(TWO_CPU_THREADS)
    collector = CollectorProcess(proc.pid, probes=("gil", "threads"))
    timeline = Timeline()
    reader = threading.Thread(target=lambda: [timeline.add(s) for s in collector.samples()])
    reader.start()
    binary = find_pyspy()
    assert binary
    owned = total = 0
    try:
        time.sleep(0.5)
        while total < 60:
            out = subprocess.run(
                [binary, "dump", "--json", "--nonblocking", "--pid", str(proc.pid)],
                capture_output=True,
                timeout=10,
            )
            if out.returncode != 0:
                continue
            total += 1
            owned += any(t.get("owns_gil") for t in json.loads(out.stdout))
    finally:
        collector.stop()
        reader.join(10)
    ours = report.build(timeline.window()).gil.held_share
    assert ours is not None
    assert abs(ours - owned / total) <= 0.1, (ours, owned / total)


def test_snapshot_json_gil_fields(python_target) -> None:  # type: ignore[no-untyped-def]
    proc = python_target(TWO_CPU_THREADS)
    done = subprocess.run([PYTHON, "-m", "lifescope", "snapshot", str(proc.pid), "--seconds",
                           "2", "--json"], capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    gil = snap["gil"]
    assert gil["source"] == "memory"
    assert set(gil["hold_ms"]) == {"p50", "p90", "p99", "max"}
    for key in ("held_share", "switches_per_s", "waiters_mean"):
        assert isinstance(gil[key], (int, float)), key
    for thread in snap["threads"]:
        assert thread["role"] in ("event-loop", "executor", "request", "other")
        assert "waiting_gil_share" in thread
        assert abs(sum(thread["state_shares"].values()) - 1.0) < 0.01
    assert snap["model"] == "threads"
    assert snap["event_loops"] == []


def test_without_the_memory_probe_gil_comes_from_pyspy(python_target) -> None:  # type: ignore[no-untyped-def]
    """The fallback path: no GIL probe, so shares come from py-spy's owns_gil, and say so."""
    proc = python_target(TWO_CPU_THREADS)
    result = gil_report(proc.pid, 3.0, probes=("dump", "threads"))
    assert result.gil.source == "pyspy"
    assert result.gil.held_share is not None and result.gil.held_share >= 0.8
    assert result.gil.switches_per_s is None  # not measurable from py-spy: null, not a guess
