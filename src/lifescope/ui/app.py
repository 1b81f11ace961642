"""The Textual app: a header, four panes, the `»` line, a footer; fed by a `Source`.

Data path: a source (`ui.source`: a live collector or a recording) keeps a timeline; a timer
on the UI thread asks it to advance and, unless paused, re-renders every pane from one
`Report` at 2 Hz. A repaint costs 30–45 ms of this process's GIL (measured), which is why
sampling lives in the other process, and why the UI renders the newest state rather than
every sample: when it falls behind, it drops nothing from the timeline and skips only
intermediate repaints.

Background work is Textual's: a report too slow to build on the UI thread (a 10k-connection
server's) is built by a thread worker in the exclusive group "report", so a newer build — a
seek, a key, a switch to another process — cancels a stale one by itself, and its result
comes back as the worker's state-change message. The stage keys of `lifescope demo` are
workers of their own group. One handler, `on_worker_state_changed`, takes every result and
every failure.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from lifescope import __version__, lifecycle, outputs
from lifescope.analysis import narration
from lifescope.analysis import report as analysis
from lifescope.analysis.processes import ProcessView
from lifescope.options import DEFAULTS, CollectorOptions
from lifescope.replay import Player
from lifescope.samples import Sample
from lifescope.timeline import Timeline, Window
from lifescope.ui import header
from lifescope.ui.fit import wrap_words
from lifescope.ui.panes import ConnectionsPane, GilPane, LayersPane, Pane, ThreadsPane
from lifescope.ui.screens import (
    WINDOW_S,
    HelpScreen,
    LargeScreen,
    StackScreen,
    WorkerScreen,
)
from lifescope.ui.source import LiveSource, ReplaySource, SampleStream, Source, iterate
from lifescope.ui.stage import Stage

if TYPE_CHECKING:
    from lifescope.remote.link import RemoteSession
    from lifescope.session import CollectorProcess

REFRESH_S = 0.5
SLOW_BUILD_S = 0.03
"""A report that took longer than this to build is built off the UI thread from then on.
At 10k connections and 200 threads a build took 0.3-0.6 s, and on the UI thread every
refresh froze keys and paints for that long; the demo's 10-20 ms builds stay inline, where
the screen follows a key with no extra frame of delay."""


class LifescopeApp(App[int]):
    CSS_PATH = "lifescope.tcss"
    TITLE = "lifescope"
    BINDINGS: ClassVar = [
        Binding("q", "quit", "quit"),
        Binding("p", "toggle_pause", "pause"),
        Binding("question_mark", "help", "help"),
        Binding("i", "in_flight", "in flight"),
        Binding("right", "seek(5)", "+5s", show=False, priority=True),
        Binding("left", "seek(-5)", "-5s", show=False, priority=True),
        Binding("full_stop", "seek(1)", "step", show=False, priority=True),
        Binding("comma", "seek(-1)", "back", show=False, priority=True),
        Binding("plus,equals_sign", "speed(1)", "faster", show=False, priority=True),
        Binding("minus", "speed(-1)", "slower", show=False, priority=True),
        Binding("l", "large", "large text"),
        Binding("z", "zoom", "zoom"),
        Binding("w", "workers", "workers", show=False),
        Binding("o", "connections('sort')", "sort", show=False),
        Binding("f", "connections('filter')", "filter", show=False),
        *[Binding(str(n), f"stage('{n}')", show=False) for n in range(1, 9)],
    ]

    def __init__(
        self,
        pid: int | None = None,
        *,
        source: Source | SampleStream | Iterable[Sample] | None = None,
        title_hint: str = "",
        clock: Callable[[], float] = time.time,
        player: Player | None = None,
        options: CollectorOptions = DEFAULTS,
        stage: Stage | None = None,
        remote: RemoteSession | None = None,
    ) -> None:
        """`source` feeds the app: a `Source`, or samples (a function returning them, or a
        list) played as a live stream; without it, `player` replays a recording, `remote`
        is an `ssh://` session, and `pid` starts a local collector."""
        super().__init__()
        self.source: Source = _source(pid, source, player, options, remote)
        self.options = options
        self.stage = stage
        self.master_pid: int | None = None
        self.title_hint = title_hint
        self.clock = clock
        self.paused = False
        self.renders = 0
        self.last_report: analysis.Report | None = None
        self.slow_builds = False
        self.processes_seen: tuple[ProcessView, ...] = ()
        """The pre-fork server's processes as last seen while watching its master."""
        self._shown_at: float | None = None
        """The window end of the report on screen (None: the newest sample, live)."""
        self._report_worker: Worker[tuple[analysis.Report, float, float | None]] | None = None
        self._restore_signals: Callable[[], None] | None = None
        self._exiting = False

    # --------------------------------------------------------------------- what callers read

    @property
    def timeline(self) -> Timeline:
        return self.source.timeline

    @property
    def pid(self) -> int | None:
        return getattr(self.source, "pid", None)

    @property
    def collector(self) -> CollectorProcess | RemoteSession | None:
        return getattr(self.source, "collector", None)

    @property
    def failure(self) -> str | None:
        return self.source.failure

    @property
    def dropped(self) -> int:
        return self.source.dropped

    @property
    def building(self) -> bool:
        """A report is being built off the UI thread (its panes are about to change)."""
        worker = self._report_worker
        return worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    # ------------------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static("lifescope — attaching…", id="header")
        with Grid(id="panes"):
            yield ConnectionsPane(id="connections")
            yield LayersPane(id="layers")
            yield ThreadsPane(id="threads")
            yield GilPane(id="gil")
        yield Static("", id="narration")
        yield Footer()

    def on_mount(self) -> None:
        if not self.is_headless:
            # SIGTERM, SIGHUP (a closed SSH session or terminal), SIGINT: children are stopped
            # at once and the app exits, by force if its terminal is gone (see lifecycle).
            loop = asyncio.get_running_loop()
            self._restore_signals = lifecycle.exit_on_signals(
                lambda code: loop.call_soon_threadsafe(self.exit, code)
            )
        self.source.start()
        self.set_interval(REFRESH_S, self._tick)
        self.call_later(self.refresh_views)
        if self.stage is not None:
            self.run_worker(self.stage.sync, thread=True, group="stage", exit_on_error=False)

    def on_resize(self) -> None:
        if self.last_report is not None:  # the header and the » line are laid out per width
            self.call_after_refresh(self._render_text, self.last_report)

    # ------------------------------------------------------------------------ the data path

    def _tick(self) -> None:
        self.refresh_views(background=True)

    def _moment(self) -> float | None:
        """Where the window on screen ends: the replay's position, the moment paused on, or
        None for the newest sample."""
        end = self.source.end
        if end is None and self.paused and self.last_report is not None:
            return self.last_report.end
        return end

    def refresh_views(self, background: bool = False) -> None:
        """Advance the source and show a new report. With `background`, a target whose reports
        are slow to build gets them from a worker; the UI thread only paints."""
        self.source.advance()
        end = self._moment()
        if self.paused and self.last_report is not None and end == self._shown_at:
            self._render_header(self.last_report)  # frozen panes; the state line still moves
            return
        window = self.timeline.window(WINDOW_S, end=end)
        if background and self.slow_builds:
            self._render_header(self.last_report)  # the state line follows keys at once
            if not self.building:  # one build at a time; the next tick takes the newest
                self._report_worker = self.run_worker(
                    partial(_timed_build, window, end),
                    name="report",
                    group="report",
                    exclusive=True,
                    thread=True,
                    exit_on_error=False,
                )
            return
        report, elapsed, _ = _timed_build(window, end)
        self.slow_builds = elapsed > SLOW_BUILD_S
        self.workers.cancel_group(self, "report")  # what it was building is older than this
        self._shown_at = end
        self._show(report)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every background result and failure: reports, stage keys."""
        worker = event.worker
        if self._exiting:
            return
        if worker.group == "report":
            if event.state == WorkerState.SUCCESS and worker is self._report_worker:
                report, elapsed, end = worker.result  # type: ignore[misc]
                self.slow_builds = elapsed > SLOW_BUILD_S
                self._shown_at = end
                self._show(report)
            elif event.state == WorkerState.ERROR and worker.error is not None:
                # A bug in the analysis ends the app loudly, as an inline build would; the
                # panes must not freeze silently.
                raise worker.error
        elif worker.group == "stage":
            # A key that worked shows on the stage line and the » line at once; a toast
            # would cover both at 80×24. One that failed says why.
            if event.state == WorkerState.SUCCESS and self.last_report is not None:
                self._render_narration(self.last_report)
            elif event.state == WorkerState.ERROR:
                self.notify(f"stage: {worker.error}", severity="error")

    def _show(self, report: analysis.Report) -> None:
        self.last_report = report
        if report.processes:
            self.processes_seen = report.processes
        with self.batch_update():
            for pane in self.query(Pane):
                pane.show(report)
            self._render_text(report)
            if isinstance(self.screen, LargeScreen):
                self.screen.show(report)
        self.renders += 1

    def _render_text(self, report: analysis.Report) -> None:
        self._render_header(report)
        self._render_narration(report)

    # -------------------------------------------------------------------- header and » line

    def _render_header(self, report: analysis.Report | None) -> None:
        """Two lines: state and target first (never cut), then lifescope's own cost."""
        remote = getattr(self.source, "remote", None)
        text = header.render(
            self.size.width or 80,
            self.source.state(self.paused, self._wall),
            self.timeline.hello,
            report,
            title=self.title_hint,
            host=remote.target.host if remote is not None else None,
            waiting_for=self.source.waiting_for(),
            dropped=self.dropped,
        )
        self.query_one("#header", Static).update(text)

    def _render_narration(self, report: analysis.Report) -> None:
        """One sentence in the essay's words — on stage, about what was just switched on —
        wrapped at word boundaries, never cut mid-word; then the stage's keys."""
        focus = self.stage.focus() if self.stage is not None else ()
        sentence = narration.narrate(report, 1, focus)[0]
        if self.stage is not None:
            sentence = self.stage.headline(sentence)
        style = {2: "bold red", 1: "bold yellow"}.get(int(sentence.severity), "green")
        if sentence.rule in ("stage", "reading"):
            style = "bold cyan"
        width = max(20, (self.size.width or 80) - 2)
        text = Text()
        text.append(" » ", style=style)
        text.append_text(wrap_words(sentence.text, width - 3, 2, style=style, indent=3))
        if self.stage is not None:
            text.append("\n")
            text.append_text(self.stage.legend(width))
        self.query_one("#narration", Static).update(text)

    def _wall(self, mono: float) -> float:
        hello = self.timeline.hello
        if hello is None:
            return self.clock()
        return hello.wall_at_start + (mono - hello.mono_at_start)

    # ------------------------------------------------------------------------------- keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Replay keys exist only in replay; live, the arrows stay with the tables."""
        if action in ("seek", "speed"):
            return self.source.can_seek
        if action == "stage":
            return self.stage is not None
        return True

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.source.pause(self.paused)
        if self.paused:
            self.workers.cancel_group(self, "report")  # a build under way would unfreeze it
            self._shown_at = self._moment()
        self.refresh_views(background=True)

    def action_seek(self, seconds: float) -> None:
        self.source.seek(seconds)
        self.refresh_views()

    def action_speed(self, direction: int) -> None:
        self.source.speed(direction)
        self.refresh_views()

    def action_workers(self) -> None:
        """List the master's Python workers (re-read now, so restarted ones appear) to pick."""
        from lifescope.target import python_children

        if getattr(self.source, "remote", None) is not None:
            self.notify("over ssh://, attach to a worker by its pid: ssh://host/PID")
            return
        if not self.source.can_switch or self.pid is None:
            return
        master = self.master_pid or self.pid
        workers = python_children(master)
        if not workers:
            self.notify(f"pid {master} has no Python worker processes")
            return

        def chosen(pid: int | None) -> None:
            if pid is not None and pid != self.pid:
                self.switch_target(pid)

        self.push_screen(WorkerScreen(master, workers, self.pid, self.processes_seen), chosen)

    def switch_target(self, pid: int) -> None:
        """Watch another process of the same server: a fresh collector, a fresh timeline."""
        if self.master_pid is None:
            self.master_pid = self.pid
        self.workers.cancel_group(self, "report")  # built for the process watched before
        self.source.stop()
        self.source = LiveSource(pid, options=self.options)
        self.last_report = None
        self._shown_at = None
        self.source.start()
        self.notify(f"now watching pid {pid}")

    def action_connections(self, what: str) -> None:
        pane = self.query_one("#connections", ConnectionsPane)
        self.notify(pane.cycle(what), timeout=3)
        if self.last_report is not None:  # only this pane's order or filter changed
            pane.show(self.last_report)

    def action_zoom(self) -> None:
        """Cycle: each pane alone on the screen in turn, then the four together again."""
        panes = list(self.query(Pane))
        current = self.screen.maximized
        if current in panes:
            index = panes.index(current) + 1
            if index == len(panes):
                self.screen.minimize()
                return
        else:
            index = 0
        self.screen.maximized = panes[index]

    def action_in_flight(self) -> None:
        """One key to the in-flight requests: focus their table (with a cursor for Enter),
        zooming the Request layers pane when the ladder leaves the table no room (80×24)."""
        layers = self.query_one("#layers", LayersPane)
        table = self.query_one("#in-flight", DataTable)
        if table.has_focus and self.screen.maximized is layers:
            self.screen.minimize()
            return
        if table.size.height < 4:
            self.screen.maximized = layers
        table.show_cursor = True
        table.focus()

    def action_large(self) -> None:
        screen = LargeScreen()
        self.push_screen(screen)
        if self.last_report is not None:
            self.call_after_refresh(screen.show, self.last_report)

    def action_stage(self, key: str) -> None:
        stage = self.stage
        if stage is not None:  # blocking HTTP to the children: off the UI thread
            self.run_worker(partial(stage.press, key), thread=True, group="stage",
                            exit_on_error=False)  # fmt: skip

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an in-flight request: show the stack of the thread serving it."""
        if event.data_table.id != "in-flight" or event.row_key.value is None:
            return
        tid_text = event.row_key.value.split(":", 1)[1]
        if not tid_text:
            self.notify("no thread serves this one (kernel-side or a parked task)")
            return
        tid = int(tid_text)
        end = self._moment()  # paused or replaying: the report shown, not now
        frames = analysis.thread_stack(self.timeline.window(WINDOW_S, end=end), tid)
        when = "at the moment shown" if end is not None else "latest stack"
        self.push_screen(StackScreen(f"thread {tid}: {when} (innermost first)", frames))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def save_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str:
        """Textual's screenshot (the command palette's "Screenshot"), written like every other
        output: a new 0600 file, never through a link or over something already there."""
        stamp = time.strftime(time_format or "%Y-%m-%dT%H_%M_%S")
        name = filename or f"lifescope_{stamp}.svg"
        target = os.path.join(path or ".", name)
        with outputs.open_atomic(target) as out:
            out.write(self.export_screenshot().encode())
        return target

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        if self.is_web:
            return super().deliver_screenshot(filename, path, time_format)  # to the browser
        try:
            saved = self.save_screenshot(filename, path, time_format)
        except (outputs.OutputError, OSError) as exc:
            self.notify(f"screenshot not saved: {exc}", severity="error")
            return None
        self.notify(f"screenshot saved to {saved}")
        return None

    async def action_quit(self) -> None:
        self.exit(0)

    def exit(self, *args: object, **kwargs: object) -> None:
        """Stop taking background results first: a report finishing while the screen is torn
        down has no panes left to go to."""
        self._exiting = True
        self.workers.cancel_group(self, "report")
        super().exit(*args, **kwargs)  # type: ignore[arg-type]

    def on_unmount(self) -> None:
        self.source.stop()
        if self._restore_signals is not None:
            self._restore_signals()


def _source(
    pid: int | None,
    source: Source | SampleStream | Iterable[Sample] | None,
    player: Player | None,
    options: CollectorOptions,
    remote: RemoteSession | None,
) -> Source:
    if source is not None and hasattr(source, "advance"):
        return source  # type: ignore[return-value]
    if source is not None:
        stream = source if callable(source) else iterate(source)
        return LiveSource(pid, samples=stream, options=options)
    if player is not None:
        return ReplaySource(player)
    return LiveSource(pid, options=options, remote=remote)


def _timed_build(window: Window, end: float | None) -> tuple[analysis.Report, float, float | None]:
    """A report, how long it took (which decides where the next one is built) and the window
    end it was asked for (None: the newest sample)."""
    started = time.perf_counter()
    report = analysis.build(window)
    return report, time.perf_counter() - started, end


__all__ = ["LargeScreen", "LifescopeApp", "Stage", "__version__"]
