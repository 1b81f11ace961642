"""The four panes. Each renders one `Report` and nothing else: no probes, no I/O.

A pane whose probe cannot run says so in its own body (reason and remedy) instead of
showing empty tables, so a user can tell "nothing is happening" from "lifescope can't see".
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Sparkline, Static

from lifescope.analysis.packets import PacketsView
from lifescope.analysis.report import ProbeView, Report, ThreadView
from lifescope.samples import HEALTHY
from lifescope.ui.tables import LiveTable, bar, ensure_columns, pct, sync_rows

MAX_ROWS = 50
"""Tables show the top rows only; the summary line counts the rest."""


def _problem(probe: ProbeView | None) -> Text | None:
    if probe is None or probe.status in HEALTHY:
        return None
    text = Text(f"{probe.name}: {probe.status}", style="bold red")
    if probe.reason:
        text.append(f" — {probe.reason}", style="red")
    if probe.remedy:
        text.append(f"\nfix: {probe.remedy}", style="yellow")
    return text


class Pane(Vertical):
    """A bordered pane with a one-line summary above a table."""

    COLUMNS: tuple[tuple[str, str, int | None], ...] = ()
    TITLE = ""
    PROBE = ""

    def compose(self) -> ComposeResult:
        yield Static("waiting for samples…", classes="summary")
        yield LiveTable(cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        self.border_title = self.TITLE
        ensure_columns(self.query_one(DataTable), self.COLUMNS)

    def show(self, report: Report) -> None:
        raise NotImplementedError

    def set_summary(self, text: Text | str) -> None:
        self.query_one(".summary", Static).update(text)

    def probe(self, report: Report, name: str) -> ProbeView | None:
        return next((p for p in report.probes if p.name == name), None)


def _thread_label(thread: ThreadView) -> str:
    return thread.name or str(thread.tid)


_PHASE_STYLE = {
    "accept-queue": "bold red",
    "handshake": "yellow",
    "request": "bold cyan",
    "response": "bold magenta",
    "idle": "dim",
    "closing": "dim",
}


def _packet_line(packets: PacketsView, probe: ProbeView | None) -> Text:
    if probe is not None and probe.status in ("denied", "unavailable"):
        return Text(f"packets: {probe.status} — {probe.remedy or probe.reason}", style="yellow")
    summary = packets.summary.as_dict()
    hs = summary.get("handshake_ms") or {}
    p50 = hs.get("p50")
    text = Text("packets: ", style="dim")
    text.append(f"handshake p50 {p50:.2f}ms" if p50 is not None else "no handshakes")
    text.append(f" · rst {summary['resets']}", style="bold red" if summary["resets"] else "")
    text.append(
        f" · syn-retrans {summary['retransmits']}",
        style="bold red" if summary["retransmits"] else "",
    )
    if summary["kernel_dropped"]:
        text.append(f" · dropped {summary['kernel_dropped']}", style="bold red")
    if packets.notable:
        last = packets.notable[-1]
        text.append(f"\n{last.kind}: {last.detail}", style="yellow")
    return text


SORTS = ("activity", "rtt", "queue", "peer")
FILTERS = ("all", "request", "response", "idle", "accept-queue", "handshake", "closing")


class ConnectionsPane(Pane):
    """Listeners, phases and the busiest connections; `o` changes the order, `f` the filter."""

    TITLE = "Connections"
    sort = "activity"
    phase_filter = "all"

    def cycle(self, what: str) -> str:
        """Next sort order or phase filter; rows are rebuilt once, in the new order."""
        if what == "sort":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        else:
            index = FILTERS.index(self.phase_filter)
            self.phase_filter = FILTERS[(index + 1) % len(FILTERS)]
        self.query_one(DataTable).clear()
        return f"connections: sort {self.sort}, showing {self.phase_filter}"

    COLUMNS = (
        ("peer", "peer", None),
        ("phase", "phase", None),
        ("q", "rq/sq", None),
        ("rtt", "rtt ms", None),
        ("thread", "thread", None),
    )

    def show(self, report: Report) -> None:
        conn = report.connections
        problem = _problem(self.probe(report, "sockets"))
        text = Text()
        for listener in conn.listen:
            full = listener.accept_queue > 0
            text.append(f"LISTEN {listener.local} ", style="bold")
            text.append(
                f"queue {listener.accept_queue}/{listener.backlog}",
                style="bold red" if full else "green",
            )
            if listener.half_open:
                text.append(f" syn {listener.half_open}", style="yellow")
            if listener.overflows:
                text.append(f" overflow +{listener.overflows}", style="bold red")
            text.append("\n")
        phases = " ".join(f"{phase} {n}" for phase, n in conn.by_phase)
        text.append(phases or "no connections", style="cyan")
        if conn.fds is not None:
            limit = conn.fd_limit
            near = limit is not None and conn.fds >= 0.8 * limit
            text.append(
                f" · fds {conn.fds}/{limit if limit is not None else '∞'}",
                style="bold red" if near else "",
            )
        packets = report.packets
        if packets is not None:
            text.append("\n")
            text.append_text(_packet_line(packets, self.probe(report, "packets")))
        self.set_summary(problem or text)
        shown_conns = [c for c in conn.top if self.phase_filter in ("all", c.phase)]
        if self.sort == "rtt":
            shown_conns.sort(key=lambda c: -(c.rtt_ms or 0.0))
        elif self.sort == "queue":
            shown_conns.sort(key=lambda c: -(c.recv_q + c.send_q))
        elif self.sort == "peer":
            shown_conns.sort(key=lambda c: c.peer)
        rows = {
            f"{c.local}>{c.peer}": (
                Text(c.peer, style="" if c.kind == "client" else "italic"),
                Text(c.phase, style=_PHASE_STYLE.get(c.phase, "")),
                f"{c.recv_q}/{c.send_q}",
                "—" if c.rtt_ms is None else f"{c.rtt_ms:.2f}",
                c.thread or "",
            )
            for c in shown_conns
        }
        sync_rows(self.query_one(DataTable), rows)
        shown = len(shown_conns)
        count = f"top {shown} of {conn.total}" if conn.total > shown else f"{shown} conns"
        self.border_subtitle = f"{count} · o:{self.sort} f:{self.phase_filter}"


LAYER_NAMES = {
    "L0": "handshake",
    "L1": "accept queue",
    "L2": "read & parse",
    "L3": "middleware",
    "L4": "handler & I/O",
    "L5": "write response",
    "L6": "keep-alive",
    "unknown": "not visible",
}


class LayersPane(Pane):
    """The essay's ladder, L0→L6: requests there now and their share of the window.

    Selecting an in-flight row (Enter) opens that thread's current stack."""

    TITLE = "Request layers"
    COLUMNS = (("layer", "layer", None), ("now", "now", None), ("share", "share of time", None))

    def compose(self) -> ComposeResult:
        yield Static("waiting for samples…", classes="summary")
        yield LiveTable(cursor_type="row", show_cursor=False, show_header=False, id="ladder")
        yield LiveTable(cursor_type="row", id="in-flight")

    def on_mount(self) -> None:
        self.border_title = self.TITLE
        ensure_columns(self.query_one("#ladder", DataTable), self.COLUMNS)
        ensure_columns(
            self.query_one("#in-flight", DataTable),
            (("layer", "layer", None), ("since", "for", None), ("evidence", "evidence", None)),
        )

    def show(self, report: Report) -> None:
        view = report.layers
        if view is None:
            return
        measured = {
            "stacks+tasks": "code: stacks + asyncio tasks",
            "stacks": "code: thread stacks only (parked tasks not read)",
            "none": "code: not visible",
        }[view.measured]
        self.set_summary(Text(f"kernel: sockets · {measured}", style="dim"))
        now = dict(view.now)
        shares = dict(view.shares)
        rows = {
            layer: (
                Text(f"{layer} {LAYER_NAMES[layer]}", style="bold" if now.get(layer) else "dim"),
                str(now.get(layer, 0)),
                bar(shares.get(layer, 0.0), 10),
            )
            for layer in LAYER_NAMES
        }
        sync_rows(self.query_one("#ladder", DataTable), rows)
        flights = {
            f"{i}:{'' if f.tid is None else f.tid}": (
                f.layer,
                "—" if f.since_ms is None else f"{f.since_ms:.0f}ms",
                f.evidence if f.thread is None else f"{f.evidence} [{f.thread}]",
            )
            for i, f in enumerate(view.in_flight[:MAX_ROWS])
        }
        sync_rows(self.query_one("#in-flight", DataTable), flights)
        self.border_subtitle = f"{len(view.in_flight)} in flight · {report.window_s:.0f}s"


_ROLE_SHORT = {"event-loop": "loop", "executor": "exec", "request": "req", "other": ""}
_STATE_STYLE = {
    "python": "bold green",
    "native": "cyan",
    "gil-wait": "bold red",
    "io": "blue",
    "lock": "yellow",
    "sleep": "dim",
    "other": "dim",
    "running": "green",
}


def _doing(thread: ThreadView) -> Text:
    """What a thread does now: its state, and the syscall when it is blocked in one."""
    style = _STATE_STYLE.get(thread.state, "")
    if thread.socket is not None:
        return Text(f"{thread.socket.syscall}→{thread.socket.peer}", style=style)
    if thread.state in ("io", "lock", "other") and thread.syscall not in (None, "running"):
        return Text(f"{thread.state}:{thread.syscall}", style=style)
    return Text(thread.state, style=style)


def _strip(thread: ThreadView) -> Text:
    from lifescope.analysis.report import STATE_CHARS

    styles = {char: _STATE_STYLE.get(state, "") for state, char in STATE_CHARS.items()}
    text = Text()
    for char in thread.strip:
        text.append(char, style=styles.get(char, ""))
    return text


def _loop_summary(report: Report) -> Text:
    text = Text()
    if report.model:
        text.append(f"model: {report.model}", style="bold")
    for loop in report.loops:
        busy = loop.busy_share
        text.append(f" · loop busy {pct(busy)}", style="bold red" if (busy or 0) > 0.8 else "")
        stalls = loop.stalls
        text.append(f" · {len(stalls)} stalls ≥100ms", style="red" if stalls else "dim")
        if loop.tasks is not None:
            tasks = loop.tasks
            text.append(f"\n tasks {tasks.total}", style="bold")
            text.append(
                " (" + ", ".join(f"{s} {n}" for s, n in tasks.by_state.items()) + ")", style="dim"
            )
            for point in tasks.top_awaiting[:1]:
                text.append(f" · {point.count}× {point.frame}", style="cyan")
        elif loop.task_source == "stacks":
            text.append("\n tasks: running one only (task reader unavailable)", style="dim")
        for stall in stalls[-2:][::-1]:
            gil = {True: "GIL held", False: "GIL free", None: "GIL ?"}[stall.gil_held]
            more = "+" if stall.ongoing else ""
            text.append(
                f"\n stall {stall.duration_ms:.0f}ms{more} {stall.frame or '?'} ({gil})",
                style="red",
            )
    if not report.loops:
        text.append(" · no asyncio loop seen", style="dim")
    return text


class ThreadsPane(Pane):
    TITLE = "Threads & coroutines"
    COLUMNS = (
        ("name", "thread", None),
        ("role", "role", None),
        ("doing", "now", None),
        ("strip", "last 10s", None),
        ("cpu", "cpu", None),
    )

    def show(self, report: Report) -> None:
        problem = _problem(self.probe(report, "threads"))
        self.set_summary(problem or _loop_summary(report))
        rows = {
            str(t.tid): (
                _thread_label(t)[:14],
                _ROLE_SHORT.get(t.role, t.role),
                _doing(t),
                _strip(t),
                pct(t.cpu_share),
            )
            for t in report.threads[:MAX_ROWS]
        }
        sync_rows(self.query_one(DataTable), rows)
        self.border_subtitle = f"{len(report.threads)} threads · {report.window_s:.0f}s"


def _histogram(buckets: tuple[tuple[str, int], ...]) -> Text:
    total = max((n for _, n in buckets), default=0)
    text = Text("holds ", style="dim")
    for name, count in buckets:
        level = 0 if total == 0 else round(count / total * 7)
        text.append(name.replace("ms", ""), style="dim")
        text.append(" ▁▂▃▄▅▆▇█"[level] if count else "·", style="bold")
        text.append(" ")
    return text


class GilPane(Pane):
    TITLE = "GIL"
    COLUMNS = (("name", "thread", None), ("share", "holds", None), ("wait", "waits", None))

    def compose(self) -> ComposeResult:
        yield Static("waiting for samples…", classes="summary")
        yield Sparkline([], id="gil-spark")
        yield LiveTable(cursor_type="row", show_cursor=False)

    def show(self, report: Report) -> None:
        gil = report.gil
        problem = _problem(self.probe(report, "gil"))
        if gil.no_gil:
            # No GIL to hold (free-threaded): never a held share; how many threads can run
            # Python at once stands in its place (each one's CPU is in the threads pane).
            text = Text("no GIL", style="bold")
            text.append(f" · {gil.no_gil.split(': ', 1)[-1]}", style="dim")
            text.append(f"\n{gil.runnable_mean if gil.runnable_mean is not None else '—'}")
            text.append(f" threads runnable at once (max {gil.runnable_max or '—'})")
            self.set_summary(text)
            self.query_one(Sparkline).data = [0.0]
            sync_rows(self.query_one(DataTable), {})
            self.border_subtitle = f"no GIL · {report.window_s:.0f}s"
            return
        text = Text("held ", style="bold")
        text.append_text(bar(gil.held_share, 8))
        if gil.source == "memory":
            text.append(f" · {gil.switches_per_s or 0:.0f} switch/s")
            waiters = gil.waiters_mean
            text.append(
                f" · waiters {waiters if waiters is not None else '—'}",
                style="bold red" if (waiters or 0) >= 0.5 else "",
            )
            hold = dict(gil.hold_ms)
            text.append("\nhold ms ", style="dim")
            text.append(" ".join(f"{k} {_ms(hold.get(k))}" for k in ("p50", "p90", "p99", "max")))
            text.append("\n")
            text.append_text(_histogram(gil.histogram))
        else:
            text.append(f" · py-spy, {gil.samples} samples", style="dim")
            if problem is not None:
                text.append("\n")
                text.append_text(problem)
        self.set_summary(text)
        spark = self.query_one(Sparkline)
        spark.data = list(gil.held_series) or [0.0]
        holders = sorted(report.threads, key=lambda t: -(t.gil_share or 0.0))
        rows = {
            str(t.tid): (_thread_label(t)[:14], bar(t.gil_share, 8), pct(t.waiting_gil_share))
            for t in holders[:MAX_ROWS]
            if t.gil_share is not None
        }
        sync_rows(self.query_one(DataTable), rows)
        resolution = f" ±{gil.resolution_ms:g}ms" if gil.resolution_ms else ""
        self.border_subtitle = f"{gil.source}{resolution} · {report.window_s:.0f}s"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"
