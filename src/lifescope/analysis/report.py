"""From a window of samples to the numbers every pane and `snapshot` show.

One function, `build`, so the UI and the headless report can never disagree. Every share is
a fraction of the window in 0..1; anything the samples cannot support is None (null in JSON),
never a guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache

from lifescope import rules as layer_rules
from lifescope import syscalls
from lifescope.analysis import concurrency, connections, gil, layers, lifetimes
from lifescope.analysis import packets as packet_analysis
from lifescope.analysis import tasks as task_analysis
from lifescope.analysis.frames import innermost_app, label
from lifescope.analysis.processes import ProcessView, processes_view
from lifescope.samples import HEALTHY, NO_GIL, Frame, Socket, SocketsSample
from lifescope.timeline import Window

SNAPSHOT_SCHEMA = "lifescope.snapshot/1"
PROBE_ORDER = ("gil", "threads", "stacks", "dump", "sockets", "packets", "tasks", "workers")

_STATE_WORDS = {
    "R": "running",
    "S": "sleeping",
    "D": "disk wait",
    "T": "stopped",
    "t": "traced",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
}


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


@dataclass(frozen=True, slots=True)
class ListenView:
    local: str
    accept_queue: int
    backlog: int
    half_open: int = 0
    overflows: int | None = None
    overflows_scope: str = "listener"
    """"listener": this listener's own drops; "namespace": ListenOverflows of the whole
    network namespace (when the kernel's per-socket count is unavailable)."""


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


TOP_CONNECTIONS = 50
_PHASE_ORDER = {
    "accept-queue": 0,
    "handshake": 1,
    "request": 2,
    "response": 3,
    "connecting": 4,
    "open": 5,
    "idle": 6,
    "closing": 7,
}


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


SERIES_STEP_S = 0.5
STRIP_SAMPLES = 24
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


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[layer_rules.Rule, ...]:
    return layer_rules.load()[0]


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


def _ratio(part: float, whole: float) -> float | None:
    if whole <= 0:
        return None
    return max(0.0, min(1.0, part / whole))


def _probe_views(window: Window) -> tuple[ProbeView, ...]:
    statuses = {s.probe: s for s in window.statuses}
    seconds = window.seconds
    counts = {
        "gil": sum(r.reads for r in window.gil_runs),
        "threads": len(window.threads),
        "dump": len(window.dumps),
        "sockets": len(window.sockets),
        "packets": sum(p.captured for p in window.packets),
        "tasks": len(window.tasks),
        "workers": len(window.processes),
        "stacks": sum(w.samples for w in window.stacks),
    }
    views = []
    for name in (*PROBE_ORDER, *sorted(set(statuses) - set(PROBE_ORDER))):
        status = statuses.get(name)
        if status is None and not counts.get(name):
            continue
        if name == "stacks":
            # py-spy counts traces over all threads; with --idle every thread is in every
            # tick, so ticks/s = traces / threads / seconds covered.
            ticks = sum(w.samples / max(1, len(w.thread_names)) for w in window.stacks)
            covered = sum(w.t - w.start for w in window.stacks)
            rate = ticks / covered if covered > 0 else 0.0
        elif name == "gil":
            covered = sum(r.t - r.start for r in window.gil_runs)
            rate = counts["gil"] / covered if covered > 0 else 0.0
        else:
            rate = counts.get(name, 0) / seconds if seconds > 0 else 0.0
        views.append(
            ProbeView(
                name=name,
                status=status.status if status else "ok",
                reason=status.reason if status else None,
                remedy=status.remedy if status else None,
                samples=counts.get(name, 0),
                rate_hz=round(rate, 2),
            )
        )
    return tuple(views)


def _thread_views(
    window: Window,
    conc: concurrency.Concurrency,
    gil_stats: gil.GilStats | None,
    history: gil.Holds | None,
    conn_stats: connections.ConnectionsStats | None = None,
) -> tuple[ThreadView, ...]:
    clock = window.hello.clock_ticks if window.hello else 100
    target = window.hello.pid if window.hello else None
    first: dict[int, tuple[float, int]] = {}
    last: dict[int, tuple[float, object]] = {}
    for sample in window.threads:
        for thread in sample.threads:
            first.setdefault(thread.tid, (sample.t, thread.cpu_ticks))
            last[thread.tid] = (sample.t, thread)
    latest_tids = {t.tid for t in window.threads[-1].threads} if window.threads else set()

    names: dict[int, str] = {}
    for dump in window.dumps:
        names.update(dump.threads)
    for stacks in window.stacks:
        names.update(stacks.thread_names)

    runnable: Counter[int] = Counter()
    seen: Counter[int] = Counter()
    for sample in window.threads:
        for thread in sample.threads:
            seen[thread.tid] += 1
            if thread.state == "R":
                runnable[thread.tid] += 1
    no_gil = no_gil_reason(window) is not None
    if gil_stats is not None:
        gil_shares: dict[int, float | None] = dict(gil_stats.by_thread)
        waiting: dict[int, float] = dict(gil_stats.waiting_share)
    else:
        owned: Counter[int] = Counter()
        for dump in window.dumps:
            owned.update(set(dump.owners))
        gil_shares = {tid: _ratio(n, len(window.dumps)) for tid, n in owned.items()}
        waiting = {}
    strips = _strips(window, history)

    top: dict[int, str] = {}
    for dump in window.dumps:
        top.update(dump.top_frames)
    latest_span_top = _latest_span_frames(window)
    top.update(latest_span_top)

    tids = latest_tids or set(last)
    views = []
    for tid in tids:
        t_last, thread = last[tid]
        t_first, ticks_first = first[tid]
        cpu = None
        if t_last > t_first:
            cpu = _ratio((thread.cpu_ticks - ticks_first) / clock, t_last - t_first)  # type: ignore[attr-defined]
        state = conc.current_state.get(tid) or _STATE_WORDS.get(thread.state, thread.state)  # type: ignore[attr-defined]
        has_gil_data = (gil_stats is not None or bool(window.dumps)) and not no_gil
        gil_share = gil_shares.get(tid, 0.0) if has_gil_data else None
        views.append(
            ThreadView(
                tid=tid,
                name=names.get(tid) or thread.name,  # type: ignore[attr-defined]
                state=state,
                syscall=syscalls.name(thread.syscall),  # type: ignore[attr-defined]
                cpu_share=None if cpu is None else round(cpu, 4),
                active_share=_round(_ratio(runnable[tid], seen[tid])),
                gil_share=_round(gil_share),
                top_frame=top.get(tid),
                role=conc.roles.get(tid, "other"),
                waiting_gil_share=waiting.get(tid) if gil_stats is not None else None,
                state_shares=tuple(conc.state_shares.get(tid, {}).items()),
                strip=strips.get(tid, ""),
                socket=_socket_ref(tid, conn_stats),
                pid=thread.pid or target,  # type: ignore[attr-defined]
            )
        )
    views.sort(key=lambda v: (-(v.cpu_share or 0.0), v.tid))
    return tuple(views)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _latest_span_frames(window: Window) -> dict[int, str]:
    result: dict[int, tuple[float, str]] = {}
    for stacks in window.stacks:
        for span in stacks.spans:
            frame = innermost_app([stacks.frames[i] for i in span.stack])
            if frame is None:
                continue
            seen = result.get(span.tid)
            if seen is None or span.end >= seen[0]:
                result[span.tid] = (span.end, label(frame))
    return {tid: text for tid, (_, text) in result.items()}


def _socket_ref(tid: int, stats: connections.ConnectionsStats | None) -> SocketRef | None:
    if stats is None or tid not in stats.threads:
        return None
    sock, syscall = stats.threads[tid]
    ports = {connections.port(lv.local) for lv in stats.listeners}
    if sock.state == "LISTEN":
        kind = "listen"
    else:
        kind = "client" if connections.port(sock.local) in ports else "outbound"
    return SocketRef(sock.fd or 0, sock.peer, kind, syscall)


def _strips(window: Window, history: gil.Holds | None) -> dict[int, str]:
    """Each thread's last STRIP_SAMPLES states, evenly spread over the window's samples."""
    samples = window.threads
    if not samples:
        return {}
    step = max(1, len(samples) // STRIP_SAMPLES)
    picked = samples[::-1][::step][:STRIP_SAMPLES][::-1]
    strips: dict[int, list[str]] = {}
    for sample in picked:
        holder = history.holder_at(sample.t) if history is not None else None
        for thread in sample.threads:
            state = concurrency.classify(thread, holder, window.gil_info)
            strips.setdefault(thread.tid, []).append(STATE_CHARS.get(state, "?"))
    return {tid: "".join(chars) for tid, chars in strips.items()}


def no_gil_reason(window: Window) -> str | None:
    """Why the target has no GIL, when its GIL probe said so (see ``samples.NO_GIL``)."""
    status = next((s for s in reversed(window.statuses) if s.probe == "gil"), None)
    if status is not None and (status.reason or "").startswith(NO_GIL):
        return status.reason
    return None


def _gil_view(window: Window, stats: gil.GilStats | None, history: gil.Holds | None) -> GilView:
    no_gil = no_gil_reason(window)
    if no_gil is not None:
        # Nothing to hold: py-spy's owns_gil would be made up. What stands in its place is how
        # many threads can run Python at once, and each thread's CPU (the threads pane).
        counts = [sum(t.state == "R" for t in s.threads) for s in window.threads]
        return GilView(
            held_share=None,
            source="none",
            samples=0,
            no_gil=no_gil,
            runnable_mean=_round(sum(counts) / len(counts)) if counts else None,
            runnable_max=max(counts) if counts else None,
        )
    if stats is not None and history is not None:
        return GilView(
            held_share=stats.held_share,
            source="memory",
            samples=history.reads,
            switches_per_s=stats.switches_per_s,
            hold_ms=tuple(stats.hold_ms.items()),
            waiters_mean=stats.waiters_mean,
            histogram=stats.hold_histogram,
            resolution_ms=stats.resolution_ms,
            held_series=_held_series(history, window.start, window.end),
        )
    dumps = window.dumps
    held = sum(1 for d in dumps if d.owners)
    return GilView(held_share=_round(_ratio(held, len(dumps))), source="pyspy", samples=len(dumps))


def _held_series(history: gil.Holds, start: float, end: float) -> tuple[float, ...]:
    buckets = max(1, int((end - start) / SERIES_STEP_S))
    held = [0.0] * buckets
    for run_start, run_end, holder in history.runs:
        if holder == 0:
            continue
        first = max(0, int((run_start - start) / SERIES_STEP_S))
        last = min(buckets - 1, int((run_end - start) / SERIES_STEP_S))
        for b in range(first, last + 1):
            lo = max(run_start, start + b * SERIES_STEP_S)
            hi = min(run_end, start + (b + 1) * SERIES_STEP_S)
            if hi > lo:
                held[b] += hi - lo
    return tuple(round(min(1.0, h / SERIES_STEP_S), 3) for h in held)


def _connections_view(
    stats: connections.ConnectionsStats | None, latest: SocketsSample | None, names: dict[int, str]
) -> ConnectionsView:
    if stats is None or latest is None:
        return ConnectionsView((), (), None, None)
    listen = tuple(
        ListenView(
            lv.local, lv.accept_queue, lv.backlog, lv.half_open, lv.overflows, lv.overflows_scope
        )
        for lv in stats.listeners
    )
    ranked = sorted(
        stats.connections,
        key=lambda c: (
            _PHASE_ORDER.get(c.phase, 9),
            -(c.socket.recv_q + c.socket.send_q),
            c.socket.last_data_recv_ms or 0,
        ),
    )
    top = tuple(
        ConnectionView(
            local=c.socket.local,
            peer=c.socket.peer,
            state=c.socket.state,
            phase=c.phase,
            kind=c.kind,
            fd=c.socket.fd,
            rtt_ms=None if c.socket.rtt_us is None else round(c.socket.rtt_us / 1000, 3),
            recv_q=c.socket.recv_q,
            send_q=c.socket.send_q,
            idle_ms=_idle_ms(c.socket),
            thread=None if c.thread is None else names.get(c.thread, str(c.thread)),
        )
        for c in ranked[:TOP_CONNECTIONS]
    )
    return ConnectionsView(
        listen=listen,
        by_state=stats.by_state,
        fds=latest.fds,
        fd_limit=latest.fd_limit,
        top=top,
        total=len(stats.connections),
        keepalive_idle=stats.keepalive_idle,
        by_phase=stats.by_phase,
    )


def _idle_ms(sock: Socket) -> int | None:
    if sock.last_data_recv_ms is None or sock.last_data_sent_ms is None:
        return None
    return min(sock.last_data_recv_ms, sock.last_data_sent_ms)


def thread_stack(window: Window, tid: int) -> tuple[Frame, ...]:
    """The thread's most recent sampled stack, innermost first (for the drill-down)."""
    for stacks in reversed(window.stacks):
        spans = [span for span in stacks.spans if span.tid == tid]
        if spans:
            return tuple(stacks.frames[i] for i in spans[-1].stack)
    return ()


def _packets_view(window: Window) -> packet_analysis.PacketsView | None:
    status = next((s for s in window.statuses if s.probe == "packets"), None)
    if not window.packets and status is None:
        return None
    return packet_analysis.packets_view(window.packets, status=status.status if status else "ok")


def _cost_view(window: Window) -> CostView:
    costs = window.costs
    if not costs:
        return CostView(None, None, 0)
    cpu = None
    if len(costs) >= 2 and costs[-1].t > costs[0].t:
        cpu = _round((costs[-1].cpu_s - costs[0].cpu_s) / (costs[-1].t - costs[0].t))
    errors = sum(n for _, n in costs[-1].errors) - sum(n for _, n in costs[0].errors)
    last = costs[-1]
    return CostView(
        cpu,
        last.rss_bytes,
        errors,
        last.rate_scale,
        last.machine_idle,
        last.target_cpu_wait,
        last.lean,
    )


def build(window: Window, rules: tuple[layer_rules.Rule, ...] | None = None) -> Report:
    window = replace(window, stacks=lifetimes.clip(window.stacks, window.threads))
    hello = window.hello
    uptime = None
    if hello is not None and window.end:
        uptime = _target_uptime(hello.start_ticks, hello.clock_ticks, hello, window.end)
    history = None
    stats = None
    if window.gil_info is not None and window.gil_runs:
        history = gil.holds(window.gil_runs, window.start, window.end)
        stats = gil.stats(history, window.gil_info, window.threads)
    conc = concurrency.analyse(
        window.threads,
        window.stacks,
        history,
        window.gil_info,
        boundaries=concurrency.response_instants(window.sockets, window.packets),
    )
    latest_threads = window.threads[-1] if window.threads else None
    conn_stats = connections.analyse(window.sockets, latest_threads)
    threads = _thread_views(window, conc, stats, history, conn_stats)
    names = {t.tid: t.name for t in threads}
    layer_stats = layers.analyse(
        window.stacks,
        window.sockets,
        conn_stats,
        window.tasks,
        rules if rules is not None else builtin_rules(),
        window.start,
        window.end,
        window.threads,
    )
    tasks_summary = task_analysis.summarize(window.tasks)
    pids = {t.tid: t.pid for t in threads if t.pid is not None}
    loops = tuple(
        LoopView(
            tid=loop.tid,
            busy_share=loop.busy_share,
            stalls=tuple(
                StallView(
                    round(st.start - window.start, 3),
                    round(st.duration_s * 1000, 1),
                    st.frame,
                    st.gil_held,
                    st.ongoing,
                )
                for st in loop.stalls
            ),
            running=loop.running,
            executors=loop.executors,
            tasks=tasks_summary,
            task_source=task_analysis.task_source((*window.tasks, *window.stacks)),
            pid=pids.get(loop.tid) or (hello.pid if hello else None),
        )
        for loop in conc.loops
    )
    return Report(
        pid=hello.pid if hello else None,
        python=hello.python if hello else None,
        command=hello.command if hello else None,
        window_s=round(window.seconds, 3),
        end=window.end,
        uptime_s=uptime,
        probes=_probe_views(window),
        threads=threads,
        gil=_gil_view(window, stats, history),
        connections=_connections_view(
            conn_stats, window.sockets[-1] if window.sockets else None, names
        ),
        cost=_cost_view(window),
        gone=window.gone.reason if window.gone else None,
        loops=loops,
        model=conc.model,
        packets=_packets_view(window),
        workers=hello.workers if hello else (),
        processes=processes_view(window.processes, hello.clock_ticks if hello else 100),
        layers=LayersView(
            shares=tuple(layer_stats.shares.items()),
            now=tuple(sorted(layer_stats.now.items())),
            in_flight=tuple(
                InFlightView(
                    f.layer,
                    None if f.since_s is None else round(f.since_s * 1000, 1),
                    f.evidence,
                    None if f.thread is None else names.get(f.thread, str(f.thread)),
                    f.task,
                    f.conn,
                    f.thread,
                    f.pid or (hello.pid if hello else None),
                )
                for f in layer_stats.in_flight
            ),
            measured=layer_stats.measured,
        ),
    )


def _single_process(report: Report) -> list[dict[str, object]]:
    """`target.processes` when the workers probe stands by (a single process): every entry
    has every field, as a pre-fork server's do. Threads, fds and established connections are
    counted by the other probes; CPU, memory and busy connections of the process are not
    measured then, so they are null (a sum of the live threads' CPU would miss exited ones)."""
    if not report.pid:
        return []
    empty = dict.fromkeys(("cpu_share", "rss_bytes", "threads", "fds", "connections", "busy"))
    main = {"pid": report.pid, "role": "main", **empty}
    if report.threads:
        main["threads"] = len(report.threads)
    main["fds"] = report.connections.fds
    if report.connections.by_state:
        main["connections"] = dict(report.connections.by_state).get("ESTABLISHED", 0)
    workers = [{"pid": pid, "role": "worker", **empty} for pid in report.workers]
    return [main, *workers]


def _target_uptime(start_ticks: int, clock: int, hello: object, end: float) -> float | None:
    """Target's age at `end`: boot-relative start ticks against the collector's clock.

    `time.monotonic()` on Linux is CLOCK_MONOTONIC, which counts from boot like the start
    time in /proc/PID/stat, so no wall clock is involved.
    """
    return round(max(0.0, end - start_ticks / clock), 1)


def to_json(report: Report) -> dict[str, object]:
    """The `lifescope.snapshot/1` document. Fields are added over time, never renamed."""
    conn = report.connections
    return {
        "schema": SNAPSHOT_SCHEMA,
        "target": {
            "pid": report.pid,
            "python": report.python,
            "command": report.command,
            "processes": [p.as_dict() for p in report.processes] or _single_process(report),
            "gone": report.gone,
        },
        "window_s": report.window_s,
        "probes": {
            p.name: {
                "status": p.status,
                "reason": p.reason,
                "remedy": p.remedy,
                "samples": p.samples,
                "rate_hz": p.rate_hz,
            }
            for p in report.probes
        },
        "threads": [
            {
                "tid": t.tid,
                "name": t.name,
                "state": t.state,
                "syscall": t.syscall,
                "cpu_share": t.cpu_share,
                "active_share": t.active_share,
                "gil_share": t.gil_share,
                "top_frame": t.top_frame,
                "role": t.role,
                "waiting_gil_share": t.waiting_gil_share,
                "state_shares": dict(t.state_shares),
                "socket": None
                if t.socket is None
                else {"fd": t.socket.fd, "peer": t.socket.peer, "kind": t.socket.kind},
                "pid": t.pid,
            }
            for t in report.threads
        ],
        "gil": {
            "held_share": report.gil.held_share,
            "source": report.gil.source,
            "samples": report.gil.samples,
            "switches_per_s": report.gil.switches_per_s,
            "hold_ms": dict(report.gil.hold_ms) or None,
            "waiters_mean": report.gil.waiters_mean,
            "resolution_ms": report.gil.resolution_ms,
            "no_gil": report.gil.no_gil,
            "runnable_mean": report.gil.runnable_mean,
            "runnable_max": report.gil.runnable_max,
        },
        "event_loops": [
            {
                "tid": loop.tid,
                "pid": loop.pid,
                "busy_share": loop.busy_share,
                "running": loop.running,
                "executors": list(loop.executors),
                "tasks": loop.tasks.to_json() if loop.tasks else None,
                "task_source": loop.task_source,
                "stalls": [
                    {
                        "start_s": stall.start_s,
                        "duration_ms": stall.duration_ms,
                        "frame": stall.frame,
                        "gil_held": stall.gil_held,
                        "ongoing": stall.ongoing,
                    }
                    for stall in loop.stalls
                ],
            }
            for loop in report.loops
        ],
        "model": report.model,
        "layers": dict(report.layers.shares) if report.layers else None,
        "packets": report.packets.summary.as_dict() if report.packets else None,
        "in_flight": [
            {
                "layer": f.layer,
                "since_ms": f.since_ms,
                "evidence": f.evidence,
                "thread": f.thread,
                "conn": f.conn,
                "task": f.task,
                "pid": f.pid,
            }
            for f in (report.layers.in_flight if report.layers else ())
        ],
        "connections": {
            "listen": [
                {
                    "local": lv.local,
                    "accept_queue": lv.accept_queue,
                    "backlog": lv.backlog,
                    "half_open": lv.half_open,
                    "overflows": lv.overflows,
                    "overflows_scope": lv.overflows_scope,
                }
                for lv in conn.listen
            ],
            "by_state": dict(conn.by_state),
            "keepalive_idle": conn.keepalive_idle,
            "top": [
                {
                    "local": c.local,
                    "peer": c.peer,
                    "state": c.state,
                    "phase": c.phase,
                    "rtt_ms": c.rtt_ms,
                    "recv_q": c.recv_q,
                    "send_q": c.send_q,
                    "thread": c.thread,
                }
                for c in conn.top
            ],
            "fds": conn.fds,
            "fd_limit": conn.fd_limit,
        },
        "lifescope": {
            "cpu_share": report.cost.cpu_share,
            "rss_bytes": report.cost.rss_bytes,
            "errors": report.cost.errors,
            "rate_scale": report.cost.rate_scale,
            "machine_idle": report.cost.machine_idle,
            "target_cpu_wait": report.cost.target_cpu_wait,
        },
    }


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


def shedding_note(cost: CostView, short: bool = False) -> str:
    """What the header says while the probes shed load; the same words in text and UI.
    `short`: for a narrow header, which must still say it (the rates are lowered)."""
    if short:
        why = "lean mode" if cost.lean else "machine saturated"
        return f"sampling at ×{cost.rate_scale:g} ({why})"
    if cost.lean:
        return f"lean mode (thin link): sampling at ×{cost.rate_scale:g}"
    facts = []
    if cost.machine_idle is not None:
        facts.append(f"{_pct(cost.machine_idle)} idle")
    if cost.target_cpu_wait is not None:
        facts.append(f"target waits for CPU {_pct(cost.target_cpu_wait)}")
    why = f" ({', '.join(facts)})" if facts else ""
    return (
        f"machine saturated{why}: sampling at ×{cost.rate_scale:g} to spare the target"
        " (--full-rate overrides)"
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


TEXT_STALLS = 5
"""Stalls listed per loop in the text report (the latest); the count says how many there were."""
TEXT_IN_FLIGHT = 10
"""In-flight requests listed in the text report; the JSON has them all."""


def to_text(report: Report) -> str:
    """The same report for a terminal or a log: plain lines, no colour."""
    lines = [
        f"pid {report.pid}  Python {report.python}  {report.command}",
        f"window {report.window_s:.1f}s  lifescope cpu {_pct(report.cost.cpu_share)} of a core"
        + (f"  {shedding_note(report.cost)}" if report.cost.rate_scale < 1 else "")
        + (f"  TARGET GONE: {report.gone}" if report.gone else ""),
        "",
        "probes:",
    ]
    for p in report.probes:
        why = f"  ({'; '.join(filter(None, (p.reason, p.remedy)))})" if p.reason else ""
        lines.append(f"  {p.name:<8} {p.status:<11} {p.rate_hz:7.1f}/s{why}")
    gil_view = report.gil
    if gil_view.no_gil:
        lines += [
            "",
            f"{gil_view.no_gil}: {gil_view.runnable_mean} threads runnable at once on average "
            f"(max {gil_view.runnable_max})",
        ]
    else:
        lines += [
            "",
            f"GIL held {_pct(gil_view.held_share)} (source {gil_view.source}, "
            f"{gil_view.samples} samples)",
        ]
    if gil_view.switches_per_s is not None:
        hold = dict(gil_view.hold_ms)
        lines.append(
            f"  {gil_view.switches_per_s:.0f} switches/s, waiters {gil_view.waiters_mean}, hold ms "
            + " ".join(f"{k} {hold.get(k)}" for k in ("p50", "p90", "p99", "max"))
        )
    lines.append(f"model: {report.model or '—'}")
    for loop in report.loops:
        shown = loop.stalls[-TEXT_STALLS:]
        more = f" (the last {len(shown)}:)" if len(shown) < len(loop.stalls) else ""
        lines.append(
            f"event loop {loop.tid}: busy {_pct(loop.busy_share)}, "
            f"{len(loop.stalls)} stalls ≥100 ms{more}"
        )
        for stall in shown:
            gil_word = {True: "GIL held", False: "GIL free", None: "GIL ?"}[stall.gil_held]
            lines.append(
                f"  +{stall.start_s:.1f}s {stall.duration_ms:.0f} ms "
                f"{stall.frame or '?'} ({gil_word})"
            )
    if report.processes:
        lines += ["", "processes (pre-fork server):"]
        lines.append(
            f"  {'pid':>7} {'role':<7} {'cpu':>5} {'threads':>7} {'conns':>6} {'busy':>5} "
            f"{'fds':>6} {'rss MiB':>8}"
        )
        for p in report.processes:
            lines.append(
                f"  {p.pid:>7} {p.role:<7} {_pct(p.cpu_share):>5} {p.threads:>7} "
                f"{p.connections:>6} {p.busy:>5} {p.fds:>6} {p.rss_bytes / 2**20:>8.1f}"
            )
    lines += ["", "threads:"]
    # Columns as wide as their longest value: a fixed 14 cut clock_nanosleep to clock_nanoslee.
    name_w = max((len(t.name) for t in report.threads), default=4)
    state_w = max((len(t.state) for t in report.threads), default=5)
    call_w = max((len(t.syscall or "—") for t in report.threads), default=7)
    name_w, state_w, call_w = max(name_w, 4), max(state_w, 5), max(call_w, 7)
    lines.append(
        f"  {'tid':>7} {'name':<{name_w}} {'state':<{state_w}} {'syscall':<{call_w}} {'cpu':>5} "
        f"{'active':>6} {'gil':>5}  frame"
    )
    for t in report.threads:
        lines.append(
            f"  {t.tid:>7} {t.name:<{name_w}} {t.state:<{state_w}} {t.syscall or '—':<{call_w}} "
            f"{_pct(t.cpu_share):>5} {_pct(t.active_share):>6} {_pct(t.gil_share):>5}  "
            f"{t.top_frame or '—'}"
        )
    conn = report.connections
    lines += ["", f"fds {conn.fds} of {conn.fd_limit}", "listening:"]
    for lv in conn.listen:
        lines.append(f"  {lv.local:<24} accept queue {lv.accept_queue}/{lv.backlog}")
    states = ", ".join(f"{state} {n}" for state, n in conn.by_state) or "none"
    lines.append(f"connections: {states}")
    if report.layers is not None:
        shares = "  ".join(f"{layer} {_pct(share)}" for layer, share in report.layers.shares)
        lines += ["", f"layers (share of request time): {shares}"]
        flights = report.layers.in_flight
        if len(flights) > TEXT_IN_FLIGHT:
            lines.append(f"in flight: {len(flights)} (the first {TEXT_IN_FLIGHT}:)")
        elif flights:
            lines.append(f"in flight: {len(flights)}")
        for flight in flights[:TEXT_IN_FLIGHT]:
            lines.append(f"  {flight.layer:<7} {flight.evidence}")
    return "\n".join(lines)
