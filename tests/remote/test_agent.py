"""The host side on its own: the collector ends when its channel closes or goes silent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

THREADS = """
import threading, time
for i in range(40):
    threading.Thread(target=time.sleep, args=(120,), name=f"idle-{i}", daemon=True).start()
print("READY", flush=True)
time.sleep(120)
"""

AGENT = "import sys; from lifescope.remote import agent; sys.exit(agent.run(sys.argv[1:], 'READY'))"


def _agent(pid: int, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", AGENT, str(pid), "--probes", "threads"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )  # fmt: skip


def test_a_silent_link_ends_the_collector(python_target: Callable[..., object]) -> None:
    """Nobody reads the stream and the channel never closes (a partition): the pipe fills, a
    write blocks, and after the stall limit the process ends by itself."""
    target = python_target(THREADS)
    proc = _agent(target.pid, LIFESCOPE_REMOTE_STALL_S="3")  # type: ignore[attr-defined]
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.close()
    assert proc.returncode == 0
    assert b"has not drained for 3 s" in proc.stderr.read()


def test_eof_on_the_channel_ends_the_collector(python_target: Callable[..., object]) -> None:
    target = python_target(THREADS)
    proc = _agent(target.pid)  # type: ignore[attr-defined]
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == b"lifescope-remote READY\n"
    assert proc.stdout.readline().startswith(b'{"schema"')
    started = time.monotonic()
    proc.stdin.close()
    assert proc.wait(15) == 0
    assert time.monotonic() - started < 10
