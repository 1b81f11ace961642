"""Recent samples by kind, in time-bounded ring buffers, and windows cut from them.

The UI and `snapshot` both feed every decoded sample here and ask for a window; analysis
works on windows only, so live, headless and replayed sessions run the same code. Memory is
bounded twice: by age (`horizon_s`) and by count (`maxlen`), whichever bites first.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeVar

from lifescope.samples import (
    KINDS,
    CollectorCost,
    GilInfo,
    GilOwnership,
    GilRuns,
    Hello,
    LinkGap,
    PacketsSample,
    ProbeStatus,
    ProcessesSample,
    Sample,
    SocketsSample,
    StacksWindow,
    TargetGone,
    TasksSample,
    ThreadsSample,
)

if sys.version_info >= (3, 11):
    from typing import assert_never
else:
    from typing_extensions import assert_never

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Window:
    """Everything observed between `start` and `end` (collector monotonic seconds).

    One field per kind of `samples.KINDS` (typed here, so analysis reads `window.threads` as
    ThreadsSamples; a test checks the two agree), and the latest of the kinds that are state.
    """

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
        self._buffers: dict[type, deque[Any]] = {
            kind.cls: deque(maxlen=maxlen // kind.keep) for kind in KINDS
        }
        self.gil_info: GilInfo | None = None
        self.gaps: deque[LinkGap] = deque(maxlen=1000)
        """Every closed link outage of a remote session (kept whole: one per reconnection)."""
        self.link_down: LinkGap | None = None
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.received = 0

    def buffer(self, cls: type[S]) -> deque[S]:
        """The kept samples of one kind of `samples.KINDS`, oldest first."""
        return self._buffers[cls]

    def add(self, sample: Sample) -> None:
        self.received += 1
        if isinstance(sample, Hello):
            self.hello = sample
            return
        t = sample.t
        self.first_t = t if self.first_t is None else min(self.first_t, t)
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        match sample:
            case (
                ThreadsSample()
                | StacksWindow()
                | GilOwnership()
                | SocketsSample()
                | CollectorCost()
                | GilRuns()
                | TasksSample()
                | PacketsSample()
                | ProcessesSample()
            ):
                self._append(self._buffers[type(sample)], sample)
            case GilInfo():
                self.gil_info = sample
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
            case _:
                assert_never(sample)

    def _append(self, buffer: deque[Any], sample: Any) -> None:
        buffer.append(sample)
        oldest = sample.t - self.horizon_s
        while buffer and buffer[0].t < oldest:
            buffer.popleft()

    def window(self, seconds: float | None = None, end: float | None = None) -> Window:
        """The last `seconds` up to `end` (default: the newest sample); None = everything."""
        end = end if end is not None else (self.last_t or 0.0)
        first = self.first_t if self.first_t is not None else end
        start = first if seconds is None else max(first, end - seconds)
        cut: dict[str, Any] = {}
        for kind in KINDS:
            buffer = self._buffers[kind.cls]
            if kind.spans:
                # A stacks window or a GIL run is stamped at its end but covers what came
                # before it.
                cut[kind.field] = tuple(s for s in buffer if s.t >= start and s.start <= end)
            else:
                cut[kind.field] = tuple(s for s in buffer if start <= s.t <= end)
        return Window(
            start=start,
            end=end,
            hello=self.hello,
            statuses=tuple(self.statuses.values()),
            gone=self.gone,
            gil_info=self.gil_info,
            gaps=tuple(g for g in self.gaps if g.t >= start and g.start <= end),
            link_down=self.link_down,
            **cut,
        )
