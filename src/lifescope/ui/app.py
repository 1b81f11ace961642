"""The Textual app: a header, four panes, a footer; fed by a collector process.

Data path: a reader thread decodes the collector's stream into a bounded queue; a timer on
the UI thread drains it into the timeline and, unless paused, re-renders every pane from one
`Report` at 2 Hz. A repaint costs 30–45 ms of this process's GIL (measured), which is why
sampling lives in the other process, and why the UI renders the newest state rather than
every sample: when it falls behind, it drops nothing from the timeline and skips only
intermediate repaints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Digits, Footer, Static

from lifescope import __version__, lifecycle, outputs
from lifescope.analysis import narration
from lifescope.analysis import report as analysis
from lifescope.analysis.frames import kind as frame_kind
from lifescope.analysis.frames import label
from lifescope.analysis.processes import ProcessView
from lifescope.options import DEFAULTS, CollectorOptions
from lifescope.replay import Player
from lifescope.samples import Frame
from lifescope.session import CollectorFailed, CollectorProcess

if TYPE_CHECKING:
    from lifescope.remote.link import RemoteSession
from lifescope.timeline import Timeline, Window
from lifescope.ui.panes import ConnectionsPane, GilPane, LayersPane, Pane, ThreadsPane

REFRESH_S = 0.5
WINDOW_S = 10.0
LIVE_HORIZON_S = 60.0
"""What the live UI keeps: the panes show the last WINDOW_S; `--record` keeps everything on
disk. With the Timeline's default 10 minutes, `lifescope demo` left alone grew ~17 MiB a
minute until the horizon bit (bench/soak_ui.py)."""
SLOW_BUILD_S = 0.03
"""A report that took longer than this to build is built off the UI thread from then on.
At 10k connections and 200 threads a build took 0.3-0.6 s, and on the UI thread every
refresh froze keys and paints for that long; the demo's 10-20 ms builds stay inline, where
the screen follows a key with no extra frame of delay."""
"""Shares on screen are over the last 10 s: long enough to be stable, short enough to move."""
QUEUE_MAX = 50_000

HELP = """\
[b]lifescope[/b]: what a running Python server is doing, seen from outside.

[b]Keys[/b]
  q  quit (the target keeps running, untouched)
  p  pause / resume the panes (probes keep sampling)
  ?  this help
  l  large text: the headline numbers in big digits, for a projector
  z  zoom: one pane fills the screen; again for the next, then all four
  w  pre-fork servers (gunicorn, uvicorn --workers): pick a worker to watch
  o  connections: change the order (activity, rtt, queue, peer)
  f  connections: filter by phase (request, response, idle, ...)
  replay only: ← → seek 5 s · , . step 1 s · - + speed 0.25×–8×
  demo only: 1–8 switch the demo's pathologies on and off (see the
     stage line at the bottom); the » line says what is happening

[b]Panes[/b] (shares are over the last {window:.0f} s)
  Connections     listeners' accept queue / backlog, connections
                  by TCP state, open fds against the ulimit
  Request layers  L0 handshake … L6 keep-alive: requests in each
                  layer now and the share of request time there;
                  in-flight requests with their evidence (enter:
                  the serving thread's stack)
  Threads         what each thread does now (syscall or state),
                  CPU share, share of /proc samples when runnable,
                  GIL share; the event loop's busy share and stalls
  GIL             share of time any / each thread held the GIL,
                  read from the target's memory at up to 2 kHz;
                  hold times, switches/s, threads waiting for it

[b]Header[/b]  lifescope's own cost: CPU of the collector and py-spy
as a share of one core, achieved sample rates, errors. The
target is never paused (py-spy runs --nonblocking).
"""


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


class Stage:
    """The demo's children and which stage keys are on, for `lifescope demo`."""

    def __init__(self, server: object, load: object) -> None:
        self.server = server
        self.load = load
        self.on: set[str] = set()

    def press(self, key: str) -> str:
        """Flip a stage key; blocking HTTP to the loopback control ports (run off the UI)."""
        from lifescope.demo.toggles import KEYMAP

        spec = KEYMAP[key]
        turn_on = key not in self.on
        for target, name, value in spec.actions(turn_on):
            child = self.server if target == "server" else self.load
            setter = child.set_toggle if target == "server" else child.set_mode  # type: ignore[attr-defined]
            setter(name, value)
        if turn_on:
            self.on.add(key)
        else:
            self.on.discard(key)
        return ("ON  " if turn_on else "OFF ") + spec.description

    def legend(self) -> Text:
        from lifescope.demo.toggles import STAGE_KEYS

        short = {
            "slow_middleware": "middleware",
            "slow_db": "slow db",
            "big_json": "big json",
            "block_loop": "block loop",
            "gil_hog": "gil hog",
            "accept_stall": "accept stall",
            "slow_readers": "slow clients",
            "flood": "flood",
        }
        text = Text("stage ", style="bold")
        for spec in STAGE_KEYS:
            on = spec.key in self.on
            text.append(f"[{spec.key}]", style="bold reverse" if on else "bold")
            text.append(f"{short.get(spec.name, spec.name)} ", style="bold yellow" if on else "dim")
        return text


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
        sentences = narration.narrate(report)
        headline = Text(sentences[0].text, style="bold")
        for extra in sentences[1:]:
            headline.append(f"\n{extra.text}", style="")
        self.query_one("#large-headline", Static).update(headline)
        held = report.gil.held_share
        self.query_one("#large-gil", Digits).update("—" if held is None else f"{held * 100:.0f}")
        stalls = sum(len(loop.stalls) for loop in report.loops)
        self.query_one("#large-stalls", Digits).update(str(stalls))
        queue = sum(lv.accept_queue for lv in report.connections.listen)
        self.query_one("#large-queue", Digits).update(str(queue))
        flight = len(report.layers.in_flight) if report.layers else 0
        self.query_one("#large-flight", Digits).update(str(flight))
        if report.layers is not None:
            from lifescope.ui.panes import LAYER_NAMES
            from lifescope.ui.tables import bar

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
                        _share(p.cpu_share),
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
            yield Static(HELP.format(window=WINDOW_S))


SampleSource = Callable[[], Iterator[object]]


class LifescopeApp(App[int]):
    CSS_PATH = "lifescope.tcss"
    TITLE = "lifescope"
    BINDINGS: ClassVar = [
        Binding("q", "quit", "quit"),
        Binding("p", "toggle_pause", "pause"),
        Binding("question_mark", "help", "help"),
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
        source: SampleSource | None = None,
        title_hint: str = "",
        clock: Callable[[], float] = time.time,
        player: Player | None = None,
        options: CollectorOptions = DEFAULTS,
        stage: Stage | None = None,
        remote: RemoteSession | None = None,
    ) -> None:
        super().__init__()
        self.pid = pid
        self.remote = remote
        """An `ssh://` session: its collector runs on another host and may reconnect."""
        self.player = player
        self.options = options
        self.stage = stage
        self.master_pid: int | None = None
        self._last_tick = time.monotonic()
        self._source = source
        self.title_hint = title_hint
        self.clock = clock
        self.timeline = Timeline(horizon_s=LIVE_HORIZON_S)
        self.paused = False
        self.collector: CollectorProcess | RemoteSession | None = None
        self.failure: str | None = None
        self.renders = 0
        self.last_report: analysis.Report | None = None
        self.slow_builds = False
        self.processes_seen: tuple[ProcessView, ...] = ()
        """The pre-fork server's processes as last seen while watching its master."""
        self._building = False
        self._generation = 0
        """Bumped at every build and target switch; a background result older than what is
        shown (or built for the process watched before `w`) is dropped."""
        self._shown_generation = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_MAX)
        self._reader: threading.Thread | None = None
        self._ended = threading.Event()
        self._restore_signals: Callable[[], None] | None = None
        self.dropped = 0

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
        self.set_class(self.size.width < 100, "narrow")
        self._start_source()
        self.set_interval(REFRESH_S, self._tick)
        self.call_later(self.refresh_views)

    def on_resize(self) -> None:
        self.set_class(self.size.width < 100, "narrow")

    def _start_source(self) -> None:
        if self.player is not None:
            self.timeline = self.player.timeline
            return
        if self._source is None and self.remote is not None:
            self.collector = self.remote
            self._source = self.remote.samples
        elif self._source is None and self.pid is not None:
            self.collector = CollectorProcess(self.pid, self.options)
            self._source = self.collector.samples
        if self._source is None:
            return
        source = self._source
        self._reader = threading.Thread(
            target=self._read, args=(source,), name="lifescope-reader", daemon=True
        )
        self._reader.start()

    def _read(self, source: SampleSource) -> None:
        """Reader thread: never touches widgets; only fills the bounded queue."""
        try:
            for sample in source():
                try:
                    self._queue.put_nowait(sample)
                except queue.Full:
                    self.dropped += 1
        except CollectorFailed as exc:
            self.failure = str(exc)
        except Exception as exc:  # a broken stream is a state to show, not a crash
            self.failure = f"stream ended: {exc}"
        finally:
            self._ended.set()

    def drain(self) -> int:
        count = 0
        while True:
            try:
                sample = self._queue.get_nowait()
            except queue.Empty:
                return count
            self.timeline.add(sample)
            count += 1

    def _tick(self) -> None:
        self.refresh_views(background=True)

    def refresh_views(self, background: bool = False) -> None:
        """Drain the samples and show a new report. With `background`, a target whose reports
        are slow to build gets them built on a thread; the UI thread only paints."""
        end = None
        if self.player is not None:
            now = time.monotonic()
            self.player.tick(now - self._last_tick)
            self._last_tick = now
            self.timeline = self.player.timeline
            end = self.player.position
        else:
            self.drain()
        if self.paused and self.player is None:
            self._render_header(self.last_report)
            return
        window = self.timeline.window(WINDOW_S, end=end)
        if background and self.slow_builds:
            self._render_header(self.last_report)  # the state line follows keys at once
            if not self._building:  # one build at a time; the next tick takes the newest
                self._building = True
                self._generation += 1
                threading.Thread(
                    target=self._build_off_thread,
                    args=(window, self._generation),
                    name="lifescope-analysis",
                    daemon=True,
                ).start()
            return
        started = time.perf_counter()
        self._generation += 1
        generation = self._generation
        report = analysis.build(window)
        self.slow_builds = time.perf_counter() - started > SLOW_BUILD_S
        self._shown_generation = generation
        self._show(report)

    @property
    def building(self) -> bool:
        """A report is being built off the UI thread (its panes are about to change)."""
        return self._building

    def _build_off_thread(self, window: Window, generation: int) -> None:
        started = time.perf_counter()
        try:
            result: analysis.Report | BaseException = analysis.build(window)
        except Exception as exc:  # handed to the UI thread, which fails as an inline build
            result = exc
        elapsed = time.perf_counter() - started
        with contextlib.suppress(RuntimeError):  # the app closed while we built
            self.call_from_thread(self._built, result, elapsed, generation)

    def _built(
        self, result: analysis.Report | BaseException, elapsed: float, generation: int
    ) -> None:
        self._building = False
        self.slow_builds = elapsed > SLOW_BUILD_S
        if isinstance(result, BaseException):
            # Raised from a callback of the app's own loop, not here: call_from_thread would
            # hand it back to the analysis thread, and the panes would freeze silently.
            self.call_later(_reraise, result)
            return
        if self.paused and self.player is None:
            return  # paused while it was built: the frozen screen stays
        if generation < self._shown_generation:
            return  # a newer report (a seek, a key) is already on screen
        self._shown_generation = generation
        self._show(result)

    def _show(self, report: analysis.Report) -> None:
        self.last_report = report
        if report.processes:
            self.processes_seen = report.processes
        with self.batch_update():
            self._render_header(report)
            for pane in self.query(Pane):
                pane.show(report)
            self._render_narration(report)
            if isinstance(self.screen, LargeScreen):
                self.screen.show(report)
        self.renders += 1

    def _render_header(self, report: analysis.Report | None) -> None:
        """Two lines: state and target first (never cut), then lifescope's own cost."""
        header = self.query_one("#header", Static)
        hello = self.timeline.hello
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" lifescope ", style="bold reverse")
        text.append(" ")
        text.append_text(self._state_text())
        if hello is None:
            if self.failure is None:
                where = f"{self.remote.target}" if self.remote is not None else f"pid {self.pid}"
                text.append(f"  attaching to {where}…")
        else:
            text.append(f"  pid {hello.pid}", style="bold")
            if self.remote is not None:
                text.append(f" on {self.remote.target.host}", style="bold")
            text.append(f" · Py {hello.python}", style="cyan")
            if report is not None and report.uptime_s is not None:
                text.append(f" · up {_duration(report.uptime_s)}")
            text.append(f" · {self.title_hint or hello.command}", style="dim")
        if report is not None:
            cost = report.cost
            rates = " ".join(f"{p.name} {p.rate_hz:.0f}/s" for p in report.probes)
            text.append(
                f"\n cost: cpu {_share(cost.cpu_share)} of a core · rss {_mib(cost.rss_bytes)}"
                f" · {rates} · errors {cost.errors}",
                style="dim",
            )
            if self.dropped:
                text.append(f" · ui dropped {self.dropped}", style="yellow")
            workers = [p for p in report.processes if p.role == "worker"]
            if workers:
                cpu = sum(p.cpu_share or 0.0 for p in workers)
                conns = sum(p.connections for p in workers)
                text.append(
                    f" · {len(workers)} workers: cpu {_share(cpu)}, {conns} conns (w: per worker)",
                    style="cyan",
                )
            if cost.rate_scale < 1:
                text.append(f" · {analysis.shedding_note(cost)}", style="bold yellow")
        header.update(text)

    def _render_narration(self, report: analysis.Report) -> None:
        """One line in the essay's words: what the audience (or the on-call) is looking at."""
        sentence = narration.headline(report)
        style = {2: "bold red", 1: "bold yellow"}.get(int(sentence.severity), "green")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" » ", style=style)
        text.append(sentence.text, style=style)
        if self.stage is not None:
            text.append("\n")
            text.append_text(self.stage.legend())
        self.query_one("#narration", Static).update(text)

    def _state_text(self) -> Text:
        if self.player is not None:
            player = self.player
            mark = "▶" if player.playing and not player.finished else "⏸"
            text = Text(
                f"{mark} REPLAY {_clock(player.position - player.start)}"
                f"/{_clock(player.end - player.start)} ×{player.speed:g}",
                style="bold magenta",
            )
            if player.recording.problem:
                text.append(f" ({player.recording.problem})", style="yellow")
            return text
        if self.failure is not None:
            return Text(f"✖ {self.failure}", style="bold red")
        gone = self.timeline.gone
        if gone is not None:
            when = time.strftime("%H:%M:%S", time.localtime(self._wall(gone.t)))
            return Text(f"✖ TARGET GONE at {when} — data kept", style="bold red")
        down = self.timeline.link_down
        if down is not None:
            when = time.strftime("%H:%M:%S", time.localtime(down.wall_start))
            text = Text(f"⚠ LINK DOWN since {when} — data kept", style="bold red")
            remote = self.remote
            if remote is not None and remote.retry_at is not None:
                wait = max(0.0, remote.retry_at - time.monotonic())
                text.append(f"; reconnecting (try {remote.attempt}, next in {wait:.0f} s)",
                            style="yellow")  # fmt: skip
            return text
        if self.paused:
            return Text("⏸ PAUSED", style="bold yellow")
        if self._ended.is_set() and self.collector is not None:
            return Text("✖ collector stopped", style="bold red")
        return Text("● live", style="bold green")

    def _wall(self, mono: float) -> float:
        hello = self.timeline.hello
        if hello is None:
            return self.clock()
        return hello.wall_at_start + (mono - hello.mono_at_start)

    def action_toggle_pause(self) -> None:
        if self.player is not None:
            self.player.playing = not self.player.playing
            self._last_tick = time.monotonic()
        else:
            self.paused = not self.paused
        self.refresh_views(background=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Replay keys exist only in replay; live, the arrows stay with the tables."""
        if action in ("seek", "speed"):
            return self.player is not None
        if action == "stage":
            return self.stage is not None
        return True

    def action_workers(self) -> None:
        """List the master's Python workers (re-read now, so restarted ones appear) to pick."""
        from lifescope.target import python_children

        if self.player is not None or self.pid is None:
            return
        if self.remote is not None:
            self.notify("over ssh://, attach to a worker by its pid: ssh://host/PID")
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
        if self.collector is not None:
            self.collector.stop()
        if self._reader is not None:
            self._reader.join(timeout=3)
        while not self._queue.empty():
            self._queue.get_nowait()
        self.pid = pid
        self._generation += 1
        self._shown_generation = self._generation  # drops a build still running for the old one
        self.timeline = Timeline(horizon_s=LIVE_HORIZON_S)
        self.failure = None
        self._ended.clear()
        self._source = None
        self.last_report = None
        self._start_source()
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
            index = panes.index(current) + 1  # type: ignore[arg-type]
            if index == len(panes):
                self.screen.minimize()
                return
        else:
            index = 0
        self.screen.maximized = panes[index]

    def action_large(self) -> None:
        screen = LargeScreen()
        self.push_screen(screen)
        if self.last_report is not None:
            self.call_after_refresh(screen.show, self.last_report)

    def action_stage(self, key: str) -> None:
        stage = self.stage
        if stage is None:
            return

        def flip() -> None:
            try:
                message = stage.press(key)
            except Exception as exc:  # a child that died must not take the UI down
                self.call_from_thread(
                    self.notify, f"stage key {key} failed: {exc}", severity="error"
                )
                return
            self.call_from_thread(self.notify, message, timeout=6)

        self.run_worker(flip, thread=True, group="stage")

    def action_seek(self, seconds: float) -> None:
        if self.player is not None:
            self.player.step(seconds)
            self.refresh_views()

    def action_speed(self, direction: int) -> None:
        if self.player is not None:
            if direction > 0:
                self.player.faster()
            else:
                self.player.slower()
            self.refresh_views()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on an in-flight request: show the stack of the thread serving it."""
        if event.data_table.id != "in-flight" or event.row_key.value is None:
            return
        tid_text = event.row_key.value.split(":", 1)[1]
        if not tid_text:
            self.notify("no thread serves this one (kernel-side or a parked task)")
            return
        tid = int(tid_text)
        # The stack of the moment on screen: paused (or replaying), the report shown, not now.
        shown = self.last_report.end if self.last_report is not None else None
        end = self.player.position if self.player else (shown if self.paused else None)
        frames = analysis.thread_stack(self.timeline.window(WINDOW_S, end=end), tid)
        when = "at the moment shown" if self.paused else "latest stack"
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

    def on_unmount(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        if self.remote is not None and self._reader is not None:
            self._reader.join(timeout=5)  # it closes the local recording of the session
        if self._restore_signals is not None:
            self._restore_signals()


def _reraise(exc: BaseException) -> None:
    raise exc


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:.0f} MiB"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


__all__ = ["LifescopeApp", "__version__"]
