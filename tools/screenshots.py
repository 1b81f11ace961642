"""Write SVG (and PNG where possible) screenshots: `python tools/screenshots.py`.

Two sets, for two readers:

* the snapshot tests' (`tests/test_screenshots.py`): the app replaying the committed recording
  `tests/fixtures/demo-session.lsr` (the demo server with its GIL hog, a slow middleware and a
  blocking route, under load), paused at its end, so the images are deterministic —
  `screenshots/lifescope-{80x24,wide}.svg` and each pane zoomed, `pane-<pane>-<size>.svg`;
* the README's (`--live`): `lifescope demo` as a user sees it — the demo server and its
  default load, the stage line, a key pressed (5, the GIL hog) and the » line naming it —
  `screenshots/demo-{80x24,wide}.svg` and `demo-pane-<pane>-<size>.svg`. A test checks that
  the running demo still has the layout these show (`tests/test_readme_screenshots.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

from textual.widgets import DataTable, Static

from lifescope.demo.children import DemoServer, LoadGen
from lifescope.recording import load
from lifescope.replay import Player
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane
from lifescope.ui.stage import Stage

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "tests" / "fixtures" / "demo-session.lsr"
SIZES = {"80x24": (80, 24), "wide": (140, 40)}
PANES = ("connections", "layers", "threads", "gil")


def replay_app(recording: Path = RECORDING) -> LifescopeApp:
    player = Player(load(str(recording)))
    player.seek(player.end)
    player.playing = False
    return LifescopeApp(player=player, title_hint="lifescope demo (recorded)")


async def render(
    app: LifescopeApp, size: tuple[int, int], settle_s: float = 0.0, pane: str | None = None
) -> str:
    """The app's screen as SVG once it is complete and still; with `pane`, that pane zoomed.

    Complete: every pane has rows and the footer its keys (Textual composes the footer after
    the first frames: a fixed settle time missed it on a busy machine, and 3 of 5 runs of the
    snapshot tests failed). Still: two exports in a row are the same."""
    async with app.run_test(size=size) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60

        def complete() -> bool:
            return (
                all(p.query_one(DataTable).row_count for p in app.query(Pane))
                and bool(app.query("FooterKey"))  # the footer has drawn its keys
                and not app.building
            )

        while loop.time() < deadline and not complete():
            await pilot.pause(0.1)
        if pane is not None:
            app.screen.maximized = app.query_one(f"#{pane}", Pane)
        await pilot.pause(settle_s or 0.1)
        svg = app.export_screenshot(title="lifescope")
        while loop.time() < deadline:
            await pilot.pause(0.2)
            again = app.export_screenshot(title="lifescope")
            if again == svg:
                break
            svg = again
        await pilot.press("q")
    return svg


def to_png(svg_path: Path) -> Path | None:
    png = svg_path.with_suffix(".png")
    if shutil.which("rsvg-convert"):
        subprocess.run(["rsvg-convert", "-o", str(png), str(svg_path)], check=True)
        return png
    return None


DEMO_KEY = "5"
"""The stage key pressed for the README's images: the GIL hog shows in every pane."""
DEMO_NAMED = {"5": "(gil-hog)"}
"""What the » line says once the numbers show the key's pathology (not only "switched on")."""


def demo_app(server: DemoServer, load_gen: LoadGen) -> LifescopeApp:
    """The app exactly as `lifescope demo` builds it."""
    return LifescopeApp(
        server.pid, title_hint=f"demo server on {server.url}", stage=Stage(server, load_gen)
    )


async def render_live(
    app: LifescopeApp, size: tuple[int, int], key: str | None = DEMO_KEY, settle_s: float = 90.0
) -> dict[str | None, str]:
    """The live demo's screen, then each pane zoomed (keyed by pane, None for the whole),
    once the screen is complete and — with `key` pressed — the » line names what it switched
    on from the numbers (not only "switched on"), or `settle_s` has passed."""
    shots: dict[str | None, str] = {}
    async with app.run_test(size=size) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settle_s

        def complete() -> bool:
            return all(p.query_one(DataTable).row_count for p in app.query(Pane)) and bool(
                app.query("FooterKey")
            )

        while loop.time() < deadline and not complete():
            await pilot.pause(0.2)

        def young() -> bool:  # less than a full window: anyone watching 10 s sees one
            return app.last_report is None or app.last_report.window_s < 9.5

        while loop.time() < deadline and young():
            await pilot.pause(0.5)
        if key is not None:
            await pilot.press(key)
            narration = app.query_one("#narration", Static)
            named = DEMO_NAMED.get(key, "")
            while loop.time() < deadline and named not in str(narration.render()):
                await pilot.pause(0.5)
        await pilot.pause(1.0)
        for pane in (None, *PANES):
            if pane is not None:
                app.screen.maximized = app.query_one(f"#{pane}", Pane)
            await pilot.pause(0.6)  # a refresh at the new size
            shots[pane] = app.export_screenshot(title="lifescope demo")
            app.screen.minimize()
        await pilot.press("q")
    return shots


def svg_text(svg: str) -> list[str]:
    """The characters of a screenshot, row by row, as a terminal would show them."""
    cell = re.search(r'textLength="([\d.]+)"[^>]*>([^<]*)</text>', svg)
    width = 12.2
    if cell is not None:
        chars = len(html.unescape(cell.group(2)))
        width = float(cell.group(1)) / max(1, chars)
    rows: dict[int, list[str]] = {}
    for x, line, text in re.findall(
        r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
        r'clip-path="url\(#terminal-\d+-line-(\d+)\)">([^<]*)</text>',
        svg,
    ):
        row = rows.setdefault(int(line), [])
        col = round(float(x) / width)
        for i, char in enumerate(html.unescape(text).replace("\xa0", " ")):
            while len(row) <= col + i:
                row.append(" ")
            row[col + i] = char
    return ["".join(rows.get(i, [])).rstrip() for i in range(max(rows, default=-1) + 1)]


def write(path: Path, svg: str) -> None:
    path.write_text(svg)
    png = to_png(path)
    print(f"wrote {path}" + (f" and {png.name}" if png else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="output directory")
    parser.add_argument("--live", action="store_true",
                        help="the README's images, from a live `lifescope demo`")  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.live:
        for name, size in SIZES.items():
            for pane in (None, *PANES):
                svg = asyncio.run(render(replay_app(), size, pane=pane))
                write(out / (f"pane-{pane}-{name}.svg" if pane else f"lifescope-{name}.svg"), svg)
        return 0
    from lifescope.demo.children import start_demo_server, start_load

    # The demo's own defaults (`lifescope demo`): its server, its load, its mix.
    server = start_demo_server(port=0)
    load_gen = None
    try:
        load_gen = start_load(server.url, rate=40.0, concurrency=8, duration=600.0,
                              mix="fast=6,db=3,sleep=2,cpu=1,bigjson=1")  # fmt: skip
        for name, size in SIZES.items():
            shots = asyncio.run(render_live(demo_app(server, load_gen), size))
            for pane, svg in shots.items():
                stem = f"demo-pane-{pane}-{name}" if pane else f"demo-{name}"
                write(out / f"{stem}.svg", svg)
            server.set_toggle("gil_hog", 0)  # the next size starts from the same stage
    finally:
        if load_gen is not None:
            load_gen.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
