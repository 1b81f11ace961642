"""From a window of samples to the numbers every pane and `snapshot` show.

One function, `build`, so the UI and the headless report can never disagree. Every share is
a fraction of the window in 0..1; anything the samples cannot support is None (null in JSON),
never a guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lifescope import syscalls
from lifescope.analysis import concurrency, gil
from lifescope.analysis.frames import innermost_app, label
from lifescope.samples import Socket, SocketsSample
from lifescope.timeline import Window

SNAPSHOT_SCHEMA = "lifescope.snapshot/1"
PROBE_ORDER = ("gil", "threads", "stacks", "dump", "sockets")

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


@dataclass(frozen=True, slots=True)
class ListenView:
    local: str
    accept_queue: int
    backlog: int


@dataclass(frozen=True, slots=True)
class ConnectionsView:
    listen: tuple[ListenView, ...]
    by_state: tuple[tuple[str, int], ...]
    fds: int | None
    fd_limit: int | None
    sockets: tuple[Socket, ...]


@dataclass(frozen=True, slots=True)
class CostView:
    cpu_share: float | None
    """Collector + py-spy CPU over the window, as a fraction of one core."""
    rss_bytes: int | None
    errors: int


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


SERIES_STEP_S = 0.5
STRIP_SAMPLES = 24
STATE_CHARS = {"python": "█", "native": "▆", "gil-wait": "▒", "io": "▁", "lock": "▂",
               "sleep": " ", "other": "·", "running": "█"}  # fmt: skip


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
) -> tuple[ThreadView, ...]:
    clock = window.hello.clock_ticks if window.hello else 100
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
        has_gil_data = gil_stats is not None or bool(window.dumps)
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


def _gil_view(window: Window, stats: gil.GilStats | None, history: gil.Holds | None) -> GilView:
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


def _connections_view(window: Window) -> ConnectionsView:
    latest: SocketsSample | None = window.sockets[-1] if window.sockets else None
    if latest is None:
        return ConnectionsView((), (), None, None, ())
    listen = tuple(
        ListenView(s.local, s.recv_q, s.send_q) for s in latest.sockets if s.state == "LISTEN"
    )
    by_state = Counter(s.state for s in latest.sockets)
    return ConnectionsView(
        listen=listen,
        by_state=tuple(sorted(by_state.items())),
        fds=latest.fds,
        fd_limit=latest.fd_limit,
        sockets=latest.sockets,
    )


def _cost_view(window: Window) -> CostView:
    costs = window.costs
    if not costs:
        return CostView(None, None, 0)
    cpu = None
    if len(costs) >= 2 and costs[-1].t > costs[0].t:
        cpu = _round((costs[-1].cpu_s - costs[0].cpu_s) / (costs[-1].t - costs[0].t))
    errors = sum(n for _, n in costs[-1].errors) - sum(n for _, n in costs[0].errors)
    return CostView(cpu, costs[-1].rss_bytes, errors)


def build(window: Window) -> Report:
    hello = window.hello
    uptime = None
    if hello is not None and window.end:
        uptime = _target_uptime(hello.start_ticks, hello.clock_ticks, hello, window.end)
    history = None
    stats = None
    if window.gil_info is not None and window.gil_runs:
        history = gil.holds(window.gil_runs, window.start, window.end)
        stats = gil.stats(history, window.gil_info, window.threads)
    conc = concurrency.analyse(window.threads, window.stacks, history, window.gil_info)
    threads = _thread_views(window, conc, stats, history)
    loops = tuple(
        LoopView(
            tid=loop.tid,
            busy_share=loop.busy_share,
            stalls=tuple(
                StallView(round(st.start - window.start, 3), round(st.duration_s * 1000, 1),
                          st.frame, st.gil_held, st.ongoing)
                for st in loop.stalls
            ),
            running=loop.running,
            executors=loop.executors,
        )
        for loop in conc.loops
    )  # fmt: skip
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
        connections=_connections_view(window),
        cost=_cost_view(window),
        gone=window.gone.reason if window.gone else None,
        loops=loops,
        model=conc.model,
    )


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
            "processes": [{"pid": report.pid, "role": "main"}] if report.pid else [],
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
        },
        "event_loops": [
            {
                "tid": loop.tid,
                "busy_share": loop.busy_share,
                "running": loop.running,
                "executors": list(loop.executors),
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
        "connections": {
            "listen": [
                {"local": lv.local, "accept_queue": lv.accept_queue, "backlog": lv.backlog}
                for lv in conn.listen
            ],
            "by_state": dict(conn.by_state),
            "fds": conn.fds,
            "fd_limit": conn.fd_limit,
        },
        "lifescope": {
            "cpu_share": report.cost.cpu_share,
            "rss_bytes": report.cost.rss_bytes,
            "errors": report.cost.errors,
        },
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def to_text(report: Report) -> str:
    """The same report for a terminal or a log: plain lines, no colour."""
    lines = [
        f"pid {report.pid}  Python {report.python}  {report.command}",
        f"window {report.window_s:.1f}s  lifescope cpu {_pct(report.cost.cpu_share)} of a core"
        + (f"  TARGET GONE: {report.gone}" if report.gone else ""),
        "",
        "probes:",
    ]
    for p in report.probes:
        why = f"  ({p.reason}; {p.remedy})" if p.reason else ""
        lines.append(f"  {p.name:<8} {p.status:<11} {p.rate_hz:7.1f}/s{why}")
    lines += [
        "",
        f"GIL held {_pct(report.gil.held_share)} (source {report.gil.source}, "
        f"{report.gil.samples} samples)",
        "",
        "threads:",
    ]
    lines.append(
        f"  {'tid':>7} {'name':<16} {'state':<10} {'syscall':<14} {'cpu':>5} "
        f"{'active':>6} {'gil':>5}  frame"
    )
    for t in report.threads:
        lines.append(
            f"  {t.tid:>7} {t.name[:16]:<16} {t.state[:10]:<10} {(t.syscall or '—')[:14]:<14} "
            f"{_pct(t.cpu_share):>5} {_pct(t.active_share):>6} {_pct(t.gil_share):>5}  "
            f"{t.top_frame or '—'}"
        )
    conn = report.connections
    lines += ["", f"fds {conn.fds} of {conn.fd_limit}", "listening:"]
    for lv in conn.listen:
        lines.append(f"  {lv.local:<24} accept queue {lv.accept_queue}/{lv.backlog}")
    states = ", ".join(f"{state} {n}" for state, n in conn.by_state) or "none"
    lines.append(f"connections: {states}")
    return "\n".join(lines)
