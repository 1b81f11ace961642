"""The views a report is made of: what every pane and `snapshot` show.

These dataclasses are the `lifescope.snapshot/1` schema — `json.py` walks their fields, so a
field added here reaches the JSON without a second edit (or is named there as left out).
Every share is a fraction of the window in 0..1; anything the samples cannot support is None
(null in JSON), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifescope.analysis import connections
from lifescope.analysis import packets as packet_analysis
from lifescope.analysis import tasks as task_analysis
from lifescope.analysis.processes import ProcessView
from lifescope.samples import HEALTHY


@dataclass(frozen=True, slots=True)
class ProbeView:
    name: str
    status: str
    reason: str | None
    remedy: str | None
    samples: int
    rate_hz: float


@dataclass(frozen=True, slots=True)
class ThreadView:
    tid: int
    name: str
    state: str
    """Current state in `concurrency.STATES` (or "running" when the GIL is not readable)."""
    syscall: str | None
    cpu_share: float | None
    active_share: float | None
    gil_share: float | None
    top_frame: str | None
    role: str = "other"
    waiting_gil_share: float | None = None
    state_shares: tuple[tuple[str, float], ...] = ()
    strip: str = ""
    """The last few seconds of states, one character per sample, oldest first."""
    socket: SocketRef | None = None
    """The socket this thread is blocked on now (read/recv/send/accept/connect), if any."""
    pid: int | None = None
    """Its process: the attached one, or a pre-fork master's worker."""


@dataclass(frozen=True, slots=True)
class GilView:
    held_share: float | None
    source: str
    samples: int
    switches_per_s: float | None = None
    hold_ms: tuple[tuple[str, float | None], ...] = ()
    waiters_mean: float | None = None
    histogram: tuple[tuple[str, int], ...] = ()
    resolution_ms: float | None = None
    held_series: tuple[float, ...] = ()
    """Held share per `SERIES_STEP_S` over the window, oldest first (for a sparkline)."""
    no_gil: str | None = None
    """Set (why) when the target has no GIL (a free-threaded build with it disabled): source
    is then "none", no held share is given, and what stands in its place is below."""
    runnable_mean: float | None = None
    """No GIL: threads runnable at once (on a CPU or waiting for one), mean over /proc samples."""
    runnable_max: int | None = None


ListenView = connections.Listener
"""A listener as the connections analysis reads it: its fields are the snapshot's own."""


@dataclass(frozen=True, slots=True)
class ConnectionView:
    local: str
    peer: str
    state: str
    phase: str
    kind: str
    fd: int | None
    rtt_ms: float | None
    recv_q: int
    send_q: int
    idle_ms: int | None
    """Milliseconds since data last moved either way, from tcp_info."""
    thread: str | None


@dataclass(frozen=True, slots=True)
class SocketRef:
    fd: int
    peer: str
    kind: str
    syscall: str


@dataclass(frozen=True, slots=True)
class ConnectionsView:
    listen: tuple[ListenView, ...]
    by_state: tuple[tuple[str, int], ...]
    fds: int | None
    fd_limit: int | None
    top: tuple[ConnectionView, ...] = ()
    total: int = 0
    keepalive_idle: int | None = None
    by_phase: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CostView:
    cpu_share: float | None
    """Collector + py-spy CPU over the window, as a fraction of one core."""
    rss_bytes: int | None
    errors: int
    rate_scale: float = 1.0
    """Below 1 when the probes were shedding load (the machine was saturated) at the end."""
    machine_idle: float | None = None
    target_cpu_wait: float | None = None
    lean: bool = False
    """`--lean`: rates lowered by choice for a thin link."""


@dataclass(frozen=True, slots=True)
class StallView:
    start_s: float
    """Seconds from the start of the window."""
    duration_ms: float
    frame: str | None
    gil_held: bool | None
    ongoing: bool = False
    cut_start: bool = False
    """Began before the window's first stack sample: at least this long."""


@dataclass(frozen=True, slots=True)
class LoopView:
    tid: int
    busy_share: float | None
    stalls: tuple[StallView, ...]
    running: str | None
    executors: tuple[int, ...]
    tasks: task_analysis.TasksSummary | None = None
    task_source: str | None = None
    """"memory" (every task, read from the target), "stacks" (the running one only) or None."""
    pid: int | None = None
    """The process running this loop (a pre-fork server has one per worker)."""
    busiest: str | None = None
    """The callback with the most sampled time in the window (`running`: the latest sample)."""


STATE_CHARS = {
    "python": "█",
    "native": "▆",
    "gil-wait": "▒",
    "io": "▁",
    "lock": "▂",
    "sleep": " ",
    "other": "·",
    "running": "█",
}


@dataclass(frozen=True, slots=True)
class InFlightView:
    layer: str
    since_ms: float | None
    evidence: str
    thread: str | None
    task: str | None
    conn: str | None
    tid: int | None = None
    pid: int | None = None
    """The process serving it: the attached one, or a pre-fork master's worker."""


@dataclass(frozen=True, slots=True)
class LayersView:
    shares: tuple[tuple[str, float], ...]
    now: tuple[tuple[str, int], ...]
    in_flight: tuple[InFlightView, ...]
    measured: str


@dataclass(frozen=True, slots=True)
class Report:
    pid: int | None
    python: str | None
    command: str | None
    window_s: float
    end: float
    uptime_s: float | None
    probes: tuple[ProbeView, ...]
    threads: tuple[ThreadView, ...]
    gil: GilView
    connections: ConnectionsView
    cost: CostView
    gone: str | None
    loops: tuple[LoopView, ...] = ()
    model: str | None = None
    layers: LayersView | None = None
    workers: tuple[int, ...] = ()
    packets: packet_analysis.PacketsView | None = None
    processes: tuple[ProcessView, ...] = ()
    """A pre-fork server's master and workers, when the target has Python children."""


READING_S = 5.0
"""How long a young window without a stack counts as still reading: py-spy's first one-second
window arrives 1-2 s after attach (later on a busy machine). A collector started without the
stacks probe (`--probes`) shows a model from `/proc` alone after this."""


def reading(report: Report) -> bool:
    """The roles of threads (event loop, executors) and so the concurrency model cannot be
    known yet: the window is young and no stack is in it, while the stacks probe has not said
    it cannot run. Until then "threads · no asyncio loop seen" would be a guess."""
    stacks = next((p for p in report.probes if p.name == "stacks"), None)
    if stacks is not None and (stacks.samples > 0 or stacks.status not in HEALTHY):
        return False
    return report.window_s < READING_S
