"""Write SVG (and PNG where possible) screenshots: `python tools/screenshots.py`.

By default the app replays the committed recording `tests/fixtures/demo-session.lsr` (the
demo server with its GIL hog, a slow middleware and a blocking route, under load), paused
at its end, so the images are deterministic and a test can check them. `--live` attaches
to a freshly started demo server instead.

Writes `screenshots/lifescope-80x24.svg` and `screenshots/lifescope-wide.svg` (+ .png), and
each pane alone (zoomed, the `z` key) at both sizes: `screenshots/pane-<pane>-<size>.svg`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from textual.widgets import DataTable

from lifescope.recording import load
from lifescope.replay import Player
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="output directory")
    parser.add_argument("--live", action="store_true", help="attach to a live demo server")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = load_gen = None
    if args.live:
        from lifescope.demo.children import start_demo_server, start_load

        server = start_demo_server(port=0, flags=["--gil-hog"])
        load_gen = start_load(
            server.url,
            rate=40,
            concurrency=8,
            duration=120,
            mix="fast=6,db=3,sleep=2,cpu=1,bigjson=1,block=1",
        )
    try:
        for name, size in SIZES.items():
            for pane in (None, *PANES):
                if server is not None:
                    app = LifescopeApp(server.pid, title_hint="lifescope demo")
                    svg = asyncio.run(render(app, size, settle_s=6.0, pane=pane))
                else:
                    svg = asyncio.run(render(replay_app(), size, pane=pane))
                path = out / (f"pane-{pane}-{name}.svg" if pane else f"lifescope-{name}.svg")
                path.write_text(svg)
                png = to_png(path)
                print(f"wrote {path}" + (f" and {png.name}" if png else ""))
    finally:
        if load_gen is not None:
            load_gen.stop()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
