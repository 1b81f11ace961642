"""Write SVG screenshots of the app attached to the demo server: `python tools/screenshots.py`.

Starts the demo server (with its GIL-hog thread) and a bounded loopback load, attaches the
real app headless at 80×24 and at a wide size, waits until every pane has rows, saves
`screenshots/lifescope-80x24.svg` and `screenshots/lifescope-wide.svg`, and stops everything
it started.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from textual.widgets import DataTable

from lifescope.demo.children import start_demo_server, start_load
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane

SIZES = {"80x24": (80, 24), "wide": (140, 40)}


async def shoot(pid: int, size: tuple[int, int], path: Path, settle_s: float = 6.0) -> None:
    app = LifescopeApp(pid, title_hint="lifescope demo")
    async with app.run_test(size=size) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            if all(p.query_one(DataTable).row_count for p in app.query(Pane)):
                break
            await pilot.pause(0.25)
        await pilot.pause(settle_s)  # let shares settle over a few seconds of load
        path.parent.mkdir(parents=True, exist_ok=True)
        app.save_screenshot(filename=path.name, path=str(path.parent))
        await pilot.press("q")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="screenshots", help="directory for the SVG files")
    args = parser.parse_args()
    out = Path(args.out)
    server = start_demo_server(port=0, flags=["--gil-hog"])
    load = start_load(
        server.url,
        rate=40,
        concurrency=8,
        duration=120,
        mix="fast=6,db=3,sleep=2,cpu=1,bigjson=1,block=1",
    )
    try:
        for name, size in SIZES.items():
            path = out / f"lifescope-{name}.svg"
            asyncio.run(shoot(server.pid, size, path))
            print(f"wrote {path}")
    finally:
        load.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
