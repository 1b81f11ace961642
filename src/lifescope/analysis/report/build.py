"""From a window of samples to a `Report`.

One function, `build`, so the UI and the headless report can never disagree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from functools import lru_cache

from lifescope import rules as layer_rules
from lifescope import syscalls
from lifescope.analysis import concurrency, connections, gil, layers, lifetimes
from lifescope.analysis import packets as packet_analysis
from lifescope.analysis import tasks as task_analysis
from lifescope.analysis.frames import innermost_app, label
from lifescope.analysis.processes import processes_view
from lifescope.analysis.report.views import (
    STATE_CHARS,
    ConnectionsView,
    ConnectionView,
    CostView,
    GilView,
    InFlightView,
    LayersView,
    LoopView,
    ProbeView,
    Report,
    SocketRef,
    StallView,
    ThreadView,
)
from lifescope.samples import (
    KINDS,
    NO_GIL,
    PROBES,
    Frame,
    SampleKind,
    Socket,
    SocketsSample,
    ThreadStat,
)
from lifescope.timeline import Window

PROBE_ORDER = PROBES

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


SERIES_STEP_S = 0.5
STRIP_SAMPLES = 24


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[layer_rules.Rule, ...]:
    return layer_rules.load()[0]


def _ratio(part: float, whole: float) -> float | None:
    if whole <= 0:
        return None
    return max(0.0, min(1.0, part / whole))


def _probe_views(window: Window) -> tuple[ProbeView, ...]:
    statuses = {s.probe: s for s in window.statuses}
    seconds = window.seconds
    counts = {kind.probe: _observations(window, kind) for kind in KINDS if kind.probe}
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


def _observations(window: Window, kind: SampleKind) -> int:
    samples = getattr(window, kind.field)
    if kind.observations is None:
        return len(samples)
    return sum(getattr(sample, kind.observations) for sample in samples)


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
    last: dict[int, tuple[float, ThreadStat]] = {}
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
            cpu = _ratio((thread.cpu_ticks - ticks_first) / clock, t_last - t_first)
        state = conc.current_state.get(tid) or _STATE_WORDS.get(thread.state, thread.state)
        has_gil_data = (gil_stats is not None or bool(window.dumps)) and not no_gil
        gil_share = gil_shares.get(tid, 0.0) if has_gil_data else None
        views.append(
            ThreadView(
                tid=tid,
                name=names.get(tid) or thread.name,
                state=state,
                syscall=syscalls.name(thread.syscall),
                cpu_share=None if cpu is None else round(cpu, 4),
                active_share=_round(_ratio(runnable[tid], seen[tid])),
                gil_share=_round(gil_share),
                top_frame=top.get(tid),
                role=conc.roles.get(tid, "other"),
                waiting_gil_share=waiting.get(tid) if gil_stats is not None else None,
                state_shares=tuple(conc.state_shares.get(tid, {}).items()),
                strip=strips.get(tid, ""),
                socket=_socket_ref(tid, conn_stats),
                pid=thread.pid or target,
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
        listen=stats.listeners,
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
    joined = lifetimes.listing_at(window.threads, window.sockets[-1].t) if window.sockets else None
    conn_stats = connections.analyse(window.sockets, joined or latest_threads)
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
                    st.cut_start,
                )
                for st in loop.stalls
            ),
            running=loop.running,
            busiest=loop.busiest,
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


def _target_uptime(start_ticks: int, clock: int, hello: object, end: float) -> float | None:
    """Target's age at `end`: boot-relative start ticks against the collector's clock.

    `time.monotonic()` on Linux is CLOCK_MONOTONIC, which counts from boot like the start
    time in /proc/PID/stat, so no wall clock is involved.
    """
    return round(max(0.0, end - start_ticks / clock), 1)
