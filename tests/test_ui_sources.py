"""The app's edge states, driven through its `source=` seam with no live process: samples
recorded from the real demo server (the committed recording), cut or completed with the
stream's own records (a target's exit, a probe's status), played as a live stream.

And the background reports: a stale one (built for a moment no longer on screen) never
replaces a newer one — Textual's exclusive worker group drops it."""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable, Digits, Static

from lifescope.recording import load
from lifescope.replay import Player
from lifescope.samples import Hello, ProbeStatus, TargetGone
from lifescope.ui import app as app_module
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane
from lifescope.ui.source import LiveSource, ReplaySource
from tests.conftest import pilot_until

FIXTURE = Path(__file__).parent / "fixtures" / "demo-session.lsr"


def recorded() -> tuple[object, ...]:
    return load(str(FIXTURE)).samples


def text(app: LifescopeApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def summary(app: LifescopeApp, pane: str) -> str:
    return str(app.query_one(f"#{pane}", Pane).query_one(".summary", Static).render())


async def test_an_empty_stream_says_it_is_reading_and_guesses_nothing() -> None:
    """Only the session header has arrived: the target is named, no model is guessed, the
    » line says it is still reading."""
    hello = next(s for s in recorded() if isinstance(s, Hello))
    app = LifescopeApp(source=[hello])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot_until(pilot, lambda: app.renders > 0 and app.source.ended)  # type: ignore[attr-defined]
        await pilot.pause(0.6)
        assert f"pid {hello.pid}" in text(app, "#header")
        assert "Reading the server" in text(app, "#narration")
        assert "no asyncio loop" not in summary(app, "threads")
        assert "reading…" in summary(app, "threads")
        await pilot.press("q")
    assert app.return_code == 0


async def test_the_first_second_of_a_session_reads_before_it_names_a_model() -> None:
    """The first second of the recording (no stack yet, though the GIL and /proc are in):
    "threads · no asyncio loop seen" would be wrong for this asyncio server."""
    samples = recorded()
    start = min(getattr(s, "t", float("inf")) for s in samples)
    early = [s for s in samples if getattr(s, "t", start) <= start + 0.9]
    app = LifescopeApp(source=early)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot_until(pilot, lambda: app.source.ended and app.renders > 1)  # type: ignore[attr-defined]
        await pilot.pause(0.6)
        assert "reading…" in summary(app, "threads")
        assert "no asyncio loop" not in summary(app, "threads")
        assert "calm" not in text(app, "#narration").lower()
        await pilot.press("q")


async def test_a_target_that_exits_keeps_its_data_and_says_so() -> None:
    samples = recorded()
    last = max(getattr(s, "t", 0.0) for s in samples)
    app = LifescopeApp(source=[*samples, TargetGone(last + 0.1, "process exited")])
    async with app.run_test(size=(80, 24)) as pilot:
        header = app.query_one("#header", Static)
        await pilot_until(pilot, lambda: "TARGET GONE" in str(header.render()))
        await pilot_until(pilot, lambda: "The server is gone" in text(app, "#narration"))
        threads = app.query_one("#threads", Pane).query_one(DataTable)
        assert threads.row_count > 0, "the data seen before the exit stays on screen"
        await pilot.press("q")


async def test_a_denied_probe_says_why_and_how_to_fix_it_in_its_own_pane() -> None:
    samples = [
        s
        for s in recorded()
        if not (isinstance(s, ProbeStatus) and s.probe == "threads")
    ]
    first = min(getattr(s, "t", float("inf")) for s in samples)
    denied = ProbeStatus(
        first, "threads", "denied", "cannot read /proc/PID/task", "run lifescope as root"
    )
    app = LifescopeApp(source=[denied, *samples])
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot_until(pilot, lambda: "denied" in summary(app, "threads"))
        shown = summary(app, "threads")
        assert "cannot read /proc/PID/task" in shown and "fix: run lifescope as root" in shown
        gil = app.query_one("#gil", Pane).query_one(DataTable)
        await pilot_until(pilot, lambda: gil.row_count > 0)  # the other panes keep working
        await pilot.press("q")


async def test_live_and_replay_are_one_protocol() -> None:
    live = LiveSource(samples=lambda: iter(recorded()))
    replay = ReplaySource(Player(load(str(FIXTURE))))
    for source in (live, replay):
        source.start()
        source.advance()
        assert source.timeline is not None
        state = source.state(False, lambda t: t)
        assert state.text and state.style
    assert replay.can_seek and not live.can_seek
    assert not live.can_switch  # samples handed in: there is no process to switch from
    live.stop()


async def test_a_stale_background_report_never_replaces_a_newer_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow build for one replay position is under way when a seek shows another: the
    slow one finishes later, and the screen keeps the position the seek showed."""
    monkeypatch.setattr(app_module, "SLOW_BUILD_S", 0.0)  # every timer build off the UI thread
    from lifescope.analysis import report as analysis

    real_build = analysis.build
    armed, release = threading.Event(), threading.Event()
    stalled: list[float] = []

    def build(window, *args, **kwargs):  # type: ignore[no-untyped-def]
        off_ui = threading.current_thread() is not threading.main_thread()
        if off_ui and armed.is_set() and not stalled:
            stalled.append(window.end)
            release.wait(10)  # the first background build once armed is slow
        return real_build(window, *args, **kwargs)

    monkeypatch.setattr(analysis, "build", build)
    player = Player(load(str(FIXTURE)))
    player.seek(player.start + 1.0)
    app = LifescopeApp(player=player)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("p")  # paused: the position moves only when asked
        await pilot_until(pilot, lambda: app.renders > 0)
        app.slow_builds = True
        armed.set()
        player.step(1.0)  # the next timer tick builds this moment off the UI thread, slowly
        await pilot_until(pilot, lambda: bool(stalled))
        assert app.building
        await pilot.press("right")  # a newer moment, built and shown at once
        shown = app.last_report
        assert shown is not None and shown.end == pytest.approx(player.position)
        assert not app.building, "the stale build was cancelled"
        release.set()
        await pilot.pause(1.0)
        assert app.last_report is not None
        assert app.last_report.end == pytest.approx(player.position)
        assert app.last_report.end != pytest.approx(stalled[0])
        await pilot.press("q")


async def test_one_key_reaches_the_in_flight_table_and_enter_shows_a_stack() -> None:
    """At 80×24 the ladder fills the Request layers pane: `i` zooms it and puts the cursor
    in the in-flight table, Enter opens the serving thread's stack at the moment shown."""
    player = Player(load(str(FIXTURE)))
    player.seek(player.end)
    app = LifescopeApp(player=player)
    async with app.run_test(size=(80, 24)) as pilot:
        flights = app.query_one("#in-flight", DataTable)
        await pilot_until(pilot, lambda: flights.row_count > 0)
        shown = {b.binding.key for b in app.active_bindings.values() if b.binding.show}
        assert "i" in shown, "the footer names the key"
        await pilot.press("p", "i")
        await pilot.pause(0.3)
        assert app.screen.maximized is app.query_one("#layers")
        assert flights.has_focus and flights.show_cursor
        keys = [str(k.value) for k in flights.rows]
        served = next((i for i, k in enumerate(keys) if k.split(":")[1]), None)
        assert served is not None, keys
        flights.move_cursor(row=served)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "StackScreen"
        assert "at the moment shown" in str(app.screen.query_one(Static).render())
        await pilot.press("escape", "i")  # i again: the four panes back
        await pilot.pause(0.3)
        assert app.screen.maximized is None
        await pilot.press("q")


async def test_the_gil_table_is_ordered_by_gil_share() -> None:
    """The GIL hog appears after the idle threads did; it still goes to the top (a table that
    only appended new rows left it under them)."""
    samples = recorded()
    app = LifescopeApp(source=samples)
    async with app.run_test(size=(140, 40)) as pilot:
        gil = app.query_one("#gil", Pane).query_one(DataTable)
        await pilot_until(pilot, lambda: app.source.ended and gil.row_count >= 3)  # type: ignore[attr-defined]
        await pilot.pause(1.2)
        report = app.last_report
        assert report is not None
        by_share = sorted(
            (t for t in report.threads if t.gil_share is not None),
            key=lambda t: (-(t.gil_share or 0.0), t.tid),
        )
        assert [str(k.value) for k in gil.rows] == [str(t.tid) for t in by_share]
        assert str(gil.get_row_at(0)[0]) == "gil-hog"
        await pilot.press("q")


async def test_the_header_gives_slow_probes_their_real_rate() -> None:
    """The sockets and tasks probes sample at about 1-2/s: rounded to a whole number they read
    "0/s" while their panes updated. Standby probes are not listed (healthy, not needed)."""
    app = LifescopeApp(source=recorded())
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot_until(pilot, lambda: app.source.ended and app.renders > 1)  # type: ignore[attr-defined]
        await pilot.pause(0.6)
        cost = text(app, "#header").splitlines()[1]
        report = app.last_report
        assert report is not None
        sockets = next(p for p in report.probes if p.name == "sockets")
        assert 0 < sockets.rate_hz < 10
        assert f"sockets {sockets.rate_hz:.1f}/s" in cost, cost
        assert not re.search(r"\b(sockets|tasks) 0/s", cost), cost
        standby = [p.name for p in report.probes if p.status == "standby"]
        assert all(f"{name} " not in cost for name in standby), cost
        await pilot.press("q")


def test_the_load_shedding_note_is_kept_at_80_columns() -> None:
    """It showed only from ~220 columns: the rates on screen are lowered, so it must show."""
    from lifescope.analysis import report as analysis
    from lifescope.ui import header
    from lifescope.ui.source import State

    player = Player(load(str(FIXTURE)))
    player.seek(player.end)
    result = analysis.build(player.timeline.window(10.0))
    shedding = dataclasses.replace(result, cost=dataclasses.replace(result.cost, rate_scale=0.25))
    hello = player.timeline.hello
    for width in (80, 140, 220):
        lines = header.render(width, State("● live", "bold green"), hello, shedding).plain
        assert "sampling at ×0.25" in lines.splitlines()[1], (width, lines)
        assert all(len(line) <= width for line in lines.splitlines())


def test_columns_that_do_not_fit_are_left_out_never_cut() -> None:
    from lifescope.ui.tables import PADDING, Column, plan_columns

    plan = (
        Column("name", "thread", elide="end", max_width=14),
        Column("doing", "now"),
        Column("strip", "last 10s", priority=2, elide="start", flex=True),
        Column("cpu", "cpu", priority=1, right=True),
    )
    widest = {"name": 13, "doing": 15, "strip": 24, "cpu": 4}  # clock_nanosleep is 15
    for room in (37, 38, 50):
        shown = dict(plan_columns(plan, widest, room))
        assert sum(w + PADDING for w in shown.values()) <= room
        assert shown["doing"] == 15, "clock_nanosleep is never cut to clock_nanoslee"
    assert dict(plan_columns(plan, widest, 37)) == {"name": 13, "doing": 15}  # cpu left out
    assert dict(plan_columns(plan, widest, 38)) == {"name": 13, "doing": 15, "cpu": 4}
    wide = dict(plan_columns(plan, widest, 67))
    assert wide["doing"] == 15 and wide["cpu"] == 4 and wide["strip"] == 24


async def test_a_target_without_a_gil_shows_what_runs_at_once_instead() -> None:
    """A free-threaded target: the GIL pane says there is no GIL and how many threads run at
    once, never a held share, at 80×24 too."""
    reason = "no GIL: free-threaded CPython 3.14.10t with the GIL disabled"
    samples = [s for s in recorded() if not (isinstance(s, ProbeStatus) and s.probe == "gil")]
    last = max(getattr(s, "t", 0.0) for s in samples)
    app = LifescopeApp(
        source=[*samples, ProbeStatus(last, "gil", "unavailable", reason, "nothing to fix")]
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot_until(pilot, lambda: "no GIL" in summary(app, "gil"))
        shown = summary(app, "gil")
        assert "threads runnable at once" in shown and "held" not in shown, shown
        assert app.query_one("#gil", Pane).query_one(DataTable).row_count == 0
        await pilot.press("q")


def test_columns_that_must_show_are_narrowed_or_left_out_not_run_off_the_edge() -> None:
    """The connections table once had a long phase (accept-queue) in its widths: peer, phase
    and queues did not fit, and the queues ran past the pane's edge ("rq", no numbers)."""
    from lifescope.ui.panes import ConnectionsPane
    from lifescope.ui.tables import PADDING, plan_columns

    widest = {"peer": 15, "phase": 12, "q": 5, "rtt": 6, "thread": 10}
    shown = dict(plan_columns(ConnectionsPane.COLUMNS, widest, 37))
    assert sum(w + PADDING for w in shown.values()) <= 37
    assert shown["q"] == 5 and shown["phase"] == 12  # numbers and states whole
    assert 8 <= shown["peer"] < 15  # the address narrowed ("…0.0.1:51802"), its port kept
    tiny = dict(plan_columns(ConnectionsPane.COLUMNS, widest, 20))
    assert sum(w + PADDING for w in tiny.values()) <= 20 and "q" not in tiny


async def test_the_large_screen_half_built_is_filled_on_a_later_tick() -> None:
    """Under a CPU hog the refresh tick reached the large screen before its digits were
    composed and the app died with NoMatches ('#large-gil'). A report for a screen with no
    widgets yet is skipped; the screen, once built, shows the next one."""
    player = Player(load(str(FIXTURE)))
    player.seek(player.end)
    app = LifescopeApp(player=player)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot_until(pilot, lambda: app.last_report is not None)
        report = app.last_report
        assert report is not None
        app_module.LargeScreen().show(report)  # nothing composed: skipped, not raised
        await pilot.press("l")
        gil = app.screen.query_one("#large-gil", Digits)
        await pilot_until(pilot, lambda: gil.value not in ("", "—"))
        await pilot.press("escape", "q")
    assert app.return_code == 0
