"""The four panes. Each renders one `Report` and nothing else: no probes, no I/O.

A pane whose probe cannot run says so in its own body (reason and remedy) instead of
showing empty tables, so a user can tell "nothing is happening" from "lifescope can't see".

Each pane decides per width what it shows (`ui.fit`, `ui.tables`): at 80×24 a pane is 40
columns wide and 9 rows high, so its summary is at most three lines of whole parts, its
table the columns that fit — never a number cut at the pane's edge.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from lifescope.analysis.narration import function_name
from lifescope.analysis.packets import PacketsView
from lifescope.analysis.report import ProbeView, Report, ThreadView, reading
from lifescope.analysis.wording import GIL_WORDS, percent
from lifescope.samples import HEALTHY
from lifescope.ui.fit import Part, pack, part
from lifescope.ui.tables import Column, FittedTable, bar

MAX_ROWS = 50
"""Tables show the top rows only; the summary line counts the rest."""
NARROW = 50
"""A summary narrower than this (a pane of an 80-column terminal) uses the short words."""


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
    """A bordered pane with a summary of whole parts above a table."""

    COLUMNS: tuple[Column, ...] = ()
    TITLE = ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.report: Report | None = None

    def compose(self) -> ComposeResult:
        yield Static("waiting for samples…", classes="summary")
        yield FittedTable(self.COLUMNS, cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        self.border_title = self.TITLE

    def on_resize(self, event: events.Resize) -> None:
        if self.report is not None:  # a zoom or a resized terminal: decide again
            self.show(self.report)

    def show(self, report: Report) -> None:
        raise NotImplementedError

    @property
    def summary_width(self) -> int:
        """Cells for the summary: the pane's content less the summary's padding."""
        width = self.size.width or (self.app.size.width // 2 - 2)
        return max(10, width - 2)

    @property
    def summary_lines(self) -> int:
        """Three lines in a pane of a 24-row terminal, five when there is room."""
        height = self.size.height or (self.app.size.height - 6) // 2 - 2
        return 3 if height < 12 else 5

    def set_summary(self, text: Text | str) -> None:
        self.query_one(".summary", Static).update(text)

    def fit_summary(self, parts: list[Part]) -> None:
        self.set_summary(pack(parts, self.summary_width, self.summary_lines))

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


def _packet_parts(packets: PacketsView, probe: ProbeView | None) -> list[Part]:
    if probe is not None and probe.status in ("denied", "unavailable"):
        why = probe.remedy or probe.reason
        return [part(f"packets: {probe.status} — {why}", "yellow", priority=3, elide=True,
                     newline=True)]  # fmt: skip
    summary = packets.summary.as_dict()
    hs = summary.get("handshake_ms") or {}
    p50 = hs.get("p50")
    first = Text("packets: ", style="dim")
    first.append(f"handshake p50 {p50:.2f}ms" if p50 is not None else "no handshakes")
    parts = [Part(first, priority=3, newline=True)]
    parts.append(part(f"rst {summary['resets']}", "bold red" if summary["resets"] else "",
                      priority=3))  # fmt: skip
    parts.append(part(f"syn-retrans {summary['retransmits']}",
                      "bold red" if summary["retransmits"] else "", priority=3))  # fmt: skip
    if summary["kernel_dropped"]:
        parts.append(part(f"dropped {summary['kernel_dropped']}", "bold red", priority=2))
    if packets.notable:
        last = packets.notable[-1]
        parts.append(part(f"{last.kind}: {last.detail}", "yellow", priority=4, elide=True,
                          newline=True))  # fmt: skip
    return parts


SORTS = ("activity", "rtt", "queue", "peer")
FILTERS = ("all", "request", "response", "idle", "accept-queue", "handshake", "closing")


class ConnectionsPane(Pane):
    """Listeners, phases and the busiest connections; `o` changes the order, `f` the filter."""

    TITLE = "Connections"
    sort = "activity"
    phase_filter = "all"
    COLUMNS = (
        Column("peer", "peer", elide="start", max_width=21),
        Column("phase", "phase"),
        Column("q", "rq/sq", right=True),
        Column("rtt", "rtt ms", priority=1, right=True),
        Column("thread", "thread", priority=3, elide="end", flex=True),
    )

    def cycle(self, what: str) -> str:
        """Next sort order or phase filter; rows are rebuilt once, in the new order."""
        if what == "sort":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        else:
            index = FILTERS.index(self.phase_filter)
            self.phase_filter = FILTERS[(index + 1) % len(FILTERS)]
        return f"connections: sort {self.sort}, showing {self.phase_filter}"

    def show(self, report: Report) -> None:
        self.report = report
        conn = report.connections
        problem = _problem(self.probe(report, "sockets"))
        parts: list[Part] = []
        for i, listener in enumerate(conn.listen):
            full = listener.accept_queue > 0
            text = Text()
            text.append(f"LISTEN {listener.local} ", style="bold")
            text.append(
                f"queue {listener.accept_queue}/{listener.backlog}",
                style="bold red" if full else "green",
            )
            if listener.half_open:
                text.append(f" syn {listener.half_open}", style="yellow")
            if listener.overflows:
                text.append(f" overflow +{listener.overflows}", style="bold red")
            parts.append(Part(text, priority=0 if (i == 0 or full) else 2, newline=True))
        phases = " ".join(f"{phase} {n}" for phase, n in conn.by_phase)
        parts.append(part(phases or "no connections", "cyan", newline=True))
        if conn.fds is not None:
            limit = conn.fd_limit
            near = limit is not None and conn.fds >= 0.8 * limit
            parts.append(part(f"fds {conn.fds}/{limit if limit is not None else '∞'}",
                              "bold red" if near else "", priority=1))  # fmt: skip
        if report.packets is not None:
            parts += _packet_parts(report.packets, self.probe(report, "packets"))
        if problem is not None:
            self.set_summary(problem)
        else:
            self.fit_summary(parts)
        shown_conns = [c for c in conn.top if self.phase_filter in ("all", c.phase)]
        if self.sort == "rtt":
            shown_conns.sort(key=lambda c: -(c.rtt_ms or 0.0))
        elif self.sort == "queue":
            shown_conns.sort(key=lambda c: -(c.recv_q + c.send_q))
        elif self.sort == "peer":
            shown_conns.sort(key=lambda c: c.peer)
        self.query_one(FittedTable).show(
            {
                f"{c.local}>{c.peer}": {
                    "peer": Text(c.peer, style="" if c.kind == "client" else "italic"),
                    "phase": Text(c.phase, style=_PHASE_STYLE.get(c.phase, "")),
                    "q": f"{c.recv_q}/{c.send_q}",
                    "rtt": "—" if c.rtt_ms is None else f"{c.rtt_ms:.2f}",
                    "thread": c.thread or "",
                }
                for c in shown_conns
            }
        )
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

    `i` (or Tab) reaches the in-flight table; Enter on a row opens that thread's stack."""

    TITLE = "Request layers"
    COLUMNS = (Column("layer", "layer"), Column("now", "now", right=True), Column("share", "share"))
    FLIGHT_COLUMNS = (
        Column("layer", "layer"),
        Column("since", "for", right=True),
        Column("evidence", "evidence", elide="end", flex=True),
    )

    def compose(self) -> ComposeResult:
        yield Static("waiting for samples…", classes="summary")
        yield FittedTable(
            self.COLUMNS, cursor_type="row", show_cursor=False, show_header=False, id="ladder"
        )
        yield FittedTable(self.FLIGHT_COLUMNS, cursor_type="row", id="in-flight")

    def show(self, report: Report) -> None:
        self.report = report
        view = report.layers
        if view is None:
            return
        measured = {
            "stacks+tasks": "code: stacks + asyncio tasks",
            "stacks": "code: thread stacks only (parked tasks not read)",
            "none": "code: not visible",
        }[view.measured]
        # Eight ladder rows fill a pane of a 24-row terminal: the note goes where it fits.
        summary = self.query_one(".summary", Static)
        summary.display = self.summary_lines > 3
        self.fit_summary([part("kernel: sockets", "dim"), part(measured, "dim", elide=True)])
        now = dict(view.now)
        shares = dict(view.shares)
        ladder = self.query_one("#ladder", FittedTable)
        label = max(len(f"{k} {v}") for k, v in LAYER_NAMES.items())
        width = max(3, min(10, ladder.available() - label - 3 - 5 - 3 * 2))
        ladder.show(
            {
                layer: {
                    "layer": Text(
                        f"{layer} {LAYER_NAMES[layer]}", style="bold" if now.get(layer) else "dim"
                    ),
                    "now": str(now.get(layer, 0)),
                    "share": bar(shares.get(layer, 0.0), width),
                }
                for layer in LAYER_NAMES
            }
        )
        self.query_one("#in-flight", FittedTable).show(
            {
                f"{i}:{'' if f.tid is None else f.tid}": {
                    "layer": f.layer,
                    "since": "—" if f.since_ms is None else f"{f.since_ms:.0f}ms",
                    "evidence": f.evidence if f.thread is None else f"{f.evidence} [{f.thread}]",
                }
                for i, f in enumerate(view.in_flight[:MAX_ROWS])
            }
        )
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


def _doing(thread: ThreadView, narrow: bool) -> Text:
    """What a thread does now: its state, and the syscall when it is blocked in one. Narrow,
    the syscall alone (it names the state) and the kind of peer instead of its address."""
    style = _STATE_STYLE.get(thread.state, "")
    if thread.socket is not None:
        peer = thread.socket.kind if narrow else thread.socket.peer
        return Text(f"{thread.socket.syscall}→{peer}", style=style)
    syscall = thread.syscall
    if thread.state in ("io", "lock", "other") and syscall is not None and syscall != "running":
        return Text(syscall if narrow else f"{thread.state}:{syscall}", style=style)
    return Text(thread.state, style=style)


def _strip(thread: ThreadView) -> Text:
    from lifescope.analysis.report import STATE_CHARS

    styles = {char: _STATE_STYLE.get(state, "") for state, char in STATE_CHARS.items()}
    text = Text()
    for char in thread.strip:
        text.append(char, style=styles.get(char, ""))
    return text


def _loop_parts(report: Report, width: int) -> list[Part]:
    narrow = width < NARROW
    parts: list[Part] = []
    if reading(report):
        parts.append(part("model: reading… (threads' roles come with the first stacks)",
                          "bold", elide=True))  # fmt: skip
        return parts
    if report.model:
        parts.append(part(report.model if narrow else f"model: {report.model}", "bold"))
    for loop in report.loops:
        busy = loop.busy_share
        parts.append(part(f"loop busy {percent(busy)}", "bold red" if (busy or 0) > 0.8 else ""))
        stalls = loop.stalls
        word = "stalls" if narrow else "stalls ≥100ms"
        parts.append(part(f"{len(stalls)} {word}", "red" if stalls else "dim"))
        for rank, stall in enumerate(stalls[-2:][::-1]):
            gil = GIL_WORDS[stall.gil_held]
            more = "+" if stall.ongoing or stall.cut_start else ""  # at least this long
            frame = (function_name(stall.frame) if narrow else stall.frame) or "?"
            head = f"stall {stall.duration_ms:.0f}ms{more} {frame}"
            words = f"{head}, {gil}" if narrow else f"{head} ({gil})"
            if len(words) > width:  # the GIL word goes whole before the frame is shortened
                words = head
            text = Text(words, style="red")
            parts.append(Part(text, priority=1 + 2 * rank, elide=True, newline=True))
        if loop.tasks is not None:
            tasks = loop.tasks
            text = Text()
            text.append(f"tasks {tasks.total}", style="bold")
            states = ", ".join(f"{s} {n}" for s, n in tasks.by_state.items())
            text.append(f" ({states})", style="dim")
            parts.append(Part(text, priority=2, newline=True))
            for point in tasks.top_awaiting[:1]:
                parts.append(part(f"{point.count}× {point.frame}", "cyan", priority=4,
                                  elide=True))  # fmt: skip
        elif loop.task_source == "stacks":
            parts.append(part("tasks: running one only (task reader unavailable)", "dim",
                              priority=4, elide=True, newline=True))  # fmt: skip
    if not report.loops:
        parts.append(part("no asyncio loop seen", "dim"))
    return parts


class ThreadsPane(Pane):
    TITLE = "Threads & coroutines"
    COLUMNS = (
        Column("name", "thread", elide="end", max_width=14),
        Column("role", "role", priority=3),
        Column("doing", "now"),
        Column("strip", "last 10s", priority=2, elide="start", flex=True),
        Column("cpu", "cpu", priority=1, right=True),
    )

    def show(self, report: Report) -> None:
        self.report = report
        narrow = self.summary_width < NARROW
        problem = _problem(self.probe(report, "threads"))
        if problem is not None:
            self.set_summary(problem)
        else:
            self.fit_summary(_loop_parts(report, self.summary_width))
        self.query_one(FittedTable).show(
            {
                str(t.tid): {
                    "name": _thread_label(t),
                    "role": _ROLE_SHORT.get(t.role, t.role),
                    "doing": _doing(t, narrow),
                    "strip": _strip(t),
                    "cpu": percent(t.cpu_share),
                }
                for t in report.threads[:MAX_ROWS]
            }
        )
        self.border_subtitle = f"{len(report.threads)} threads · {report.window_s:.0f}s"


def _histogram(buckets: tuple[tuple[str, int], ...]) -> Text:
    total = max((n for _, n in buckets), default=0)
    text = Text("holds ", style="dim")
    for name, count in buckets:
        level = 0 if total == 0 else round(count / total * 7)
        text.append(name.replace("ms", ""), style="dim")
        text.append(" ▁▂▃▄▅▆▇█"[level] if count else "·", style="bold")
        text.append(" ")
    text.rstrip()
    return text


class GilPane(Pane):
    TITLE = "GIL"
    COLUMNS = (
        Column("name", "thread", elide="end", max_width=14),
        Column("share", "holds"),
        Column("wait", "waits", priority=1, right=True),
    )

    def compose(self) -> ComposeResult:
        yield Static("waiting for samples…", classes="summary")
        yield Sparkline([], id="gil-spark")
        yield FittedTable(self.COLUMNS, cursor_type="row", show_cursor=False)

    def show(self, report: Report) -> None:
        self.report = report
        gil = report.gil
        narrow = self.summary_width < NARROW
        problem = _problem(self.probe(report, "gil"))
        if gil.no_gil:
            # No GIL to hold (free-threaded): never a held share; how many threads can run
            # Python at once stands in its place (each one's CPU is in the threads pane).
            mean = gil.runnable_mean if gil.runnable_mean is not None else "—"
            self.fit_summary(
                [
                    part("no GIL", "bold"),
                    part(gil.no_gil.split(": ", 1)[-1], "dim", priority=2, elide=True),
                    part(f"{mean} threads runnable at once", newline=True),
                    part(f"max {gil.runnable_max or '—'}", priority=1),
                ]
            )
            self.query_one(Sparkline).data = [0.0]
            self.query_one(FittedTable).show({})
            self.border_subtitle = f"no GIL · {report.window_s:.0f}s"
            return
        held = Text("held ", style="bold")
        held.append_text(bar(gil.held_share, 4 if narrow else 8))
        parts = [Part(held)]
        if gil.source == "memory":
            parts.append(part(f"{gil.switches_per_s or 0:.0f} switch/s"))
            waiters = gil.waiters_mean
            parts.append(part(f"waiters {'—' if waiters is None else f'{waiters:.1f}'}",
                              "bold red" if (waiters or 0) >= 0.5 else ""))  # fmt: skip
            hold = dict(gil.hold_ms)
            parts.append(
                part(f"hold ms p50 {_ms(hold.get('p50'))}", priority=1, newline=not narrow)
            )
            for key in ("p90", "p99", "max"):
                parts.append(part(f"{key} {_ms(hold.get(key))}", priority=1, sep=" "))
            parts.append(Part(_histogram(gil.histogram), priority=3, newline=True))
            self.fit_summary(parts)
        else:
            parts.append(part(f"py-spy, {gil.samples} samples", "dim"))
            text = pack(parts, self.summary_width, 1)
            if problem is not None:
                text.append("\n")
                text.append_text(problem)
            self.set_summary(text)
        spark = self.query_one(Sparkline)
        spark.data = list(gil.held_series) or [0.0]
        table = self.query_one(FittedTable)
        name_width = min(14, max((len(_thread_label(t)) for t in report.threads), default=6))
        width = max(3, min(8, table.available() - name_width - 5 - 5 - 3 * 2))
        holders = sorted(report.threads, key=lambda t: (-(t.gil_share or 0.0), t.tid))
        table.show(
            {
                str(t.tid): {
                    "name": _thread_label(t),
                    "share": bar(t.gil_share, width),
                    "wait": percent(t.waiting_gil_share),
                }
                for t in holders[:MAX_ROWS]
                if t.gil_share is not None
            }
        )
        resolution = f" ±{gil.resolution_ms:g}ms" if gil.resolution_ms else ""
        self.border_subtitle = f"{gil.source}{resolution} · {report.window_s:.0f}s"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"
