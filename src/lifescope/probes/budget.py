"""Load shedding: slower sampling while the machine has no CPU to spare.

Why: on a saturated host every cycle lifescope spends is taken from the target. Measured on
a 2-core VM with a saturated aiohttp server, the collector at full rates (~33 % of a core
there) cost the server 0.69× of its requests/s; at a quarter of the rates it costs a
fraction of that. So when the whole machine's idle share stays under `BUSY_IDLE` the probes
that sample on a clock (GIL, threads, stacks, sockets, tasks) run at `SHED_SCALE` of their
rates, and return to full rate once it is back over `CALM_IDLE`. Sampling stays unbiased at
the lower rate; shares get noisier and hold times coarser, which the header says.

The machine's idle share (not the target's CPU) is the signal because it is what the target
competes for: a server using one core of an idle 8-core box loses nothing to lifescope, a
server on a 2-core box whose other core runs its load balancer does. The hysteresis keeps
the rates from flapping: shedding frees CPU that a saturated target immediately uses, so the
idle share stays low until the load really drops.
"""

from __future__ import annotations

from collections.abc import Callable

BUSY_IDLE = 0.05
"""Machine idle share (all CPUs) below which the probes shed load."""
CALM_IDLE = 0.20
"""... and above which they return to full rate."""
SHED_SCALE = 0.25
HOLD_S = 2.0
"""How long the idle share must stay past a threshold before the rates change."""


def read_cpu_times(path: str = "/proc/stat") -> tuple[int, int]:
    """(idle, total) jiffies over all CPUs; idle includes iowait, total includes steal."""
    with open(path, "rb") as handle:
        fields = handle.readline().split()[1:]
    values = [int(v) for v in fields[:8]]
    return values[3] + values[4], sum(values)


class Budget:
    """The rate scale every clock-driven probe applies; 1.0 unless the machine is saturated.

    `scale` is a plain float attribute: probes read it from their threads (a float store is
    atomic in CPython) and `update()` is called by the collector about once a second.
    """

    def __init__(
        self, enabled: bool = True, read: Callable[[], tuple[int, int]] = read_cpu_times
    ) -> None:
        self.enabled = enabled
        self._read = read
        self.scale = 1.0
        self.idle_share: float | None = None
        self._last: tuple[int, int] | None = None
        self._past_threshold_s = 0.0
        self._last_t: float | None = None

    def update(self, now: float) -> float:
        """Read the machine's idle share since the last call and move the scale if it stayed
        past a threshold for `HOLD_S`. Returns the scale."""
        try:
            sample = self._read()
        except (OSError, ValueError, IndexError):
            return self.scale
        last, last_t = self._last, self._last_t
        self._last, self._last_t = sample, now
        if last is None or last_t is None or sample[1] <= last[1]:
            return self.scale
        idle = (sample[0] - last[0]) / (sample[1] - last[1])
        self.idle_share = idle
        if not self.enabled:
            return self.scale
        shedding = self.scale < 1.0
        crossing = idle > CALM_IDLE if shedding else idle < BUSY_IDLE
        self._past_threshold_s = self._past_threshold_s + (now - last_t) if crossing else 0.0
        if self._past_threshold_s >= HOLD_S:
            self.scale = 1.0 if shedding else SHED_SCALE
            self._past_threshold_s = 0.0
        return self.scale


FULL = Budget(enabled=False)
"""The budget of a probe no collector manages (tests, benchmarks): always full rate."""
