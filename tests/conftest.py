"""Shared fixtures: real target processes, always stopped by pid.

Targets run with ``sys.executable`` exactly as this interpreter was started: in a virtualenv that
is the venv's ``python`` symlink, which execs the base interpreter directly (so the pid a test
attaches to is the Python process itself) but still finds the venv's site-packages. Resolving the
symlink (``os.path.realpath``) would start the base interpreter, where lifescope is not installed.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from lifescope.demo.children import DemoServer, LoadGen, start_demo_server, start_load
from tests.interpreters import DEBIAN_VERSIONS, contained_pid, container_env, python_for

PYTHON = sys.executable

# Property tests check what parsers do with odd input, not how fast: no per-example deadline
# and no "generation is slow" failure, which a busy CI machine triggered (seen: 1.4 s to draw
# one input while another process loaded both cores).
settings.register_profile("lifescope", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lifescope")


def stop_pid(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    """A loopback port nobody listens on right now (for servers that need one on the command
    line; the kernel may hand it out again, which a test tolerates by failing to start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connects(port: int) -> bool:
    """Something accepts connections on loopback `port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


async def pilot_until(pilot, predicate: Callable[[], object], timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Let a Textual app run (under Pilot) until `predicate` holds; fail after `timeout`."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"the app did not reach the expected state within {timeout}s")


@pytest.fixture
def python_target(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a Python script as a target; it prints READY when set up. Stopped by pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        code: str, python: str = PYTHON, stdin: bool = False, container: bool = False
    ) -> subprocess.Popen[bytes]:
        """``container``: in pid, mount and network namespaces of its own (``python`` must
        be a chrooted interpreter from tests/interpreters.py); ``proc.target_pid`` is then
        the interpreter's host pid, not the launcher's."""
        if python in DEBIAN_VERSIONS:  # "3.14": provisioned on first use
            python = python_for(python)
        script = tmp_path / f"target{len(started)}.py"
        script.write_text(textwrap.dedent(code))
        proc = subprocess.Popen(
            [python, str(script)],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env=container_env() if container else None,
        )
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(b"READY"), f"target did not start: {line!r}"
        proc.ready_line = line.decode()[len("READY") :].strip()  # type: ignore[attr-defined]
        proc.target_pid = contained_pid(proc.pid) if container else proc.pid  # type: ignore[attr-defined]
        return proc

    yield start
    for proc in started:
        if getattr(proc, "target_pid", proc.pid) != proc.pid:
            # A container's target is PID 1 of its namespace and ignores SIGTERM: SIGKILL
            # its launcher, whose --kill-child takes the target down with it.
            proc.kill()
            proc.wait()
        stop_pid(proc)


@pytest.fixture
def demo_server() -> Iterator[DemoServer]:
    server = start_demo_server(port=0, flags=["--gil-hog"])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def loaded_demo(demo_server: DemoServer) -> Iterator[tuple[DemoServer, LoadGen]]:
    """The demo server under a bounded keep-alive load (loopback, ≤ 60 s, ≤ 30 req/s)."""
    load = start_load(
        demo_server.url, rate=30, concurrency=6, duration=60, mix="fast=5,db=2,sleep=2"
    )
    try:
        yield demo_server, load
    finally:
        load.stop()
