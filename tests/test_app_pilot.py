"""The real Textual app, driven by Pilot, attached to a real demo server."""

from __future__ import annotations

import os
import threading
import time

import pytest
from textual import events
from textual.widgets import DataTable, Static

from lifescope.demo.children import DemoServer, LoadGen
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane
from tests.conftest import pilot_until as wait_until


def rows(app: LifescopeApp, pane_id: str) -> int:
    return app.query_one(f"#{pane_id}", Pane).query_one(DataTable).row_count


async def test_all_four_panes_fill_from_a_live_server(
    loaded_demo: tuple[DemoServer, LoadGen],
) -> None:
    server, _ = loaded_demo
    app = LifescopeApp(server.pid)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(
            pilot,
            lambda: all(rows(app, p) > 0 for p in ("connections", "layers", "threads", "gil")),
        )
        header = str(app.query_one("#header", Static).render())
        assert f"pid {server.pid}" in header
        assert "● live" in header
        threads = app.query_one("#threads", Pane).query_one(DataTable)
        names = {str(threads.get_row_at(i)[0]) for i in range(threads.row_count)}
        assert "gil-hog" in names
        collector_pid = app.collector.pid if app.collector else None
        assert collector_pid is not None

        await pilot.press("p")
        assert app.paused
        renders = app.renders
        await pilot.pause(1.2)
        assert app.renders == renders, "a paused app must not re-render panes"
        assert "PAUSED" in str(app.query_one("#header", Static).render())
        await pilot.press("p")
        assert not app.paused

        # A thread row (the loop thread caught in a request's callback) comes and goes with
        # each refresh: pause on one, so Enter selects what is on screen. Every 10th request
        # blocks the loop for 300 ms, so a request holds the loop thread most of the time; by
        # chance alone (the GIL hog beside it, a CPU hog on the machine) none did for 20 s in
        # 2 of 6 runs.
        server.set_toggle("block_loop", 10)
        flights = app.query_one("#in-flight", DataTable)
        for _ in range(20):
            await wait_until(pilot, lambda: any(str(k.value).split(":")[1] for k in flights.rows))
            await pilot.press("p")
            if any(str(k.value).split(":")[1] for k in flights.rows):
                break
            await pilot.press("p")
        keys = [str(k.value) for k in flights.rows]
        row = next(i for i, k in enumerate(keys) if k.split(":")[1])
        flights.focus()
        flights.move_cursor(row=row)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen.__class__.__name__ == "StackScreen"
        shown = str(app.screen.query_one(Static).render())
        assert "at the moment shown" in shown and "(" in shown  # paused: the stack on screen
        await pilot.press("escape")
        await pilot.press("p")

        conns = app.query_one("#connections", Pane)
        await pilot.press("f")  # request only
        await pilot.pause(0.6)
        table = conns.query_one(DataTable)
        phases = {str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert phases <= {"request"}, phases
        assert "f:request" in str(conns.border_subtitle)
        await pilot.press("o")
        assert "o:rtt" in str(conns.border_subtitle)

        await pilot.press("question_mark")
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("q")
    assert app.return_code == 0
    # the collector child is stopped by pid when the app ends
    assert (
        not os.path.exists(f"/proc/{collector_pid}")
        or open(f"/proc/{collector_pid}/stat").read().split(") ")[1][0] in "ZX"
    )


async def test_slow_reports_are_built_off_the_ui_thread(
    loaded_demo: tuple[DemoServer, LoadGen], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every build counted as slow (a 10k-connection server's are 0.3-0.6 s), the timer's
    reports are built by a thread worker, off the UI thread, and still reach the panes; pause
    still freezes them; the state line answers the key at once."""
    from lifescope.analysis import report as analysis
    from lifescope.ui import app as app_module

    monkeypatch.setattr(app_module, "SLOW_BUILD_S", 0.0)
    built_on: list[str] = []
    real_build = analysis.build

    def watched_build(*args, **kwargs):  # type: ignore[no-untyped-def]
        built_on.append(threading.current_thread().name)
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.4)  # slow for real: a build is still running when `p` is pressed
        return real_build(*args, **kwargs)

    monkeypatch.setattr(analysis, "build", watched_build)
    server, _ = loaded_demo
    app = LifescopeApp(server.pid)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(
            pilot,
            lambda: all(rows(app, p) > 0 for p in ("connections", "layers", "threads", "gil")),
        )
        assert app.slow_builds
        ui = threading.main_thread().name
        await wait_until(pilot, lambda: sum(name != ui for name in built_on) >= 3)
        renders = app.renders
        await wait_until(pilot, lambda: app.renders > renders)

        builds = len(built_on)
        await wait_until(pilot, lambda: len(built_on) > builds)  # one is under way now
        renders = app.renders
        app.post_message(events.Key("p", "p"))
        await pilot.pause(0.05)
        assert "PAUSED" in str(app.query_one("#header", Static).render())
        await pilot.pause(1.5)  # the build under way at the press ends in here
        assert app.renders == renders, "a paused app must not re-render panes"
        app.post_message(events.Key("p", "p"))
        await pilot.pause(0.05)
        assert "● live" in str(app.query_one("#header", Static).render())
        try:
            await wait_until(pilot, lambda: app.renders > renders)
        except AssertionError as exc:  # seen once under a CPU hog; say what the app was doing
            worker = app._report_worker
            raise AssertionError(
                f"no render after resuming: building={app.building}, "
                f"worker={worker.state if worker else None}, builds={len(built_on)}, "
                f"slow_builds={app.slow_builds}, paused={app.paused}"
            ) from exc
        await pilot.press("q")


async def test_a_failing_background_build_fails_the_app_loudly(
    loaded_demo: tuple[DemoServer, LoadGen], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in a report built by a worker must not freeze the panes silently: it
    reaches the app's own loop, which ends the app with it, as an inline one."""
    from lifescope.analysis import report as analysis
    from lifescope.ui import app as app_module

    monkeypatch.setattr(app_module, "SLOW_BUILD_S", 0.0)
    real_build = analysis.build
    failing = threading.Event()

    def build(*args, **kwargs):  # type: ignore[no-untyped-def]
        if failing.is_set() and threading.current_thread() is not threading.main_thread():
            raise ZeroDivisionError("a bug in the analysis")
        return real_build(*args, **kwargs)

    monkeypatch.setattr(analysis, "build", build)
    server, _ = loaded_demo
    app = LifescopeApp(server.pid)
    with pytest.raises(ZeroDivisionError, match="a bug in the analysis"):
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: app.renders > 0 and app.slow_builds)
            failing.set()
            await pilot.pause(3.0)
