"""Snapshot tests: the app replaying a committed real recording renders exactly the committed
screenshots, at 80×24 and wide. A UI change that alters them must regenerate them with
`python tools/screenshots.py` (and a person should look at the result)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import screenshots  # noqa: E402


@pytest.mark.parametrize("name", ["80x24", "wide"])
async def test_screens_match_the_committed_screenshots(name: str) -> None:
    svg = await screenshots.render(screenshots.replay_app(), screenshots.SIZES[name])
    committed = (ROOT / "screenshots" / f"lifescope-{name}.svg").read_text()
    for title in ("Connections", "Request", "Threads", "GIL", "REPLAY"):
        assert title in svg
    assert svg == committed, "UI changed: run `python tools/screenshots.py` and look at it"


@pytest.mark.parametrize("pane", screenshots.PANES)
async def test_each_pane_zoomed_matches_its_committed_screenshot(pane: str) -> None:
    svg = await screenshots.render(screenshots.replay_app(), screenshots.SIZES["80x24"], pane=pane)
    committed = (ROOT / "screenshots" / f"pane-{pane}-80x24.svg").read_text()
    assert svg == committed, "UI changed: run `python tools/screenshots.py` and look at it"


async def test_zoom_key_cycles_through_the_panes() -> None:
    from lifescope.ui.panes import Pane

    app = screenshots.replay_app()
    async with app.run_test(size=(80, 24)) as pilot:
        seen = []
        for _ in range(5):
            await pilot.press("z")
            shown = app.screen.maximized
            seen.append(shown.id if isinstance(shown, Pane) else None)
        assert seen == [*screenshots.PANES, None]
        await pilot.press("q")
