"""The screens pushed over the panes: help, one thread's stack, large text, the worker picker.

Each renders what it is handed (a report, a list of frames); none reads samples or probes.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import DataTable, Digits, Static

from lifescope.analysis import narration
from lifescope.analysis import report as analysis
from lifescope.analysis.frames import kind as frame_kind
from lifescope.analysis.frames import label
from lifescope.analysis.processes import ProcessView
from lifescope.analysis.wording import percent
from lifescope.samples import Frame
from lifescope.ui.panes import LAYER_NAMES
from lifescope.ui.tables import bar

WINDOW_S = 10.0
"""Shares on screen are over the last 10 s: long enough to be stable, short enough to move."""

HELP = """\
[b]lifescope[/b]: what a running Python server is doing, seen from outside.

[b]Keys[/b]
  q      quit (the target keeps running, untouched)
  p      pause / resume the panes (the probes keep sampling)
  ?      this help
  i      in-flight requests: the table of the Request layers pane;
         Enter on a row shows the stack of the thread serving it
         (paused: the stack at the moment shown)
  tab    move between the tables; ↑ ↓ choose a row
  z      zoom: one pane fills the screen; again for the next, then all
  l      large text: the headline numbers in big digits, for a projector
  o / f  connections: change the order / filter by phase
  w      pre-fork servers (gunicorn, uvicorn --workers): pick a worker
  replay only: ← → seek 5 s · , . step 1 s · - + speed 0.25×–8×
  demo only: 1–8 switch the demo's pathologies on and off (the stage
         line at the bottom); the » line names what is happening

[b]Panes[/b] (shares are over the last {window:.0f} s)
  Connections     each listener's accept queue / backlog; connections
                  by phase; open fds against the ulimit
  Request layers  L0 handshake … L6 keep-alive: requests in each layer
                  now, and the share of request time spent there; the
                  in-flight requests with their evidence (i, Enter)
  Threads         what each thread does now (state or syscall), its
                  last 10 s, CPU share; the event loop's busy share and
                  stalls (one callback holding the loop over 100 ms)
  GIL             share of time any / each thread held the GIL, read
                  from the target's memory at up to 2 kHz; hold times,
                  switches/s, threads waiting for it

[b]Header[/b]  lifescope's own cost: CPU of the collector and py-spy as a
share of one core, memory, achieved sample rates, errors. On a narrow
terminal the rates that do not fit are left out. The target is never
paused (py-spy runs --nonblocking).
"""
"""At most 72 columns a line: the help window is 78 wide (a scrollbar and borders take the
rest), so no line wraps at 80 columns and none is left with a stray word at 140."""


class StackScreen(ModalScreen[None]):
    """One thread's most recent stack, innermost first, with source lines where known."""

    BINDINGS: ClassVar = [Binding("escape,q,enter", "dismiss", "close")]

    def __init__(self, title: str, frames: tuple[Frame, ...]) -> None:
        super().__init__()
        self.title_text = title
        self.frames = frames

    def compose(self) -> ComposeResult:
        text = Text(self.title_text + "\n", style="bold")
        if not self.frames:
            text.append("no stack sampled for this thread in the window", style="dim")
        for frame in self.frames:
            style = "bold" if frame_kind(frame.file) == "app" else "dim"
            text.append(f"{label(frame)}\n", style=style)
            if frame.code:
                text.append(f"    {frame.code}\n", style="cyan")
        with VerticalScroll(id="help"):
            yield Static(text)


class LargeScreen(ModalScreen[None]):
    """For a projector: the headline numbers in big digits and the sentence that explains them."""

    BINDINGS: ClassVar = [Binding("escape,l,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="large"):
            yield Static("", id="large-headline")
            with Horizontal(id="large-numbers"):
                for key, title in (
                    ("gil", "GIL held %"),
                    ("stalls", "loop stalls"),
                    ("queue", "accept queue"),
                    ("flight", "in flight"),
                ):
                    with Vertical(classes="large-cell"):
                        yield Static(title, classes="large-title")
                        yield Digits("—", id=f"large-{key}")
            yield Static("", id="large-layers")

    def show(self, report: analysis.Report) -> None:
        """Fill the digits; a no-op while the screen is still being built or torn down (the
        app's refresh tick found it half-composed under a CPU hog and the app died with
        NoMatches). The next tick, 0.5 s later, fills it."""
        try:
            self._show(report)
        except NoMatches:
            return

    def _show(self, report: analysis.Report) -> None:
        sentences = narration.narrate(report)
        headline = Text(sentences[0].text, style="bold")
        for extra in sentences[1:]:
            headline.append(f"\n{extra.text}", style="")
        self.query_one("#large-headline", Static).update(headline)
        held = report.gil.held_share
        self.query_one("#large-gil", Digits).update(percent(held, unit=""))
        stalls = sum(len(loop.stalls) for loop in report.loops)
        self.query_one("#large-stalls", Digits).update(str(stalls))
        queue = sum(lv.accept_queue for lv in report.connections.listen)
        self.query_one("#large-queue", Digits).update(str(queue))
        flight = len(report.layers.in_flight) if report.layers else 0
        self.query_one("#large-flight", Digits).update(str(flight))
        if report.layers is not None:
            text = Text()
            for layer, share in report.layers.shares:
                text.append(f"{layer} {LAYER_NAMES[layer]:<15}", style="bold")
                text.append_text(bar(share, 30))
                text.append("\n")
            self.query_one("#large-layers", Static).update(text)


class WorkerScreen(ModalScreen[int | None]):
    """Pick a pre-fork worker (gunicorn, uvicorn --workers) to watch instead of the master."""

    BINDINGS: ClassVar = [Binding("escape,q", "dismiss(None)", "close")]

    def __init__(
        self,
        master: int,
        workers: list[int],
        current: int | None,
        stats: tuple[ProcessView, ...] = (),
    ) -> None:
        super().__init__()
        self.master = master
        self.worker_pids = workers
        self.current = current
        self.stats = {p.pid: p for p in stats}

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text(f"processes of {self.master} (Enter to watch one)", style="bold"))
            table: DataTable = DataTable(cursor_type="row", id="workers")
            table.add_columns("pid", "role", "cpu", "threads", "conns", "busy", "rss", "watching")
            for pid in [self.master, *self.worker_pids]:
                role = "master" if pid == self.master else "worker"
                p = self.stats.get(pid)
                numbers = ("—",) * 5
                if p is not None:
                    numbers = (
                        percent(p.cpu_share, 1),
                        str(p.threads),
                        str(p.connections),
                        str(p.busy),
                        _mib(p.rss_bytes),
                    )
                mark = "◀" if pid == self.current else ""
                table.add_row(str(pid), role, *numbers, mark, key=str(pid))
            yield table
            if self.stats:
                yield Static(
                    Text(
                        "cpu over the last 10 s while watching the master; conns: established "
                        "connections it owns, busy: with bytes queued either way",
                        style="dim",
                    )
                )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(int(str(event.row_key.value)))


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar = [Binding("escape,q,question_mark", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(HELP.format(window=WINDOW_S), id="help-text")


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:.0f} MiB"
