"""Soak: every probe against the loaded demo server; lifescope's memory and CPU stay flat.

CI runs 2 minutes; `LIFESCOPE_SOAK_SECONDS=1800 python -m pytest tests/reliability/test_soak.py`
is the 30-minute run.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from lifescope.demo.children import DemoServer, start_load
from lifescope.samples import CollectorCost, ThreadsSample
from lifescope.session import CollectorProcess
from lifescope.timeline import Timeline

SECONDS = float(os.environ.get("LIFESCOPE_SOAK_SECONDS", "120"))
WARMUP_S = 20.0


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_collector_soak(demo_server: DemoServer) -> None:
    server = demo_server
    load = start_load(
        server.url,
        rate=30,
        concurrency=6,
        duration=SECONDS + 30,
        mix="fast=5,db=2,sleep=2,bigjson=1",
    )
    collector = CollectorProcess(server.pid)
    timeline = Timeline()
    rss: list[tuple[float, int]] = []
    started = time.monotonic()
    next_probe = started
    try:
        for sample in collector.samples():
            timeline.add(sample)
            now = time.monotonic()
            if now >= next_probe:
                rss.append((now - started, rss_bytes(collector.pid)))
                next_probe = now + 1.0
            if now - started >= SECONDS:
                break
        assert load.running, "the load generator must have run the whole time"
    finally:
        collector.stop()
        load.stop()
    costs = list(timeline.buffer(CollectorCost))
    assert costs and all(n == 0 for _, n in costs[-1].errors), costs[-1].errors
    statuses = {name: s.status for name, s in timeline.statuses.items()}
    # standby: the dump fallback (the GIL and stacks probes work) and the workers probe (the
    # demo is a single process); every other probe worked to the end
    assert statuses == {
        **{name: "ok" for name in statuses},
        "dump": "standby",
        "workers": "standby",
    }, timeline.statuses
    after = [r for t, r in rss if t >= WARMUP_S]
    assert len(after) >= (SECONDS - WARMUP_S) * 0.8
    # flat: the second half is not above the first half by more than 4 MiB
    half = len(after) // 2
    growth = statistics.median(after[half:]) - statistics.median(after[:half])
    assert growth <= 4 * 2**20, f"collector RSS grew {growth / 2**20:.1f} MiB"
    cpu = [c for c in costs if c.t - costs[0].t >= WARMUP_S]
    share = (cpu[-1].cpu_s - cpu[0].cpu_s) / (cpu[-1].t - cpu[0].t)
    assert share < 0.5, f"collector used {share:.0%} of a core"
    threads = [s for s in timeline.buffer(ThreadsSample) if isinstance(s, ThreadsSample)]
    assert threads and isinstance(costs[-1], CollectorCost)
    print(
        f"soak {SECONDS:.0f}s: collector RSS {after[0] / 2**20:.1f} → {after[-1] / 2**20:.1f} MiB,"
        f" CPU {share:.1%} of a core"
    )


def test_timeline_memory_is_bounded_by_age() -> None:
    """Pure: ring buffers drop what is older than the horizon, whatever the session length."""
    from lifescope.samples import ThreadStat

    timeline = Timeline(horizon_s=60)
    for i in range(100 * 300):  # 300 s of a 100 Hz probe
        timeline.add(ThreadsSample(i / 100, (ThreadStat(1, "t", "S", i, 232, 3),)))
    assert len(timeline.buffer(ThreadsSample)) <= 60 * 100 + 1
    assert timeline.buffer(ThreadsSample)[0].t >= 300 - 60 - 0.01
