"""From a window of samples to the numbers every pane and `snapshot` show.

One function, `build`, so the UI and the headless report can never disagree. Every share is
a fraction of the window in 0..1; anything the samples cannot support is None (null in JSON),
never a guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lifescope import syscalls
from lifescope.analysis.frames import innermost_app, label
from lifescope.samples import Socket, SocketsSample
from lifescope.timeline import Window

SNAPSHOT_SCHEMA = "lifescope.snapshot/1"
PROBE_ORDER = ("threads", "stacks", "dump", "sockets")

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
    syscall: str | None
    cpu_share: float | None
    active_share: float | None
    gil_share: float | None
    top_frame: str | None


@dataclass(frozen=True, slots=True)
class GilView:
    held_share: float | None
    source: str
    samples: int


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


def _ratio(part: float, whole: float) -> float | None:
    if whole <= 0:
        return None
    return max(0.0, min(1.0, part / whole))


def _probe_views(window: Window) -> tuple[ProbeView, ...]:
    statuses = {s.probe: s for s in window.statuses}
    seconds = window.seconds
    counts = {
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


def _thread_views(window: Window) -> tuple[ThreadView, ...]:
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
    gil_owned: Counter[int] = Counter()
    for dump in window.dumps:
        gil_owned.update(set(dump.owners))

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
        state = _STATE_WORDS.get(thread.state, thread.state)  # type: ignore[attr-defined]
        views.append(
            ThreadView(
                tid=tid,
                name=names.get(tid) or thread.name,  # type: ignore[attr-defined]
                state=state,
                syscall=syscalls.name(thread.syscall),  # type: ignore[attr-defined]
                cpu_share=None if cpu is None else round(cpu, 4),
                active_share=_round(_ratio(runnable[tid], seen[tid])),
                gil_share=_round(_ratio(gil_owned[tid], len(window.dumps))),
                top_frame=top.get(tid),
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


def _gil_view(window: Window) -> GilView:
    dumps = window.dumps
    held = sum(1 for d in dumps if d.owners)
    return GilView(held_share=_round(_ratio(held, len(dumps))), source="pyspy", samples=len(dumps))


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
    return Report(
        pid=hello.pid if hello else None,
        python=hello.python if hello else None,
        command=hello.command if hello else None,
        window_s=round(window.seconds, 3),
        end=window.end,
        uptime_s=uptime,
        probes=_probe_views(window),
        threads=_thread_views(window),
        gil=_gil_view(window),
        connections=_connections_view(window),
        cost=_cost_view(window),
        gone=window.gone.reason if window.gone else None,
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
            }
            for t in report.threads
        ],
        "gil": {
            "held_share": report.gil.held_share,
            "source": report.gil.source,
            "samples": report.gil.samples,
        },
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
