"""A containerised aiohttp server attached from the host: its own pid, mount and network
namespaces and its own root (Debian's CPython 3.14, chrooted), so its thread ids, its binaries
and its sockets are all the container's own. Its load runs inside the container too (nothing on
the host can reach its loopback), and the truth is the same as outside: a handler that blocks
the loop ~300 ms stalls it for that long, a CPU-bound handler under a closed-loop client puts
the requests in L4, and the parked requests are asyncio tasks read from memory.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifescope.analysis import report
from lifescope.session import collect
from tests.interpreters import contained_pid, container_env, python_for

LAUNCHER = """
import fcntl, http.client, socket, struct, subprocess, sys, threading, time

# A new network namespace has only a loopback, and it is down.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS |= IFF_UP

server = subprocess.Popen(
    [sys.executable, "-m", "lifescope.demo.server", "--host", "127.0.0.1", "--port", "8080"],
    stdout=subprocess.PIPE,
)
assert server.stdout.readline().startswith(b"READY")
mode = sys.argv[1]
if mode == "stall":
    load = subprocess.Popen(
        [sys.executable, "-m", "lifescope.demo.load", "--url", "http://127.0.0.1:8080",
         "--rate", "20", "--concurrency", "4", "--duration", "40",
         "--mix", "fast=19,/block?ms=300=1"],
        stdout=open("/tmp/load.out", "wb"),  # the container has no /dev/null
    )
else:
    def closed_loop():  # one client, no think time, at most 40 s
        deadline = time.monotonic() + 40
        conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
        while time.monotonic() < deadline:
            conn.request("GET", "/cpu?ms=80")
            conn.getresponse().read()
    threading.Thread(target=closed_loop, daemon=True).start()
print("READY", server.pid, flush=True)
time.sleep(45)
server.kill()
"""


@pytest.fixture
def container(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(mode: str) -> int:
        """Start the container; return the host pid of its aiohttp server."""
        script = tmp_path / "launcher.py"
        script.write_text(LAUNCHER)
        proc = subprocess.Popen(
            [python_for("3.14"), str(script), mode], stdout=subprocess.PIPE, env=container_env()
        )
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(b"READY"), line
        launcher = contained_pid(proc.pid)
        children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
        servers = [
            int(c)
            for c in children
            if b"lifescope.demo.server" in Path(f"/proc/{c}/cmdline").read_bytes()
        ]
        assert len(servers) == 1, children
        time.sleep(1.0)  # let the load reach its rate
        return servers[0]

    yield start
    for proc in started:
        # The launcher is PID 1 of its namespace and ignores SIGTERM: SIGKILL unshare, whose
        # --kill-child takes the container down with it.
        proc.kill()
        proc.wait()


def _observe(pid: int, seconds: float = 5.0) -> report.Report:
    probes = ("gil", "threads", "stacks", "sockets", "tasks")
    return report.build(collect(pid, seconds, probes=probes).window())


def test_container_stalls_tasks_and_gil(container) -> None:  # type: ignore[no-untyped-def]
    pid = container("stall")
    assert Path(f"/proc/{pid}/ns/pid").resolve() != Path("/proc/self/ns/pid").resolve()
    result = _observe(pid)
    probes = {p.name: p for p in result.probes}
    for name in ("gil", "threads", "stacks", "sockets", "tasks"):
        assert probes[name].status == "ok", probes[name]
    assert "pid namespace" in (probes["gil"].reason or "")
    assert result.gil.source == "memory"
    assert len(result.loops) == 1, result.loops
    loop = result.loops[0]
    whole = [
        s for s in loop.stalls if s.frame and s.frame.startswith("handle_block") and not s.ongoing
    ]
    assert [s for s in whole if 240 <= s.duration_ms <= 360], loop.stalls
    assert all(s.gil_held is False for s in whole), whole  # time.sleep drops the GIL
    assert loop.task_source == "memory", loop
    assert loop.tasks is not None and loop.tasks.count >= 1, loop.tasks
    # the loop's thread joined across namespaces: named, with frames from py-spy
    threads = {t.tid: t for t in result.threads}
    assert loop.tid in threads and threads[loop.tid].top_frame, threads.get(loop.tid)


def test_container_cpu_handler_is_layer_4(container) -> None:  # type: ignore[no-untyped-def]
    pid = container("layer")
    result = _observe(pid, 4.0)
    assert result.layers is not None
    shares = dict(result.layers.shares)
    known = ("L0", "L1", "L2", "L3", "L4", "L5", "L6")
    assert max(known, key=lambda layer: shares[layer]) == "L4", result.layers
    listen = result.connections.listen
    assert any(entry.local.endswith(":8080") for entry in listen), listen
