"""GIL statistics over a window: held share, who holds it, for how long at a time, who waits.

Input is the GIL probe's run-length history (`GilRuns`) and the threads probe's syscalls.
Hold times are runs of "locked, same holder" between reads at the probe's rate, so their
resolution is one read period (0.5 ms at 2 kHz): a thread that drops and retakes the GIL
between two reads looks like one long hold. That is said next to the numbers on screen.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from lifescope import syscalls
from lifescope.samples import FREE, GilInfo, GilRuns, ThreadsSample, ThreadStat


@dataclass(frozen=True, slots=True)
class Holds:
    """GIL history clipped to a window, searchable by time."""

    runs: tuple[tuple[float, float, int], ...]
    starts: tuple[float, ...]
    covered: float
    switches: int
    reads: int

    def holder_at(self, t: float) -> int | None:
        """Holder at time `t` (FREE when free), None when t is outside the history."""
        index = bisect.bisect_right(self.starts, t) - 1
        if index < 0:
            return None
        start, end, holder = self.runs[index]
        return holder if start <= t <= end else None


def holds(samples: Sequence[GilRuns], start: float, end: float) -> Holds:
    runs: list[tuple[float, float, int]] = []
    switches = reads = 0
    covered_from: float | None = None
    covered_to = start
    for sample in samples:
        switches += sample.switches
        reads += sample.reads
        runs.extend(sample.runs)
        covered_from = sample.start if covered_from is None else covered_from
        covered_to = sample.t
    if samples:
        current_start, current_holder = samples[-1].current
        runs.append((current_start, samples[-1].t, current_holder))
    clipped = tuple(
        (max(s, start), min(e, end), h) for s, e, h in sorted(runs) if e > start and s < end
    )
    covered = 0.0
    if covered_from is not None:
        covered = max(0.0, min(covered_to, end) - max(covered_from, start))
    return Holds(clipped, tuple(run[0] for run in clipped), covered, switches, reads)


@dataclass(frozen=True, slots=True)
class GilStats:
    held_share: float | None
    by_thread: tuple[tuple[int, float], ...]
    hold_ms: dict[str, float | None]
    """p50, p90, p99, max of hold durations (ms) for holds that ended in the window."""
    hold_histogram: tuple[tuple[str, int], ...]
    switches_per_s: float | None
    waiters_mean: float | None
    waiting_share: tuple[tuple[int, float], ...]
    resolution_ms: float | None


HISTOGRAM_EDGES_MS = (1.0, 2.0, 5.0, 10.0, 50.0, 100.0)


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def waits_for_gil(thread: ThreadStat, info: GilInfo) -> bool:
    """A thread blocked in futex on the GIL's condition variable or mutex waits for the GIL.

    Measured here to separate GIL waits from other futex waits (locks, queues, conditions)
    on 3.11 and 3.13: those sleep on other addresses.
    """
    if syscalls.name(thread.syscall) != "futex" or thread.arg0 is None:
        return False
    address = thread.arg0
    return (
        info.cond_address <= address < info.cond_address + info.cond_size
        or info.mutex_address <= address < info.mutex_address + info.mutex_size
    )


def stats(
    history: Holds,
    info: GilInfo | None,
    thread_samples: Sequence[ThreadsSample],
) -> GilStats:
    held: defaultdict[int, float] = defaultdict(float)
    """Seconds each thread held the GIL."""
    durations: list[float] = []
    for start, end, holder in history.runs:
        if holder != FREE:
            held[holder] += end - start
    # Closed runs are whole holds; the open one (last) is still growing, so leave it out.
    for start, end, holder in history.runs[:-1]:
        if holder != FREE:
            durations.append((end - start) * 1000)
    durations.sort()
    covered = history.covered
    held_share = sum(held.values()) / covered if covered > 0 else None
    by_thread = tuple(
        sorted(((tid, round(v / covered, 4)) for tid, v in held.items() if covered > 0),
               key=lambda item: -item[1])
    )  # fmt: skip

    waiting: Counter[int] = Counter()
    seen: Counter[int] = Counter()
    waiter_counts: list[int] = []
    if info is not None:
        for sample in thread_samples:
            now_waiting = 0
            for thread in sample.threads:
                seen[thread.tid] += 1
                if waits_for_gil(thread, info):
                    waiting[thread.tid] += 1
                    now_waiting += 1
            waiter_counts.append(now_waiting)
    histogram = []
    lower = 0.0
    for edge in (*HISTOGRAM_EDGES_MS, float("inf")):
        count = sum(1 for d in durations if lower <= d < edge)
        name = f"≥{lower:g}ms" if edge == float("inf") else f"<{edge:g}ms"
        histogram.append((name, count))
        lower = edge
    return GilStats(
        held_share=None if held_share is None else round(min(1.0, held_share), 4),
        by_thread=by_thread,
        hold_ms={
            "p50": _round(_percentile(durations, 0.5)),
            "p90": _round(_percentile(durations, 0.9)),
            "p99": _round(_percentile(durations, 0.99)),
            "max": _round(durations[-1] if durations else None),
        },
        hold_histogram=tuple(histogram),
        switches_per_s=round(history.switches / covered, 1) if covered > 0 else None,
        waiters_mean=(round(sum(waiter_counts) / len(waiter_counts), 3) if waiter_counts else None),
        waiting_share=tuple((tid, round(waiting[tid] / seen[tid], 4)) for tid in seen),
        resolution_ms=round(1000 / info.rate_hz, 3) if info is not None else None,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
