"""Load shedding against a machine that is saturated on purpose (and the pure hysteresis)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time

from lifescope.probes.budget import BUSY_IDLE, CALM_IDLE, SHED_SCALE, STARVED, Budget
from lifescope.samples import CollectorCost, GilRuns
from lifescope.session import collect
from tests.conftest import PYTHON, stop_pid

GIL_BURSTS = """
import time
print("READY", flush=True)
while True:
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    time.sleep(0.002)
"""


def test_hysteresis_on_a_recorded_sequence() -> None:
    """Per second: the machine's idle share and the target's run-queue wait (cores), fed as
    /proc/stat jiffies (200 a second, two CPUs) and schedstat nanoseconds. Busy but the target
    not waiting: no shedding. Busy and waiting for 2 s: shed. No longer waiting (shedding
    did that) but the machine still busy: stay shed. Idle over CALM_IDLE for 2 s: back to
    full rate."""
    seconds = [
        (0.50, 0.00), (0.05, 0.00), (0.05, 0.00), (0.05, 0.00),  # busy, target fed: full
        (0.05, 0.40), (0.05, 0.40), (0.05, 0.40),  # and starved: shed after 2 s
        (0.20, 0.00),  # not waiting now, but no room either: stays shed
        (0.40, 0.30), (0.40, 0.30), (0.40, 0.30),  # room again: full after 2 s
    ]  # fmt: skip
    readings, delays = [(0, 0)], [0]
    for idle_share, waiting in seconds:
        idle, total = readings[-1]
        readings.append((idle + round(200 * idle_share), total + 200))
        delays.append(delays[-1] + round(waiting * 1e9))
    feed, delay_feed = iter(readings), iter(delays)
    budget = Budget(pid=1, read=lambda: next(feed), read_delay=lambda pid: next(delay_feed))
    scales = [budget.update(float(t)) for t in range(len(readings))]
    assert BUSY_IDLE < 0.20 < CALM_IDLE and 0.0 < STARVED < 0.40
    full, shed = 1.0, SHED_SCALE
    assert scales == [full, full, full, full, full, full, shed, shed, shed, shed, full, full]
    assert budget.idle_share == 0.4 and budget.waiting_share == 0.3


def _gil_rates(timeline) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """GIL reads/s in batches before the first shedding cost sample, and after it."""
    window = timeline.window()
    shed_at = next((c.t for c in window.costs if c.rate_scale < 1), None)
    before, after = [], []
    for batch in window.gil_runs:
        if not isinstance(batch, GilRuns) or batch.t - batch.start < 0.05:
            continue
        rate = batch.reads / (batch.t - batch.start)
        if shed_at is None or batch.start < shed_at:
            before.append(rate)
        elif batch.start > shed_at + 0.3:
            after.append(rate)
    return before, after


def test_a_saturated_machine_slows_sampling_and_full_rate_does_not(python_target) -> None:  # type: ignore[no-untyped-def]
    target = python_target(GIL_BURSTS)
    spinners = [
        subprocess.Popen([PYTHON, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        time.sleep(0.5)
        shed = collect(target.pid, 6.5, probes=("gil", "threads"))
        full = collect(target.pid, 4.0, probes=("gil", "threads"), full_rate=True)
    finally:
        for proc in spinners:
            stop_pid(proc)

    costs = [c for c in shed.window().costs if isinstance(c, CollectorCost)]
    idles = [c.machine_idle for c in costs if c.machine_idle is not None]
    assert idles and min(idles) < BUSY_IDLE, idles
    assert any(c.rate_scale == SHED_SCALE for c in costs), [c.rate_scale for c in costs]
    info = shed.window().gil_info
    assert info is not None and info.rate_hz == 500 and not info.realtime, info  # re-sent
    before, after = _gil_rates(shed)
    assert before and after, (before, after)
    # Full rate until the machine had been busy for 2 s. One batch of the target starved of a
    # CPU for over 0.2 s reads a quiet GIL at the idle rate (IDLE_HZ, 500/s) for a while, not
    # because of shedding (seen once under a CPU hog: a batch at 870 reads/s among 2,000s),
    # so most batches must be at full rate and none as slow as a whole shed one.
    assert statistics.median(before) > 1500 and min(before) > 2000 * SHED_SCALE * 1.2, before
    assert max(after) < 2000 * SHED_SCALE * 1.2, after  # ~500 reads/s once shedding

    full_costs = full.window().costs
    assert all(c.rate_scale == 1.0 for c in full_costs)
    all_full, after_full = _gil_rates(full)
    assert after_full == []  # never shed ...
    # ... and 2 kHz on the same busy box (idle batches of a starved target aside, as above)
    assert all_full and statistics.median(all_full) > 1500, all_full
    assert min(all_full) > 2000 * SHED_SCALE * 1.2, all_full
