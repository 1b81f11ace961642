"""The network side against real sockets whose truth is known."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
from dataclasses import replace

import pytest

from lifescope.analysis import report
from lifescope.analysis.connections import phase
from lifescope.demo.children import DemoServer
from lifescope.samples import Socket
from lifescope.session import collect

NEVER_ACCEPTS = """
import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(4)
print("READY", s.getsockname()[1], flush=True)
time.sleep(120)
"""

RECEIVER = """
import socket, threading, time
def wait_for_reply():
    c = socket.create_connection(("127.0.0.1", PORT))
    c.recv(10)  # the peer never answers
threading.Thread(target=wait_for_reply, name="db-client", daemon=True).start()
time.sleep(0.3)
print("READY", flush=True)
time.sleep(120)
"""


def test_listener_that_never_accepts_overflows(python_target) -> None:  # type: ignore[no-untyped-def]
    proc = python_target(NEVER_ACCEPTS)
    port = int(proc.ready_line)
    clients: list[socket.socket] = []
    result: dict[str, report.Report] = {}

    def observe() -> None:
        result["r"] = report.build(collect(proc.pid, 4.0, probes=("sockets",)).window())

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        time.sleep(0.8)  # let the collector take its first sample before the flood
        for _ in range(8):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            clients.append(client)
        watcher.join(30)
    finally:
        for client in clients:
            client.close()
    listen = [lv for lv in result["r"].connections.listen if lv.local.endswith(f":{port}")]
    assert len(listen) == 1
    assert listen[0].backlog == 4
    assert listen[0].accept_queue == 5  # backlog + 1: the kernel's off-by-one
    assert listen[0].overflows is not None and listen[0].overflows > 0  # SYNs turned away
    queued = [c for c in result["r"].connections.top if c.phase == "accept-queue"]
    assert len(queued) == 5


def test_idle_keepalive_connections_are_counted(demo_server: DemoServer) -> None:
    conns = []
    try:
        for _ in range(4):
            conn = http.client.HTTPConnection("127.0.0.1", demo_server.port, timeout=5)
            conn.request("GET", "/fast")
            assert conn.getresponse().read()
            conns.append(conn)  # kept open: HTTP/1.1 keep-alive
        time.sleep(0.3)
        result = report.build(collect(demo_server.pid, 2.0, probes=("sockets", "threads")).window())
    finally:
        for conn in conns:
            conn.close()
    conn_view = result.connections
    assert conn_view.keepalive_idle is not None and conn_view.keepalive_idle >= 4
    idle = [c for c in conn_view.top if c.phase == "idle" and c.kind == "client"]
    assert len(idle) >= 4
    for c in idle:
        assert c.rtt_ms is not None and c.rtt_ms < 5  # loopback
        assert c.idle_ms is not None and c.idle_ms >= 200


def test_thread_blocked_in_recv_is_joined_to_its_peer(python_target) -> None:  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        proc = python_target(RECEIVER.replace("PORT", str(port)))
        accepted, _ = listener.accept()
        try:
            import subprocess

            from tests.conftest import PYTHON

            done = subprocess.run(
                [
                    PYTHON,
                    "-m",
                    "lifescope",
                    "snapshot",
                    str(proc.pid),
                    "--seconds",
                    "1.5",
                    "--json",
                ],
                capture_output=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            snap = json.loads(done.stdout)
        finally:
            accepted.close()
    finally:
        listener.close()
    blocked = [t for t in snap["threads"] if t["socket"] is not None]
    assert len(blocked) == 1, snap["threads"]
    assert blocked[0]["name"] == "db-client"
    assert blocked[0]["socket"]["peer"] == f"127.0.0.1:{port}"
    assert blocked[0]["socket"]["kind"] == "outbound"
    outbound = [c for c in snap["connections"]["top"] if c["peer"] == f"127.0.0.1:{port}"]
    assert outbound and outbound[0]["thread"] == "db-client"


MANY_CONNECTIONS = """
import resource, socket, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8000), hard))
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(512)
kept = []
for _ in range(3000):
    client = socket.create_connection(listener.getsockname())
    kept += [client, listener.accept()[0]]
print("READY", flush=True)
time.sleep(120)
"""


def test_socket_refresh_slows_down_for_big_tables(python_target) -> None:  # type: ignore[no-untyped-def]
    """6,000 sockets of its own: the probe refreshes at ~0.8 Hz (its row budget), not 2 Hz,
    and every sample still holds every socket."""
    from lifescope.probes.sockets import rate_for

    assert rate_for(100, 2.0) == 2.0
    assert rate_for(6000, 2.0) == pytest.approx(0.833, abs=0.001)
    assert rate_for(50_000, 2.0) == 0.5
    proc = python_target(MANY_CONNECTIONS)
    timeline = collect(proc.pid, 5.0, probes=["sockets"])
    samples = timeline.window().sockets
    assert 3 <= len(samples) <= 6, [s.t for s in samples]  # 2 Hz would give ~10
    gaps = [b.t - a.t for a, b in itertools.pairwise(samples)]
    assert min(gaps) > 1.0, gaps
    established = [sum(1 for s in sample.sockets if s.state == "ESTABLISHED") for sample in samples]
    assert set(established) == {6000}


TWO_LISTENERS = """
import socket, threading, time
full = socket.socket()
full.bind(("127.0.0.1", 0))
full.listen(1)  # never accepts: a backlog of 1 overflows at once
healthy = socket.socket()
healthy.bind(("127.0.0.1", 0))
healthy.listen(64)
def serve():
    while True:
        conn, _ = healthy.accept()
        conn.close()
threading.Thread(target=serve, daemon=True).start()
print("READY", full.getsockname()[1], healthy.getsockname()[1], flush=True)
time.sleep(120)
"""


def test_each_listener_shows_only_its_own_drops(python_target) -> None:  # type: ignore[no-untyped-def]
    """Truth: one listener that never accepts (backlog 1) and a healthy one in the same
    process, plus another process whose listener also overflows. `ListenOverflows` counts the
    whole network namespace and blamed all three; each listener's own count (`sk_drops`, what
    `ss -ltm` shows as `d`) blames only the full one."""
    target = python_target(TWO_LISTENERS)
    full_port, healthy_port = (int(p) for p in target.ready_line.split())
    other = python_target(NEVER_ACCEPTS)
    other_port = int(other.ready_line)
    clients: list[socket.socket] = []
    result: dict[str, report.Report] = {}

    def observe() -> None:
        result["r"] = report.build(collect(target.pid, 4.0, probes=("sockets",)).window())

    watcher = threading.Thread(target=observe)
    watcher.start()
    try:
        time.sleep(0.8)  # the first sample before any drop
        for port in (full_port, other_port, other_port, healthy_port) * 6:
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            clients.append(client)
        watcher.join(30)
    finally:
        for client in clients:
            client.close()
    listen = {lv.local: lv for lv in result["r"].connections.listen}
    full, healthy = listen[f"127.0.0.1:{full_port}"], listen[f"127.0.0.1:{healthy_port}"]
    assert full.overflows_scope == healthy.overflows_scope == "listener"
    assert full.overflows is not None and full.overflows >= 3, full
    assert healthy.overflows == 0, healthy


def test_a_response_awaiting_only_the_clients_ack_is_not_being_written() -> None:
    """An http.server connection from a hog run, as tcp_info read it: 116 bytes in send_q, 5
    of them not sent (the body, held back by Nagle behind headers sent 36 ms ago and not yet
    acknowledged), the request 336 ms ago. The response is not finished: L5. Once all of
    it is sent and only the ACK is awaited, it is the network's, and the connection idles
    until the next request. No tcp_info (/proc/net): send_q is all there is."""
    held = Socket(7, "ESTABLISHED", "127.0.0.1:8000", "127.0.0.1:52952", 0, 116, 1234,
                  last_data_recv_ms=336, last_data_sent_ms=36, bytes_received=400,
                  bytes_acked=232, notsent_bytes=5)  # fmt: skip
    assert phase(held, "client") == "response"
    assert phase(replace(held, notsent_bytes=0), "client") == "idle"
    assert phase(replace(held, notsent_bytes=None), "client") == "response"
    assert phase(replace(held, notsent_bytes=0), "outbound") == "request"  # ours, unacked
