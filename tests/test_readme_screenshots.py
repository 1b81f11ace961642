"""The README's screenshots are of `lifescope demo` as it runs today: a live demo server, its
load and the app built as `lifescope demo` builds it are rendered here, and the committed
images must have the same screen — header, pane layout and titles, stage line, footer. The
numbers move, so they are not compared; the layout, the words and what is on screen are.

Regenerate with `python tools/screenshots.py --live` (and look at the PNGs)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifescope.demo.children import DemoServer, LoadGen, start_demo_server, start_load

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import screenshots  # noqa: E402

README = (ROOT / "README.md").read_text()
CORNERS = "╭╮╰╯"
TITLES = ("Connections", "Request layers", "Threads & coroutines", "GIL")
HEADER = r" lifescope\s+● live\s+pid \d+ · .*demo server on http://127\.0\.0\.1:\d+$"


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[DemoServer, LoadGen]]:
    server = start_demo_server(port=0)
    load = start_load(server.url, rate=40.0, concurrency=8, duration=300.0,
                      mix="fast=6,db=3,sleep=2,cpu=1,bigjson=1")  # fmt: skip
    try:
        yield server, load
    finally:
        load.stop()
        server.stop()


def _skeleton(rows: list[str]) -> dict[str, object]:
    """What must match: the frame's columns and titles, the header's shape, stage, footer."""
    legend = next(row for row in rows if "[1]" in row and "[8]" in row)
    return {
        "header": bool(re.match(HEADER, rows[0])),
        "cost": rows[1].startswith(" cost: cpu "),
        "corner columns": sorted({i for row in rows for i, c in enumerate(row) if c in CORNERS}),
        "corner rows": sum(1 for row in rows if any(c in CORNERS for c in row)),
        "titles": {t: next(row.index(t) for row in rows if t in row) for t in TITLES},
        "sentence": any(row.lstrip().startswith("» ") for row in rows),
        "legend": legend.strip(),
        "footer": rows[-1].split("▏")[0].strip(),
    }


@pytest.mark.parametrize("size", ["80x24", "wide"])
def test_the_readme_screenshots_are_of_the_running_demo(
    size: str, demo: tuple[DemoServer, LoadGen]
) -> None:
    name = f"demo-{size}.svg"
    committed = screenshots.svg_text((ROOT / "screenshots" / name).read_text())
    server, load = demo
    app = screenshots.demo_app(server, load)
    live_svg = asyncio.run(screenshots.render_live(app, screenshots.SIZES[size], key=None))[None]
    live = screenshots.svg_text(live_svg)
    assert len(committed) == len(live) == screenshots.SIZES[size][1]
    shown, running = _skeleton(committed), _skeleton(live)
    assert shown == running, "\n".join(["committed:", *committed, "", "running:", *live])
    assert all(shown[k] for k in ("header", "cost", "sentence")), shown


def test_every_image_the_readme_shows_exists() -> None:
    assert "](screenshots/demo-80x24.svg)" in README, "the README opens on the live demo"
    for path in re.findall(r"\((screenshots/[^)]+\.svg)\)", README):
        assert (ROOT / path).is_file(), path
