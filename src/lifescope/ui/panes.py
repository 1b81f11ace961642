"""The four panes. Each renders one `Report` and nothing else: no probes, no I/O.

A pane whose probe cannot run says so in its own body (reason and remedy) instead of
showing empty tables, so a user can tell "nothing is happening" from "lifescope can't see".
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from lifescope.analysis.report import ProbeView, Report, ThreadView
from lifescope.ui.tables import bar, ensure_columns, pct, sync_rows

MAX_ROWS = 50
"""Tables show the top rows only; the summary line counts the rest."""


def _problem(probe: ProbeView | None) -> Text | None:
    if probe is None or probe.status == "ok":
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
        yield DataTable(cursor_type="row", show_cursor=False)

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


_SS_STATE = {
    "ESTABLISHED": "ESTAB",
    "SYN_SENT": "SYN-SENT",
    "SYN_RECV": "SYN-RECV",
    "FIN_WAIT1": "FIN-WAIT-1",
    "FIN_WAIT2": "FIN-WAIT-2",
    "TIME_WAIT": "TIME-WAIT",
    "CLOSE_WAIT": "CLOSE-WAIT",
    "LAST_ACK": "LAST-ACK",
    "CLOSING": "CLOSING",
    "CLOSE": "UNCONN",
    "LISTEN": "LISTEN",
}
"""The abbreviations `ss` uses: the ones people already read at a glance."""


class ConnectionsPane(Pane):
    TITLE = "Connections"
    COLUMNS = (
        ("state", "state", None),
        ("peer", "peer", None),
        ("fd", "fd", None),
        ("q", "recv/send q", None),
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
            text.append("\n")
        states = " ".join(
            f"{_SS_STATE.get(state, state)} {n}" for state, n in conn.by_state if state != "LISTEN"
        )
        text.append(states or "no connections", style="cyan")
        if conn.fds is not None:
            limit = conn.fd_limit
            near = limit is not None and conn.fds >= 0.8 * limit
            text.append(
                f" · fds {conn.fds}/{limit if limit is not None else '∞'}",
                style="bold red" if near else "",
            )
        self.set_summary(problem or text)
        sockets = [s for s in conn.sockets if s.state != "LISTEN"]
        sockets.sort(key=lambda s: (-(s.recv_q + s.send_q), s.state, s.peer))
        rows = {
            str(s.inode or f"{s.local}-{s.peer}"): (
                _SS_STATE.get(s.state, s.state),
                s.peer,
                "—" if s.fd is None else str(s.fd),
                f"{s.recv_q}/{s.send_q}",
            )
            for s in sockets[:MAX_ROWS]
        }
        sync_rows(self.query_one(DataTable), rows)
        shown = min(len(sockets), MAX_ROWS)
        self.border_subtitle = (
            f"top {shown} of {len(sockets)}" if len(sockets) > shown else f"{len(sockets)} conns"
        )


class LayersPane(Pane):
    """Until the layer engine lands: where each thread's own code is, right now."""

    TITLE = "Request layers"
    COLUMNS = (("thread", "thread", None), ("frame", "innermost application frame", None))

    def show(self, report: Report) -> None:
        problem = _problem(self.probe(report, "stacks"))
        self.set_summary(problem or Text("each thread's own code, now", style="dim"))
        rows = {
            str(t.tid): (_thread_label(t)[:16], t.top_frame or "—")
            for t in report.threads[:MAX_ROWS]
        }
        sync_rows(self.query_one(DataTable), rows)
        self.border_subtitle = f"{len(report.threads)} threads"


def _doing(thread: ThreadView) -> str:
    """What a thread is doing in one word: its syscall when blocked, else its state."""
    if thread.state == "running" or thread.syscall in (None, "running"):
        return thread.state
    return thread.syscall


class ThreadsPane(Pane):
    TITLE = "Threads & coroutines"
    COLUMNS = (
        ("name", "thread", None),
        ("doing", "doing", None),
        ("cpu", "cpu", None),
        ("active", "active", None),
    )

    def show(self, report: Report) -> None:
        problem = _problem(self.probe(report, "threads"))
        running = sum(1 for t in report.threads if t.state == "running")
        self.set_summary(
            problem
            or Text(
                f"{running} of {len(report.threads)} running · shares: last {report.window_s:.0f}s",
                style="dim",
            )
        )
        rows = {
            str(t.tid): (
                _thread_label(t)[:16],
                _doing(t),
                pct(t.cpu_share),
                pct(t.active_share),
            )
            for t in report.threads[:MAX_ROWS]
        }
        sync_rows(self.query_one(DataTable), rows)
        self.border_subtitle = f"{len(report.threads)} threads"


class GilPane(Pane):
    TITLE = "GIL"
    COLUMNS = (("name", "thread", None), ("share", "holds the GIL", None))

    def show(self, report: Report) -> None:
        gil = report.gil
        problem = _problem(self.probe(report, "dump"))
        text = Text("held ", style="bold")
        text.append_text(bar(gil.held_share, 8))
        text.append(f" · {gil.samples} samples/{report.window_s:.0f}s", style="dim")
        self.set_summary(problem or text)
        holders = sorted(report.threads, key=lambda t: -(t.gil_share or 0.0))
        rows = {
            str(t.tid): (_thread_label(t)[:16], bar(t.gil_share, 12))
            for t in holders[:MAX_ROWS]
            if t.gil_share is not None
        }
        sync_rows(self.query_one(DataTable), rows)
        self.border_subtitle = f"source: {gil.source}"
