"""The packet probe on real loopback traffic, its filter and parser, and the packet analysis.

Every capture here is real: a small HTTP/1.1-ish server runs as a separate process (the target),
the test opens a handful of loopback connections to it, and the probe captures them with its
kernel filter. Capturing needs CAP_NET_RAW (these tests run as root in CI); the test of the
unprivileged path drops to ``nobody`` in a forked child.

The analysis tests run on ``fixtures/packets-loopback.jsonl``, recorded from such a capture by
``python tests/test_packets.py --record`` (see ``fixtures/README.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import pwd
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifescope import stream
from lifescope.analysis import packets as analysis
from lifescope.probes import bpf
from lifescope.probes.packets import (
    PacketsProbe,
    http_first_line,
    is_tls_client_hello,
    parse_segment,
)
from lifescope.samples import PacketEvent, PacketsSample, ProbeStatus
from lifescope.target import Target, resolve
from tests.conftest import wait_for

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "packets-loopback.jsonl"

SERVER = """
import socket, threading
HOST, FAMILY = "127.0.0.1", socket.AF_INET
listener = socket.create_server((HOST, 0), family=FAMILY, backlog=128)
# A second listener with a tiny backlog that does not accept until asked to (GET /drain): its
# queue overflows, so the kernel drops SYNs and clients retransmit them (for the fixture).
stuck = socket.create_server((HOST, 0), family=FAMILY, backlog=0)

def serve(conn):
    buf = b""
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            while b"\\r\\n\\r\\n" in buf:
                head, buf = buf.split(b"\\r\\n\\r\\n", 1)
                bye = b" /bye " in head
                conn.sendall(
                    b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n"
                    + (b"Connection: close\\r\\n" if bye else b"")
                    + b"\\r\\nok"
                )
                if bye:
                    return
                if b" /drain " in head:  # start accepting on the stuck listener
                    threading.Thread(target=drain, daemon=True).start()
            if buf and not buf[:1].isalpha():  # not HTTP (a TLS ClientHello): answer anyway
                conn.sendall(b"HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\n\\r\\n")
                buf = b""
    except OSError:
        pass
    finally:
        conn.close()

held = []

def drain():
    while True:
        held.append(stuck.accept()[0])

def accept_loop():
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

threading.Thread(target=accept_loop, daemon=True).start()
print("READY", listener.getsockname()[1], stuck.getsockname()[1], flush=True)
threading.Event().wait(120)
"""


# --- helpers --------------------------------------------------------------------------------------


class Capture:
    """A running probe whose samples land in a list; stopped and joined on exit."""

    def __init__(self, probe: PacketsProbe, out: list[object]) -> None:
        self.probe = probe
        self.out = out

    @property
    def samples(self) -> list[PacketsSample]:
        return [s for s in self.out if isinstance(s, PacketsSample)]

    @property
    def events(self) -> list[PacketEvent]:
        return [e for s in self.samples for e in s.events]

    @property
    def statuses(self) -> list[ProbeStatus]:
        return [s for s in self.out if isinstance(s, ProbeStatus)]


@contextlib.contextmanager
def capture(target: Target, **kwargs: object) -> Iterator[Capture]:
    out: list[object] = []
    probe = PacketsProbe(target, out.append, **kwargs)  # type: ignore[arg-type]
    probe.start()
    cap = Capture(probe, out)
    try:
        wait_for(lambda: any(s.status == "ok" for s in cap.statuses) or not probe.is_alive(), 5)
        assert probe.is_alive(), cap.statuses
        yield cap
        time.sleep(0.3)  # the last packets' sample
    finally:
        probe.stop()
        probe.join(5)
        assert not probe.is_alive()


@pytest.fixture
def server(python_target: Callable[..., subprocess.Popen[bytes]]) -> tuple[Target, int, int]:
    proc = python_target(SERVER)
    port, stuck_port = (int(p) for p in proc.ready_line.split())
    return resolve(proc.pid), port, stuck_port


def request(port: int, path: str, *, reset: bool = False) -> tuple[str, str]:
    """One connection, one request, the response read; closed with FIN, or RST if ``reset``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        response = b""
        while not response.endswith(b"ok"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return f"127.0.0.1:{sock.getsockname()[1]}", response.decode()
    finally:
        sock.close()


def tls_hello(port: int) -> str:
    """Open a connection and start a real TLS handshake (the server answers in HTTP)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    client = f"127.0.0.1:{raw.getsockname()[1]}"
    try:
        tls = ssl.create_default_context().wrap_socket(
            raw, server_hostname="example.test", do_handshake_on_connect=False
        )
        with contextlib.suppress(ssl.SSLError, OSError):
            tls.do_handshake()
        tls.close()
    finally:
        raw.close()
    return client


def by_client(events: list[PacketEvent], port: int) -> dict[str, list[PacketEvent]]:
    """Events grouped by the client endpoint of their connection to ``port``."""
    out: dict[str, list[PacketEvent]] = {}
    for e in events:
        client = e.dst if e.src.endswith(f":{port}") else e.src
        out.setdefault(client, []).append(e)
    return out


# --- the probe on real traffic --------------------------------------------------------------------


def test_handshake_first_data_and_closes(server: tuple[Target, int, int]) -> None:
    target, port, stuck_port = server
    other = socket.create_server(("127.0.0.1", 0))  # someone else's port: must not be captured
    other_port = other.getsockname()[1]
    n = 6
    try:
        with capture(target) as cap:
            clients = [request(port, f"/item/{i}", reset=i == n - 1)[0] for i in range(n)]
            for _ in range(2):
                c = socket.create_connection(("127.0.0.1", other_port), timeout=5)
                c.sendall(b"GET / HTTP/1.1\r\n\r\n")
                other.accept()[0].close()
                c.close()
            time.sleep(0.2)
    finally:
        other.close()

    assert cap.probe.ports == tuple(sorted((port, stuck_port)))
    assert cap.probe.rx_stamps_on_arrival, "a packet stamped when read can precede its cause"
    events = cap.events
    assert events
    for e in events:
        assert other_port not in (int(e.src.rsplit(":")[1]), int(e.dst.rsplit(":")[1]))
    groups = by_client(events, port)
    for i, client in enumerate(clients):
        evs = groups[client]
        kinds = [e.kind for e in evs]
        for kind in ("SYN", "SYNACK", "ACK"):
            assert kinds.count(kind) == 1, (client, kinds)
        assert kinds.count("DATA") == 2, kinds  # the first payload of each direction, no more
        t = {e.kind: e.t for e in evs}
        assert t["SYN"] <= t["SYNACK"] <= t["ACK"]
        assert [e.t for e in evs] == sorted(e.t for e in evs), "kernel stamps in causal order"
        assert (t["ACK"] - t["SYN"]) * 1000 < 5.0, "loopback handshake should take microseconds"
        assert all(e.line is None for e in evs)
        data = [e for e in evs if e.kind == "DATA"]
        assert data[0].src == client and data[0].length == len(
            f"GET /item/{i} HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        assert data[1].dst == client and data[1].length > 0
        if i == n - 1:
            rst = [e for e in evs if e.kind == "RST"]
            assert rst and rst[0].src == client
            assert "FIN" not in kinds
        else:
            fins = [e for e in evs if e.kind == "FIN"]
            assert fins and fins[0].src == client, kinds  # the client closed first
            assert "RST" not in kinds
    assert sum(s.kernel_dropped for s in cap.samples) == 0
    assert sum(s.captured for s in cap.samples) >= 7 * n
    assert cap.probe.outgoing_copies == 0, "the kernel filter drops lo's outgoing copies"
    assert cap.probe.malformed == 0
    assert all(s.ports == tuple(sorted((port, stuck_port))) for s in cap.samples)

    # the same capture through the analysis
    view = analysis.packets_view(cap.samples)
    assert view.summary.kernel_dropped == 0
    assert view.summary.resets == 1
    assert view.summary.handshake_p50_ms is not None and view.summary.handshake_p50_ms < 5.0
    conns = {c.client: c for c in view.connections}
    assert all(conns[c].request_response_ms is not None for c in clients)
    assert conns[clients[-1]].reset_by == "client"
    assert conns[clients[0]].closed_by == "client" and conns[clients[0]].close_kind == "FIN"
    assert [n.kind for n in view.notable] == ["reset"]


def test_http_lines_only_when_asked(server: tuple[Target, int, int]) -> None:
    target, port, _ = server
    with capture(target, http_lines=True) as cap:
        clients = [request(port, f"/item/{i}?q=x")[0] for i in range(3)]
    groups = by_client(cap.events, port)
    for i, client in enumerate(clients):
        lines = [(e.src == client, e.line) for e in groups[client] if e.kind == "DATA"]
        assert lines == [(True, f"GET /item/{i}?q=x HTTP/1.1"), (False, "HTTP/1.1 200 OK")]
        assert all(e.line is None for e in groups[client] if e.kind != "DATA")


def test_ipv6_loopback(python_target: Callable[..., subprocess.Popen[bytes]]) -> None:
    """The filter's IPv6 path in the real kernel: [::1] connections are captured like v4 ones."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    code = SERVER.replace(
        'HOST, FAMILY = "127.0.0.1", socket.AF_INET', 'HOST, FAMILY = "::1", socket.AF_INET6'
    )
    proc = python_target(code)
    port = int(proc.ready_line.split()[0])
    with capture(resolve(proc.pid), http_lines=True) as cap:
        sock = socket.create_connection(("::1", port), timeout=5)
        client = f"[::1]:{sock.getsockname()[1]}"
        sock.sendall(b"GET /v6 HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while not got.endswith(b"ok"):
            got += sock.recv(4096)
        sock.close()
    evs = by_client(cap.events, port)[client]
    assert [e.kind for e in evs][:5] == ["SYN", "SYNACK", "ACK", "DATA", "DATA"]
    assert evs[3].line == "GET /v6 HTTP/1.1" and evs[4].line == "HTTP/1.1 200 OK"
    assert evs[0].dst == f"[::1]:{port}"
    assert (evs[2].t - evs[0].t) * 1000 < 5.0


NETNS_SERVER = """
import ctypes, fcntl, socket, struct, threading, time
# A network namespace of our own (as in a container), its loopback brought up by hand.
if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:
    print("READY unshare-failed", flush=True)
    raise SystemExit(0)
s = socket.socket()
flags = struct.unpack_from("H", fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0)), 16)[0]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
listener = socket.create_server(("127.0.0.1", 0))
port = listener.getsockname()[1]

def serve():
    while True:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 204 No Content\\r\\n\\r\\n")
        conn.close()

def clients():  # traffic that exists only inside this namespace
    while True:
        time.sleep(0.05)
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /inside HTTP/1.1\\r\\n\\r\\n")
        c.recv(100)
        c.close()

threading.Thread(target=serve, daemon=True).start()
threading.Thread(target=clients, daemon=True).start()
print("READY", port, flush=True)
time.sleep(120)
"""


def test_captures_inside_the_targets_network_namespace(
    python_target: Callable[..., subprocess.Popen[bytes]],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    proc = python_target(NETNS_SERVER)
    if proc.ready_line == "unshare-failed":
        pytest.skip("unshare(CLONE_NEWNET) not permitted here")
    port = int(proc.ready_line)
    target = resolve(proc.pid)
    from lifescope.probes.netns import same_netns

    assert not same_netns(proc.pid)
    with capture(target, http_lines=True) as cap:
        wait_for(lambda: sum(e.kind == "DATA" for e in cap.events) >= 4, 5)
    assert cap.probe.ports == (port,)
    kinds = {e.kind for e in cap.events}
    assert {"SYN", "SYNACK", "ACK", "DATA", "FIN"} <= kinds
    assert "GET /inside HTTP/1.1" in {e.line for e in cap.events}
    assert sum(s.kernel_dropped for s in cap.samples) == 0


def test_tls_client_hello_is_recognised_not_decoded(server: tuple[Target, int, int]) -> None:
    target, port, _ = server
    with capture(target, http_lines=True) as cap:
        client = tls_hello(port)
    evs = by_client(cap.events, port)[client]
    hello = [e for e in evs if e.src == client and e.kind in ("DATA", "TLS_HELLO")]
    assert [e.kind for e in hello] == ["TLS_HELLO"]
    assert hello[0].line is None and hello[0].length > 100


def test_keepalive_requests_after_the_first_are_counted_not_emitted(
    server: tuple[Target, int, int],
) -> None:
    target, port, _ = server
    with capture(target) as cap:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        for i in range(5):
            sock.sendall(f"GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            got = b""
            while not got.endswith(b"ok"):
                got += sock.recv(4096)
        sock.close()
    kinds = [e.kind for e in cap.events]
    assert kinds.count("DATA") == 2
    assert cap.probe.later_payloads >= 8
    assert not cap.probe._conns, "finished connections must leave the table"


def test_over_the_event_budget_whole_connections_are_kept(
    server: tuple[Target, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real traffic against a tiny budget: sampled connections stay complete, the rest counted."""
    from lifescope.probes import packets as packets_module

    monkeypatch.setattr(packets_module, "MAX_EVENTS_PER_SAMPLE", 10)
    target, port, _ = server
    with capture(target) as cap:
        clients = [request(port, f"/{i}")[0] for i in range(12)]
    groups = by_client(cap.events, port)
    seen = [c for c in clients if c in groups]
    assert seen and len(seen) < len(clients)
    for client in seen:
        kinds = [e.kind for e in groups[client]]
        assert kinds[:3] == ["SYN", "SYNACK", "ACK"] and kinds.count("DATA") == 2, kinds
    assert cap.probe.events_suppressed > 0
    assert any(s.status == "degraded" for s in cap.statuses)


def test_target_gone(python_target: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = python_target(SERVER)
    target = resolve(proc.pid)
    out: list[object] = []
    probe = PacketsProbe(target, out.append)
    probe.start()
    try:
        wait_for(lambda: any(isinstance(s, ProbeStatus) for s in out), 5)
        proc.kill()
        proc.wait()
        wait_for(lambda: not probe.is_alive(), 5)
    finally:
        probe.stop()
        probe.join(5)
    statuses = [s.status for s in out if isinstance(s, ProbeStatus)]
    assert statuses[-1] == "gone"


def _unprivileged_child(write_fd: int) -> None:
    """Runs in a forked child: become nobody, run the probe against ourselves, report statuses."""
    from lifescope.probes.threads import ThreadsProbe

    listener = socket.create_server(("127.0.0.1", 0))
    target = resolve(os.getpid())
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: setuid made our /proc root-owned
    out: list[object] = []
    PacketsProbe(target, out.append).run()  # synchronously: it must return, not raise
    threads_sample = ThreadsProbe(target, out.append).read_once()  # the others keep working
    result = {
        "uid": os.getuid(),
        "statuses": [[s.status, s.reason, s.remedy] for s in out if isinstance(s, ProbeStatus)],
        "threads": len(threads_sample.threads),
    }
    listener.close()
    os.write(write_fd, json.dumps(result).encode())


def test_unprivileged_probe_reports_denied() -> None:
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user `nobody` on this machine")
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_fd)
            _unprivileged_child(write_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        chunks = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], 0.5)
            if ready:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(read_fd)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    result = json.loads(b"".join(chunks))
    assert result["uid"] != 0
    [(status_name, reason, remedy)] = result["statuses"]
    assert status_name == "denied"
    assert "CAP_NET_RAW" in reason and "CAP_NET_RAW" in remedy
    assert "setcap" in remedy and "NET_RAW" in remedy
    assert result["threads"] >= 1


# --- the kernel filter, run by the reference interpreter ------------------------------------------


def ipv4_tcp(
    sport: int, dport: int, flags: int, payload: bytes = b"", proto: int = 6, frag: int = 0
) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 0x50, flags, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 1, frag, 64, proto, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    return ip + tcp + payload


def ipv6_tcp(sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 0x80, flags, 65535, 0, 0)
    tcp += b"\x01\x01\x08\x0a" + b"\0" * 8  # NOP NOP timestamps: a 32-byte header
    ip = struct.pack(
        "!IHBB16s16s",
        6 << 28,
        len(tcp) + len(payload),
        6,
        64,
        b"\0" * 15 + b"\1",
        b"\0" * 15 + b"\1",
    )
    return ip + tcp + payload


SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


@pytest.mark.parametrize(
    ("packet", "protocol", "ifindex", "pkttype", "expected"),
    [
        (ipv4_tcp(40000, 8080, SYN), 0x0800, 2, 0, 40 + 8),
        (ipv4_tcp(8080, 40000, SYN | ACK), 0x0800, 2, 4, 40 + 8),  # outgoing on eth: kept
        (ipv4_tcp(8080, 40000, SYN | ACK), 0x0800, 1, 4, 0),  # outgoing on lo: dropped
        (ipv4_tcp(8080, 40000, SYN | ACK), 0x0800, 1, 0, 40 + 8),  # incoming on lo: kept
        (ipv4_tcp(40000, 8080, ACK), 0x0800, 2, 0, 40 + 8),  # pure ACK to the server
        (ipv4_tcp(8080, 40000, ACK), 0x0800, 2, 0, 0),  # pure ACK from the server
        (ipv4_tcp(40000, 8080, ACK | PSH, b"GET / HTTP/1.1\r\n"), 0x0800, 2, 0, 48),
        (ipv4_tcp(8080, 40000, ACK | FIN), 0x0800, 2, 0, 48),
        (ipv4_tcp(40000, 8080, RST), 0x0800, 2, 0, 48),
        (ipv4_tcp(40000, 9090, SYN), 0x0800, 2, 0, 0),  # another port
        (ipv4_tcp(40000, 8080, SYN, proto=17), 0x0800, 2, 0, 0),  # UDP
        (ipv4_tcp(40000, 8080, SYN, frag=5), 0x0800, 2, 0, 0),  # a later fragment
        (ipv6_tcp(40000, 8080, SYN), 0x86DD, 2, 0, 40 + 32 + 8),
        (ipv6_tcp(8080, 40000, ACK), 0x86DD, 2, 0, 0),
        (ipv6_tcp(8080, 40000, ACK, b"HTTP/1.1 200 OK\r\n"), 0x86DD, 2, 0, 80),
        (ipv4_tcp(40000, 8080, SYN), 0x0806, 2, 0, 0),  # ARP ethertype
    ],
)
def test_filter_program_decisions(
    packet: bytes, protocol: int, ifindex: int, pkttype: int, expected: int
) -> None:
    program = bpf.tcp_events_program([8080, 443], payload_snap=8, lo_ifindex=1)
    assert bpf.run(program, packet, protocol=protocol, ifindex=ifindex, pkttype=pkttype) == expected


def test_filter_without_handshake_acks_drops_pure_acks() -> None:
    program = bpf.tcp_events_program([8080], payload_snap=8, handshake_acks=False)
    assert bpf.run(program, ipv4_tcp(40000, 8080, ACK), protocol=0x0800) == 0
    assert bpf.run(program, ipv4_tcp(40000, 8080, SYN), protocol=0x0800) == 48


def test_shedding_filter_keeps_handshakes_and_closes_only() -> None:
    """What the probe installs while the collector sheds load: no payload, no pure ACKs."""
    program = bpf.tcp_events_program([8080], payload_snap=8, handshake_acks=False, payloads=False)
    request = ipv4_tcp(40000, 8080, ACK | PSH, b"GET / HTTP/1.1\r\n")
    response = ipv6_tcp(8080, 40000, ACK | PSH, b"HTTP/1.1 200 OK\r\n")
    assert bpf.run(program, request, protocol=0x0800) == 0
    assert bpf.run(program, response, protocol=0x86DD) == 0
    assert bpf.run(program, ipv4_tcp(40000, 8080, ACK), protocol=0x0800) == 0
    assert bpf.run(program, ipv4_tcp(40000, 8080, SYN), protocol=0x0800) == 48
    assert bpf.run(program, ipv4_tcp(8080, 40000, SYN | ACK), protocol=0x0800) == 48
    assert bpf.run(program, ipv4_tcp(8080, 40000, ACK | FIN, b"x"), protocol=0x0800) == 48
    assert bpf.run(program, ipv4_tcp(40000, 8080, RST), protocol=0x0800) == 48


def test_many_ports_fall_back_to_a_range_the_kernel_accepts() -> None:
    ports = list(range(9000, 9000 + bpf.MAX_FILTER_PORTS + 10))
    program = bpf.tcp_events_program(ports, payload_snap=8)
    assert not program.exact_ports
    assert bpf.run(program, ipv4_tcp(40000, 9005, SYN), protocol=0x0800) == 48
    assert bpf.run(program, ipv4_tcp(40000, 8999, SYN), protocol=0x0800) == 0
    exact = bpf.tcp_events_program(ports[: bpf.MAX_FILTER_PORTS], payload_snap=256)
    assert exact.exact_ports
    empty = bpf.tcp_events_program([], payload_snap=8)
    assert bpf.run(empty, ipv4_tcp(40000, 9005, SYN), protocol=0x0800) == 0
    try:  # the kernel's verifier has the last word on both shapes
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    except PermissionError:
        pytest.skip("no CAP_NET_RAW")
    with sock:
        bpf.attach(sock, program)
        bpf.attach(sock, exact)
        bpf.attach(sock, empty)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([0x0800, 0x86DD, 0x0806]))
def test_filter_program_is_safe_on_random_bytes(data: bytes, protocol: int) -> None:
    program = bpf.tcp_events_program([80, 8080], payload_snap=8)
    snap = bpf.run(program, data, protocol=protocol)
    if protocol == 0x0806:
        assert snap == 0
    elif snap:
        assert data[9 if protocol == 0x0800 else 6] == 6  # only TCP gets through


# --- the header parser ----------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_parse_segment_never_raises(data: bytes) -> None:
    seg = parse_segment(data)
    if seg is not None:
        assert seg.payload_len >= 0
        assert 0 <= seg.sport < 65536 and 0 <= seg.dport < 65536
        assert seg.payload_at <= len(data) + 60
        assert len(seg.src) in (4, 16)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).filter(lambda b: not b or b[0] >> 4 not in (4, 6)))
def test_parse_segment_rejects_what_is_not_ip(data: bytes) -> None:
    assert parse_segment(data) is None


@given(
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 255),
    st.binary(max_size=64),
    st.booleans(),
)
def test_parse_segment_reads_what_was_built(
    sport: int, dport: int, flags: int, payload: bytes, v6: bool
) -> None:
    packet = (ipv6_tcp if v6 else ipv4_tcp)(sport, dport, flags, payload)
    seg = parse_segment(packet)
    assert seg is not None
    assert (seg.sport, seg.dport, seg.flags, seg.payload_len) == (sport, dport, flags, len(payload))
    assert packet[seg.payload_at :] == payload
    assert (seg.seq, seg.ack) == (1000, 2000)


def test_parse_segment_rejects_truncated_and_short_headers() -> None:
    good = ipv4_tcp(1, 2, SYN)
    assert parse_segment(good) is not None
    assert parse_segment(good[:39]) is None
    bad_offset = good[:32] + b"\x40" + good[33:]  # TCP data offset 4 (< 5 words)
    assert parse_segment(bad_offset) is None
    bad_total = good[:2] + b"\x00\x10" + good[4:]  # total length shorter than the headers
    assert parse_segment(bad_total) is None


@given(st.binary(max_size=300), st.booleans())
def test_http_first_line_is_bounded_and_printable(payload: bytes, request: bool) -> None:
    line = http_first_line(payload, request=request)
    if line is not None:
        assert len(line) <= 200
        assert all(ch >= " " and not "\x7f" <= ch < "\xa0" for ch in line)


def test_http_first_line_examples() -> None:
    assert http_first_line(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n", request=True) == (
        "GET /a?b=c HTTP/1.1"
    )
    assert http_first_line(b"HTTP/1.0 404 Not Found\r\n", request=False) == "HTTP/1.0 404 Not Found"
    assert http_first_line(b"HTTP/1.1 200 OK\r\n", request=True) is None  # wrong direction
    assert http_first_line(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", request=True) is None
    assert http_first_line(b"GET /x HTTP/2\r\n", request=True) is None
    assert http_first_line(b"\x16\x03\x01\x02\x00\x01", request=True) is None
    long = b"GET /" + b"a" * 300  # cut by the snap length: still a request, truncated
    assert http_first_line(long, request=True) == "GET /" + "a" * 195
    assert http_first_line(b"GET /\x1b[2J HTTP/1.1\r\n", request=True) == "GET /?[2J HTTP/1.1"
    assert is_tls_client_hello(b"\x16\x03\x01\x02\x00\x01\x03\x03")
    assert not is_tls_client_hello(b"\x16\x03\x01\x02\x00\x02")  # a ServerHello
    assert not is_tls_client_hello(b"\x16\x03")


# --- the analysis on a recorded capture -----------------------------------------------------------


def load_fixture() -> tuple[list[PacketsSample], dict[str, object]]:
    records = list(stream.read(io.BytesIO(FIXTURE.read_bytes())))
    meta = json.loads(FIXTURE.with_suffix(".meta.json").read_text())
    return [r for r in records if isinstance(r, PacketsSample)], meta


def test_fixture_connections() -> None:
    samples, meta = load_fixture()
    conns = analysis.connections(samples)
    by_client = {c.client: c for c in conns}
    normal = by_client[str(meta["normal"])]
    assert normal.syns == 1 and normal.closed_by == "client" and normal.close_kind == "FIN"
    for value in (
        normal.syn_synack_ms,
        normal.synack_ack_ms,
        normal.ack_request_ms,
        normal.request_response_ms,
    ):
        assert value is not None and 0 <= value < 50
    assert normal.handshake_ms is not None and normal.handshake_ms < 5
    assert normal.request_line == "GET /normal HTTP/1.1" and normal.response_line == (
        "HTTP/1.1 200 OK"
    )
    reset = by_client[str(meta["reset"])]
    assert reset.reset_by == "client" and reset.close_kind == "RST"
    server_closed = by_client[str(meta["server_close"])]
    assert server_closed.closed_by == "server" and server_closed.reset_by is None
    keepalive = by_client[str(meta["keepalive"])]
    assert keepalive.request_line == "GET /keepalive/0 HTTP/1.1"  # the first request only
    tls = by_client[str(meta["tls"])]
    assert tls.tls and tls.request_line is None
    retried = [c for c in conns if c.server.endswith(f":{meta['stuck_port']}")]
    assert any(c.syn_retransmits >= 1 for c in retried)


def test_fixture_summary_and_log() -> None:
    samples, meta = load_fixture()
    view = analysis.packets_view(samples, status="ok")
    summary = view.summary.as_dict()
    assert set(summary) == {
        "status",
        "captured",
        "kernel_dropped",
        "handshake_ms",
        "resets",
        "retransmits",
    }
    assert summary["status"] == "ok" and summary["kernel_dropped"] == 0
    assert summary["captured"] == sum(s.captured for s in samples) > 0
    assert summary["resets"] >= 1 and summary["retransmits"] >= 1
    hs = summary["handshake_ms"]
    assert isinstance(hs, dict) and hs["p50"] is not None and hs["p50"] < 5
    assert hs["p99"] >= hs["p50"]
    kinds = {n.kind for n in view.notable}
    assert {"reset", "syn_retransmit", "slow_handshake"} <= kinds
    slow = [n for n in view.notable if n.kind == "slow_handshake"]
    assert all(n.server.endswith(f":{meta['stuck_port']}") for n in slow)
    assert [n.t for n in view.notable] == sorted(n.t for n in view.notable)
    # the threshold is a parameter
    strict = analysis.notable_events(view.connections, slow_handshake_ms=0.0)
    assert sum(n.kind == "slow_handshake" for n in strict) >= len(meta["clients"])  # type: ignore[arg-type]


def ev(
    t: float, kind: str, src: str, dst: str, seq: int = 1, line: str | None = None
) -> PacketEvent:
    return PacketEvent(t, kind, src, dst, seq, 0, 0, line)


def test_analysis_edge_cases() -> None:
    c, s = "10.0.0.2:50000", "10.0.0.1:80"
    samples = [
        PacketsSample(
            1.0,
            (
                ev(0.100, "SYN", c, s, seq=7),
                ev(1.100, "SYN", c, s, seq=7),  # retransmitted after the 1 s RTO
                ev(1.1001, "SYNACK", s, c),
                ev(1.1002, "ACK", c, s),
                ev(1.2, "FIN", s, c),
                ev(1.3, "RST", c, s),
            ),
            6,
            0,
            (80,),
        ),
        PacketsSample(
            2.0,
            (
                ev(1.5, "SYN", c, s, seq=99),  # the 4-tuple reused: a new connection
                ev(1.5001, "SYNACK", s, c),
                ev(1.6, "FIN", "10.0.0.3:1234", s),  # a connection older than the window
            ),
            3,
            1,
            (80,),
        ),
    ]
    conns = analysis.connections(samples)
    assert len(conns) == 3
    first, second, old = sorted(conns, key=lambda x: x.syn_t or 1.55)
    assert first.syns == 2 and first.syn_retransmits == 1
    assert first.handshake_ms == pytest.approx(1000.2, abs=0.01)
    assert first.closed_by == "server" and first.close_kind == "FIN" and first.reset_by == "client"
    assert second.syns == 1 and second.ack_t is None
    assert second.handshake_ms == pytest.approx(0.1, abs=0.01)  # SYN → SYN-ACK without an ACK
    assert old.syn_t is None and old.closed_by == "client"
    summary = analysis.summarize(samples)
    assert (summary.captured, summary.kernel_dropped, summary.retransmits, summary.resets) == (
        9,
        1,
        1,
        1,
    )
    assert [n.kind for n in analysis.notable_events(conns)] == [
        "syn_retransmit",
        "slow_handshake",
        "reset",
    ]
    assert analysis.summarize([]).status == "unavailable"
    assert analysis.percentile([], 50) is None
    assert analysis.percentile([3.0], 99) == 3.0
    assert analysis.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_analysis_without_ports_uses_syn_and_lower_port() -> None:
    c, s = "[::1]:50000", "[::1]:8080"
    sample = PacketsSample(
        1.0, (ev(0.1, "SYN", c, s), ev(0.2, "DATA", s, c), ev(0.3, "DATA", c, s)), 3, 0, ()
    )
    [conn] = analysis.connections([sample])
    assert conn.client == c and conn.server == s
    assert conn.request_t == 0.3 and conn.response_t == 0.2


# --- recording the fixture ------------------------------------------------------------------------


def record_fixture() -> None:  # pragma: no cover - run by hand, see fixtures/README.md
    """Capture the fixture from real loopback traffic (needs root / CAP_NET_RAW)."""
    from tests.conftest import PYTHON

    script = Path("/tmp/lifescope-packets-fixture-server.py")
    script.write_text(textwrap.dedent(SERVER))
    proc = subprocess.Popen([PYTHON, str(script)], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port, stuck_port = (int(p) for p in proc.stdout.readline().split()[1:])
        target = resolve(proc.pid)
        meta: dict[str, object] = {"port": port, "stuck_port": stuck_port}
        with capture(target, http_lines=True) as cap:
            meta["normal"] = request(port, "/normal")[0]
            meta["reset"] = request(port, "/reset", reset=True)[0]
            meta["server_close"] = request(port, "/bye")[0]
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            meta["keepalive"] = f"127.0.0.1:{sock.getsockname()[1]}"
            for i in range(3):
                sock.sendall(f"GET /keepalive/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                got = b""
                while not got.endswith(b"ok"):
                    got += sock.recv(4096)
            meta["tls"] = tls_hello(port)
            clients = [meta["normal"], meta["reset"], meta["server_close"], meta["keepalive"]]
            meta["clients"] = clients
            # Overflow the listener that does not accept yet (backlog 0: one connection fits):
            # the kernel drops the other SYNs, the clients retransmit them after 1 s and 3 s,
            # and the server starts accepting in between, so the 3 s retransmission is answered.
            stuck = []
            for _ in range(4):
                s = socket.socket()
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", stuck_port))
                stuck.append(s)
            time.sleep(1.5)
            request(port, "/drain")
            time.sleep(2.0)
            for s in stuck:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            sock.close()
            time.sleep(0.2)
        with FIXTURE.open("wb") as f:
            f.write(stream.header_line())
            for sample in cap.samples:
                if sample.events or sample.captured:
                    f.write(stream.encode(sample))
        FIXTURE.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"wrote {FIXTURE} ({len(cap.events)} events)")
    finally:
        proc.kill()
        proc.wait()
        script.unlink()


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        record_fixture()
    else:
        print("usage: python tests/test_packets.py --record")
