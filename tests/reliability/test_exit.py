"""Nothing lifescope starts outlives it: a closed terminal (tmux kill-session, the SIGHUP a
dropped SSH session sends), SIGTERM, SIGINT, a browser tab of `demo --web` that goes away, and
SIGKILL. Each is tried on a machine kept busy by CPU hogs, because that is where the first
version was seen stuck (issue 16: the UI wedged in Textual's writer thread, re-parented to init,
with its demo server and load generator)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import psutil
import pytest

from tests.conftest import PYTHON, connects, free_port, wait_for
from tests.screen import Tmux, needs_tmux

GONE_WITHIN_S = 5.0
"""lifescope's own bound is 2 s (lifecycle.EXIT_GRACE_S); the rest is slack for a machine whose
every core is busy, where a process may wait a while to be scheduled."""


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """One spinning process per core for the length of the test, stopped by pid."""
    hogs = [
        subprocess.Popen(
            [PYTHON, "-c", "import time\nend = time.time() + 120\nwhile time.time() < end: pass"]
        )
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(proc: psutil.Process) -> list[str]:
    """A process in the tree may be a short-lived child that has just exited (a zombie until
    its parent reaps it); it has no command line left to read, and nothing left to outlive us."""
    try:
        return proc.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def _name(proc: psutil.Process) -> str:
    """A 1 s py-spy window may end and be reaped between listing the children and asking
    one its name (psutil.NoSuchProcess once, under a CPU hog)."""
    try:
        return proc.name()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _wait_gone(procs: list[psutil.Process]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < GONE_WITHIN_S:
        if not any(_alive(p) for p in procs):
            return time.monotonic() - started
        time.sleep(0.05)
    left = [f"{p.pid} {' '.join(_cmdline(p)[:4])}" for p in procs if _alive(p)]
    raise AssertionError(f"still running {GONE_WITHIN_S} s later: {left}")


def _kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        if _alive(proc):
            proc.kill()


PYSPY = {"LIFESCOPE_NATIVE_STACKS": "0"}
"""Stacks from py-spy, as pre-fork masters and 3.14+ get them: one more process (a new one
every second or five) that must not outlive us; by default a single process is walked from
the collector's own GIL loop."""


@needs_tmux
@pytest.mark.parametrize(
    ("how", "pyspy"),
    [("kill-session", True), ("SIGHUP", True), ("SIGTERM", False), ("SIGINT", False)],
)
def test_ending_the_demo_ends_everything_it_started(
    how: str, pyspy: bool, busy_machine: None
) -> None:
    tmux = Tmux(f"lifescope-exit-{os.getpid()}-{how}")
    env = "env LIFESCOPE_NATIVE_STACKS=0 " if pyspy else ""
    shell = tmux.start(f"exec {env}{PYTHON} -m lifescope demo --rate 20")
    procs: list[psutil.Process] = []
    try:
        ui = psutil.Process(shell)  # `exec`: the pane's process is lifescope itself
        wait_for(lambda: "● live" in tmux.screen() and len(ui.children()) >= 3, timeout=40)
        if pyspy:
            wait_for(
                lambda: any(_name(p) == "py-spy" for p in ui.children(recursive=True)), timeout=20
            )
        procs = _tree(ui.pid)
        names = {" ".join(_cmdline(p)[1:3]) for p in procs}
        assert {
            "-m lifescope.demo.server",
            "-m lifescope.demo.load",
            "-m lifescope.collector",
        } <= names
        if how == "kill-session":
            tmux.kill()
        else:
            ui.send_signal(getattr(signal, how))
        took = _wait_gone(procs)
        print(f"{how}: {len(procs)} processes gone in {took:.2f} s")
    finally:
        _kill_all(procs)
        tmux.kill()


@pytest.mark.parametrize("how", ["tab closed", "SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_demo_web_leaves_nothing_running(how: str, busy_machine: None) -> None:
    pytest.importorskip("textual_serve")
    port = free_port()
    demo = subprocess.Popen(
        [PYTHON, "-m", "lifescope", "demo", "--web", str(port), "--rate", "20"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **PYSPY},  # the most processes to end
    )  # fmt: skip
    procs: list[psutil.Process] = []

    async def visit() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://localhost:{port}/ws?width=100&height=30")
            await ws.send_json(["resize", {"width": 100, "height": 30}])
            seen = 0
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and seen < 50_000:  # a few full screens
                msg = await ws.receive(timeout=40)
                seen += len(msg.data) if isinstance(msg.data, bytes | str) else 0
            assert seen >= 50_000, "the browser's app never drew"
            wait_for(lambda: any(_name(p) == "py-spy" for p in _tree(demo.pid)), timeout=20)
            procs.extend(_tree(demo.pid))
            if how == "tab closed":
                await ws.close()
            else:
                demo.send_signal(getattr(signal, how))

    try:
        wait_for(lambda: connects(port), timeout=40)
        asyncio.run(visit())
        if how == "tab closed":
            # The visitor's attach and its collector end; the demo stays for the next visitor.
            visitor = [
                p for p in procs if "attach" in _cmdline(p) or "lifescope.collector" in _cmdline(p)
            ]
            assert len(visitor) >= 2, [_cmdline(p) for p in procs]
            took = _wait_gone(visitor)
            assert demo.poll() is None
        else:
            took = _wait_gone(procs)
        print(f"{how}: gone in {took:.2f} s")
    finally:
        _kill_all(procs)
        if demo.poll() is None:
            demo.kill()
        demo.wait()


@needs_tmux
def test_a_killed_ui_takes_its_collector_with_it() -> None:
    """SIGKILL runs no handler: the collector's parent-death signal is what ends it."""
    code = "import time; print('READY', flush=True); time.sleep(60)"
    target = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE)
    tmux = Tmux(f"lifescope-kill-{os.getpid()}")
    procs: list[psutil.Process] = []
    try:
        assert target.stdout is not None and target.stdout.readline().startswith(b"READY")
        ui = psutil.Process(tmux.start(f"exec {sys.executable} -m lifescope attach {target.pid}"))
        wait_for(
            lambda: any("lifescope.collector" in _cmdline(p) for p in ui.children()), timeout=30
        )
        procs = _tree(ui.pid)
        ui.kill()
        _wait_gone(procs)
        assert target.poll() is None, "the target is never harmed"
    finally:
        _kill_all(procs)
        tmux.kill()
        target.kill()
        target.wait()
