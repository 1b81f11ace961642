"""`lifescope demo --web` serves the demo, not a bare attach: a browser visitor sees the demo's
title and stage line, and its number keys switch the demo server's pathologies."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time

import pytest

from lifescope.demo.children import control_request
from tests.conftest import PYTHON, connects, free_port, stop_pid, wait_for

pytest.importorskip("textual_serve")
aiohttp = pytest.importorskip("aiohttp")

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def test_the_web_page_is_the_demo_with_its_stage() -> None:
    port = free_port()
    demo = subprocess.Popen(
        [PYTHON, "-m", "lifescope", "demo", "--web", str(port), "--rate", "20"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    found: dict[str, float] = {}

    async def visit() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://localhost:{port}/ws?width=100&height=30")
            await ws.send_json(["resize", {"width": 100, "height": 30}])
            opened = time.monotonic()
            screen = b""
            url = None
            while time.monotonic() - opened < 60 and (url is None or "stage" not in found):
                msg = await ws.receive(timeout=60)
                if isinstance(msg.data, str | bytes):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    screen += ANSI.sub(b"", data)
                match = re.search(rb"demo server on (http://127\.0\.0\.1:\d+)", screen)
                if match and url is None:
                    url = match.group(1).decode()
                    found["title"] = time.monotonic() - opened
                if b"[1]" in screen and b"[8]" in screen and "stage" not in found:
                    found["stage"] = time.monotonic() - opened
            assert url is not None, "no 'demo server on …' header: a bare attach was served"
            assert "stage" in found, "no stage line: a bare attach was served"
            print(f"first screen with the title {found['title']:.1f} s, stage line "
                  f"{found['stage']:.1f} s after the page's socket opened")  # fmt: skip

            await ws.send_json(["stdin", "5"])  # the GIL hog, from the browser
            await asyncio.to_thread(
                wait_for, lambda: _toggle(url, "gil_hog") > 0, 15.0
            )
            await ws.send_json(["stdin", "5"])
            await asyncio.to_thread(wait_for, lambda: _toggle(url, "gil_hog") == 0, 15.0)
            await ws.close()

    try:
        wait_for(lambda: connects(port), timeout=40)
        asyncio.run(visit())
    finally:
        stop_pid(demo)  # SIGTERM: the demo stops its server, load and visitors


def _toggle(url: str, name: str) -> float:
    toggles = control_request(url)["toggles"]
    assert isinstance(toggles, dict)
    return float(toggles[name])
