"""Load shedding: slower sampling while the target is short of CPU because the machine is.

Why: on a saturated host every cycle lifescope spends is taken from someone, and measured on
a 2-core VM with a saturated aiohttp server, the collector at full rates (~30 % of a core
there) cost the server ~0.7× of its requests/s. So when the machine has little idle CPU
*and* the target's threads are kept waiting for a CPU (their run-queue delay, from
`/proc/PID/task/*/schedstat`), the probes that sample on a clock (GIL, threads, stacks,
sockets, tasks) run at `SHED_SCALE` of their rates, and return to full rate once either the
machine has room again. Sampling stays unbiased at the lower
rate; shares get noisier and hold times coarser, which the header says.

Both signals, because each alone misleads: a busy machine whose other work does not delay
the target loses it nothing (an 8-core box with a batch job), and a target that waits on a
run queue while cores sit idle is pinned or throttled by its cgroup, which lifescope's rate
does not change. The hysteresis (`HOLD_S`, two thresholds each) keeps rates from flapping:
shedding frees CPU that a saturated target uses at once, so the signals stay high until
the load really drops.
"""

from __future__ import annotations

import os
from collections.abc import Callable

BUSY_IDLE = 0.15
"""Machine idle share (all CPUs) under which the probes may shed load ..."""
STARVED = 0.02
"""... when the target's threads together also waited for a CPU this share of the time
(a real-time GIL sampler alone kept a saturated server waiting ~2-4 %: its preemptions)."""
CALM_IDLE = 0.30
"""Back to full rate when the idle share is over this. Not on the target's wait falling:
shedding is what makes it fall, and full rate would bring it back (rates would flap)."""
SHED_SCALE = 0.25
LEAN_SCALE = 0.25
"""`--lean` (a thin link to a remote collector): the rates of a shedding collector, always."""
HOLD_S = 2.0
"""How long the signals must stay past a threshold before the rates change."""


def read_cpu_times(path: str = "/proc/stat") -> tuple[int, int]:
    """(idle, total) jiffies over all CPUs; idle includes iowait, total includes steal."""
    with open(path, "rb") as handle:
        fields = handle.readline().split()[1:]
    values = [int(v) for v in fields[:8]]
    return values[3] + values[4], sum(values)


def run_delay_ns(pid: int) -> int:
    """Nanoseconds the process's threads have spent runnable but not running (schedstat's
    second field), summed over the threads alive now."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as handle:
                total += int(handle.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the thread exited between listdir and open
    return total


class Budget:
    """The rate scale every clock-driven probe applies; 1.0 unless the target is starved.

    `scale` is a plain float attribute: probes read it from their threads (a float store is
    atomic in CPython) and `update()` is called by the collector about once a second.
    """

    def __init__(
        self,
        enabled: bool = True,
        pid: int | None = None,
        read: Callable[[], tuple[int, int]] = read_cpu_times,
        read_delay: Callable[[int], int] = run_delay_ns,
        ceiling: float = 1.0,
    ) -> None:
        self.enabled = enabled
        self.ceiling = ceiling
        """The highest scale allowed (`LEAN_SCALE` in lean mode); shedding goes below it."""
        self.pid = pid
        self._read = read
        self._read_delay = read_delay
        self.scale = ceiling
        self.idle_share: float | None = None
        self.waiting_share: float | None = None
        """The target's run-queue wait per second of wall time (cores' worth)."""
        self._last: tuple[int, int] | None = None
        self._last_delay: int | None = None
        self._last_t: float | None = None
        self._past_threshold_s = 0.0

    def update(self, now: float) -> float:
        """Read both signals since the last call and move the scale if they stayed past a
        threshold for `HOLD_S`. Returns the scale."""
        try:
            sample = self._read()
            delay = self._read_delay(self.pid) if self.pid is not None else None
        except (OSError, ValueError, IndexError):
            return self.scale
        last, last_delay, last_t = self._last, self._last_delay, self._last_t
        self._last, self._last_delay, self._last_t = sample, delay, now
        if last is None or last_t is None or sample[1] <= last[1] or now <= last_t:
            return self.scale
        idle = (sample[0] - last[0]) / (sample[1] - last[1])
        self.idle_share = idle
        waiting = None
        if delay is not None and last_delay is not None:
            waiting = max(0, delay - last_delay) / 1e9 / (now - last_t)
            self.waiting_share = waiting
        if not self.enabled or self.ceiling <= SHED_SCALE:
            return self.scale  # full rate by request; or lean, already as slow as shedding
        if self.scale < self.ceiling:
            crossing = idle > CALM_IDLE
        else:
            crossing = idle < BUSY_IDLE and (self.pid is None or (waiting or 0.0) >= STARVED)
        self._past_threshold_s = self._past_threshold_s + (now - last_t) if crossing else 0.0
        if self._past_threshold_s >= HOLD_S:
            self.scale = self.ceiling if self.scale < self.ceiling else SHED_SCALE
            self._past_threshold_s = 0.0
        return self.scale


def rate_within(per_second: float, items: int, low_hz: float, high_hz: float) -> float:
    """The rate at which `items` things read each pass cost `per_second` reads a second,
    kept between `low_hz` and `high_hz` (a requested maximum below the floor wins). The
    threads, stacks and sockets probes each pace themselves by one of these budgets."""
    return max(min(low_hz, high_hz), min(high_hz, per_second / max(1, items)))


FULL = Budget(enabled=False)
"""The budget of a probe no collector manages (tests, benchmarks): always full rate."""
