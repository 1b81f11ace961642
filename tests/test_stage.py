"""The stage: number keys flip the demo's pathologies live, the overlay names them, and the
large-text screen shows the headline numbers — driven through the real app."""

from __future__ import annotations

from textual.widgets import Digits, Static

from lifescope.demo.children import start_demo_server, start_load
from lifescope.ui.app import LargeScreen, LifescopeApp, Stage
from tests.conftest import pilot_until as until


async def test_stage_keys_flip_pathologies_and_the_overlay_names_them() -> None:
    server = start_demo_server(port=0)
    load = start_load(server.url, rate=30, concurrency=6, duration=60, mix="fast=5,db=1")
    try:
        stage = Stage(server, load)
        app = LifescopeApp(server.pid, stage=stage)
        async with app.run_test(size=(100, 30)) as pilot:
            narration = app.query_one("#narration", Static)
            await until(pilot, lambda: "stage [1]" in str(narration.render()), timeout=30)
            assert "[8]flood" in str(narration.render())  # all eight keys fit in 100 columns
            await pilot.press("4")  # blocking call in the loop
            # Named at once as switched on, then as measured, by its own function. Watched
            # from the press: asking the server first (a request its blocked loop answers
            # late on a busy machine) once let the measured sentence replace it unseen.
            await until(pilot, lambda: "switched on" in str(narration.render()), timeout=5)
            await until(pilot, lambda: server.toggles().get("block_loop", 0) > 0)
            await until(
                pilot,
                lambda: "event loop is blocked in blocking_call" in str(narration.render()),
                timeout=30,
            )
            await pilot.press("4")
            await until(pilot, lambda: server.toggles().get("block_loop", 1) == 0)
            assert "4" not in stage.on

            await pilot.press("l")
            assert isinstance(app.screen, LargeScreen)
            gil = app.screen.query_one("#large-gil", Digits)
            await until(pilot, lambda: gil.value not in ("", "—"))
            assert 0 <= int(gil.value) <= 100
            await pilot.press("escape")
            await pilot.press("q")
        assert app.return_code == 0
    finally:
        load.stop()
        server.stop()


async def test_stage_keys_do_nothing_outside_the_demo(demo_server) -> None:  # type: ignore[no-untyped-def]
    app = LifescopeApp(demo_server.pid)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(1.0)
        await pilot.press("6")
        await pilot.pause(0.5)
        assert demo_server.toggles().get("accept_stall", 0) == 0
        await pilot.press("q")
