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
