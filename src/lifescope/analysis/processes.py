"""A pre-fork server's processes over the window: which worker holds the load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lifescope.samples import ProcessesSample


@dataclass(frozen=True, slots=True)
class ProcessView:
    pid: int
    role: str
    cpu_share: float | None
    """CPU over the window as a fraction of one core; None if seen in one sample only."""
    rss_bytes: int
    threads: int
    fds: int
    connections: int
    busy: int


def processes_view(samples: Sequence[ProcessesSample], clock_ticks: int) -> tuple[ProcessView, ...]:
    """The latest sample's processes (master first, then workers by pid), with each one's
    CPU share between the first and the last sample of the window that saw it."""
    if not samples:
        return ()
    first: dict[int, tuple[float, int]] = {}
    for sample in samples:
        for proc in sample.processes:
            first.setdefault(proc.pid, (sample.t, proc.cpu_ticks))
    latest = samples[-1]
    views = []
    for proc in latest.processes:
        t0, ticks0 = first[proc.pid]
        share = None
        if latest.t > t0:
            share = round(max(0.0, (proc.cpu_ticks - ticks0) / clock_ticks / (latest.t - t0)), 4)
        views.append(
            ProcessView(
                proc.pid,
                proc.role,
                share,
                proc.rss_bytes,
                proc.threads,
                proc.fds,
                proc.connections,
                proc.busy,
            )
        )
    views.sort(key=lambda v: (v.role != "main", v.pid))
    return tuple(views)
