"""Recent samples by kind, in time-bounded ring buffers, and windows cut from them.

The UI and `snapshot` both feed every decoded sample here and ask for a window; analysis
works on windows only, so live, headless and replayed sessions run the same code. Memory is
bounded twice: by age (`horizon_s`) and by count (`maxlen`), whichever bites first.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from lifescope.samples import (
    CollectorCost,
    GilInfo,
    GilOwnership,
    GilRuns,
    Hello,
    LinkGap,
    PacketsSample,
    ProbeStatus,
    ProcessesSample,
    SocketsSample,
    StacksWindow,
    TargetGone,
    TasksSample,
    ThreadsSample,
)


@dataclass(frozen=True, slots=True)
class Window:
    """Everything observed between `start` and `end` (collector monotonic seconds)."""

    start: float
    end: float
    hello: Hello | None
    statuses: tuple[ProbeStatus, ...]
    threads: tuple[ThreadsSample, ...]
    stacks: tuple[StacksWindow, ...]
    dumps: tuple[GilOwnership, ...]
    sockets: tuple[SocketsSample, ...]
    costs: tuple[CollectorCost, ...]
    gone: TargetGone | None
    gil_runs: tuple[GilRuns, ...] = ()
    gil_info: GilInfo | None = None
    tasks: tuple[TasksSample, ...] = ()
    packets: tuple[PacketsSample, ...] = ()
    processes: tuple[ProcessesSample, ...] = ()
    gaps: tuple[LinkGap, ...] = ()
    """Closed link outages (remote sessions) overlapping the window: nothing was observed in
    them, so a share over the window is a share of the time that was seen."""
    link_down: LinkGap | None = None
    """Set while a remote session's link is down."""

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


class Timeline:
    def __init__(self, horizon_s: float = 600.0, maxlen: int = 100_000) -> None:
        self.horizon_s = horizon_s
        self.hello: Hello | None = None
        self.statuses: dict[str, ProbeStatus] = {}
        self.gone: TargetGone | None = None
        self.threads: deque[ThreadsSample] = deque(maxlen=maxlen)
        self.stacks: deque[StacksWindow] = deque(maxlen=maxlen // 100)
        self.dumps: deque[GilOwnership] = deque(maxlen=maxlen // 10)
        self.sockets: deque[SocketsSample] = deque(maxlen=maxlen // 10)
        self.costs: deque[CollectorCost] = deque(maxlen=maxlen // 10)
        self.gil_runs: deque[GilRuns] = deque(maxlen=maxlen // 10)
        self.gil_info: GilInfo | None = None
        self.tasks: deque[TasksSample] = deque(maxlen=maxlen // 100)
        self.packets: deque[PacketsSample] = deque(maxlen=maxlen // 10)
        self.processes: deque[ProcessesSample] = deque(maxlen=maxlen // 100)
        self.gaps: deque[LinkGap] = deque(maxlen=1000)
        """Every closed link outage of a remote session (kept whole: one per reconnection)."""
        self.link_down: LinkGap | None = None
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.received = 0

    def add(self, sample: object) -> None:
        self.received += 1
        if isinstance(sample, Hello):
            self.hello = sample
            return
        t = getattr(sample, "t", None)
        if t is not None:
            self.first_t = t if self.first_t is None else min(self.first_t, t)
            self.last_t = t if self.last_t is None else max(self.last_t, t)
        match sample:
            case ThreadsSample():
                self._append(self.threads, sample)
            case StacksWindow():
                self._append(self.stacks, sample)
            case GilOwnership():
                self._append(self.dumps, sample)
            case SocketsSample():
                self._append(self.sockets, sample)
            case CollectorCost():
                self._append(self.costs, sample)
            case GilRuns():
                self._append(self.gil_runs, sample)
            case GilInfo():
                self.gil_info = sample
            case TasksSample():
                self._append(self.tasks, sample)
            case PacketsSample():
                self._append(self.packets, sample)
            case ProcessesSample():
                self._append(self.processes, sample)
            case ProbeStatus():
                self.statuses[sample.probe] = sample
            case TargetGone():
                self.gone = sample
            case LinkGap():
                if sample.ongoing:
                    self.link_down = sample
                else:
                    self.link_down = None
                    self.gaps.append(sample)

    def _append(self, buffer: deque, sample: object) -> None:  # type: ignore[type-arg]
        buffer.append(sample)
        oldest = sample.t - self.horizon_s  # type: ignore[attr-defined]
        while buffer and buffer[0].t < oldest:
            buffer.popleft()

    def window(self, seconds: float | None = None, end: float | None = None) -> Window:
        """The last `seconds` up to `end` (default: the newest sample); None = everything."""
        end = end if end is not None else (self.last_t or 0.0)
        first = self.first_t if self.first_t is not None else end
        start = first if seconds is None else max(first, end - seconds)

        def cut(buffer: deque) -> tuple:  # type: ignore[type-arg]
            return tuple(s for s in buffer if start <= s.t <= end)

        # A stacks window is stamped at its end but covers the second before it.
        stacks = tuple(s for s in self.stacks if s.t >= start and s.start <= end)
        return Window(
            start=start,
            end=end,
            hello=self.hello,
            statuses=tuple(self.statuses.values()),
            threads=cut(self.threads),
            stacks=stacks,
            dumps=cut(self.dumps),
            sockets=cut(self.sockets),
            costs=cut(self.costs),
            gone=self.gone,
            gil_runs=tuple(r for r in self.gil_runs if r.t >= start and r.start <= end),
            gil_info=self.gil_info,
            tasks=cut(self.tasks),
            packets=cut(self.packets),
            processes=cut(self.processes),
            gaps=tuple(g for g in self.gaps if g.t >= start and g.start <= end),
            link_down=self.link_down,
        )
