"""Socket readers against real kernel sockets: netlink sock_diag, /proc, and network namespaces.

No mocks: every assertion is about sockets this test opened on loopback (or in a child it started),
because the point of these readers is to agree with the kernel, and the kernel's own quirks (backlog
+ 1, inode 0 for unaccepted children, per-thread namespaces) are what we need to pin down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from lifescope.probes import netns, procnet
from lifescope.probes.netlink_diag import (
    ALL_STATES,
    LISTEN_ONLY,
    NetlinkError,
    SockDiag,
    TcpSocket,
    dump_tcp,
    port_filter_bytecode,
    state_mask,
)

PID = os.getpid()
BACKLOG = 4
CLIENTS = 8


def _wait_for(pred: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _listen_row(rows: list[TcpSocket], port: int) -> TcpSocket:
    found = [r for r in rows if r.state == "LISTEN" and r.local_port == port]
    assert len(found) == 1, found
    return found[0]


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


# --- an overflowing accept queue -----------------------------------------------------------------


@dataclass
class Overflow:
    listener: socket.socket
    clients: list[socket.socket]
    port: int
    counters_before: dict[str, int]


@pytest.fixture
def overflow() -> Iterator[Overflow]:
    """A listener with backlog 4 that never accepts, and 8 non-blocking clients knocking.

    The kernel admits backlog + 1 = 5 connections into the accept queue (``sk_acceptq_is_full`` is
    ``>``, not ``>=``); the other 3 SYNs are dropped and counted as ListenOverflows, and those
    clients sit in SYN_SENT retrying until we close them.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        port = listener.getsockname()[1]
        before = procnet.listen_counters(PID)
        for _ in range(CLIENTS):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            clients.append(c)
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))

        def queue_full() -> bool:
            rows = dump_tcp(states=LISTEN_ONLY, sport=port)
            return bool(rows) and rows[0].recv_q == BACKLOG + 1

        _wait_for(queue_full, what="accept queue to fill")
        yield Overflow(listener, clients, port, before)
    finally:
        for c in clients:
            c.close()
        listener.close()


def test_listen_queue_via_netlink(overflow: Overflow) -> None:
    row = _listen_row(dump_tcp(states=LISTEN_ONLY), overflow.port)
    assert row.recv_q == BACKLOG + 1  # accept-queue length
    assert row.send_q == BACKLOG  # the backlog itself
    assert row.family == socket.AF_INET
    assert row.local == f"127.0.0.1:{overflow.port}"
    assert row.peer == "0.0.0.0:0"
    assert row.inode == _inode(overflow.listener)
    assert procnet.socket_inodes(PID)[row.inode] == overflow.listener.fileno()
    assert row.rtt_us is None  # a listener's tcp_info carries nothing; we drop it


def test_listen_queue_via_proc(overflow: Overflow) -> None:
    # Without the fd map /proc/net/tcp knows the queue length but not the backlog.
    plain = _listen_row(procnet.read_proc_net_tcp(PID), overflow.port)
    assert plain.recv_q == BACKLOG + 1
    assert plain.send_q is None
    assert plain.inode == _inode(overflow.listener)
    # With it, the backlog is read from the socket itself (pidfd_getfd + TCP_INFO).
    rows = procnet.read_proc_net_tcp(PID, fd_by_inode=procnet.socket_inodes(PID))
    row = _listen_row(rows, overflow.port)
    assert (row.recv_q, row.send_q) == (BACKLOG + 1, BACKLOG)
    assert row.rtt_us is None and row.retransmits is None


def test_listen_backlogs_direct(overflow: Overflow) -> None:
    fd = overflow.listener.fileno()
    client_fd = overflow.clients[0].fileno()
    got = procnet.listen_backlogs(PID, [fd, client_fd, 10_000])
    assert got == {fd: (BACKLOG + 1, BACKLOG)}  # a non-listener and a bad fd are left out
    assert procnet.listen_backlogs(PID, []) == {}


def test_listen_overflows_rise(overflow: Overflow) -> None:
    before = overflow.counters_before
    assert set(before) == {"ListenOverflows", "ListenDrops"}
    _wait_for(
        lambda: procnet.listen_counters(PID)["ListenOverflows"] > before["ListenOverflows"],
        what="ListenOverflows to rise",
    )
    after = procnet.listen_counters(PID)
    assert after["ListenDrops"] >= after["ListenOverflows"] - before["ListenOverflows"]
    assert procnet.tcpext_counters(PID)["ListenOverflows"] >= after["ListenOverflows"]


def test_unaccepted_connections_are_queue_children(overflow: Overflow) -> None:
    """The 5 queued connections: server side ESTABLISHED with inode 0, client side owned by us."""
    rows = dump_tcp(sport=overflow.port)  # kernel-side port filter
    assert rows and all(r.local_port == overflow.port for r in rows)
    children = [r for r in rows if r.state == "ESTABLISHED"]
    assert len(children) == BACKLOG + 1
    assert all(r.inode == 0 for r in children)
    client_ports = {r.peer_port for r in children}

    everything = dump_tcp()
    ours = procnet.socket_inodes(PID)
    by_local_port = {r.local_port: r for r in everything if r.peer_port == overflow.port}
    for cport in client_ports:
        client_row = by_local_port[cport]
        assert client_row.state == "ESTABLISHED"
        assert client_row.inode in ours
    syn_sent = [r for r in by_local_port.values() if r.state == "SYN_SENT"]
    assert len(syn_sent) == CLIENTS - (BACKLOG + 1)
    assert {r.inode for r in syn_sent} <= set(ours)


# --- established pairs ---------------------------------------------------------------------------


@dataclass
class Pairs:
    listener: socket.socket
    port: int
    pairs: list[tuple[socket.socket, socket.socket]]


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    made: list[tuple[socket.socket, socket.socket]] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(5)
        port = listener.getsockname()[1]
        for i in range(3):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            s, _ = listener.accept()
            made.append((c, s))
            payload = b"x" * (100 * (i + 1))
            c.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += s.recv(4096)
        yield Pairs(listener, port, made)
    finally:
        for c, s in made:
            c.close()
            s.close()
        listener.close()


def test_established_pairs_netlink(pairs: Pairs) -> None:
    rows = dump_tcp(states=state_mask("ESTABLISHED"))
    assert all(r.state == "ESTABLISHED" for r in rows)
    by_local = {r.local: r for r in rows}
    fd_map = procnet.socket_inodes(PID)
    for i, (c, s) in enumerate(pairs.pairs):
        cport = c.getsockname()[1]
        crow = by_local[f"127.0.0.1:{cport}"]
        assert crow.peer == f"127.0.0.1:{pairs.port}"
        assert (crow.local_port, crow.peer_port) == (cport, pairs.port)
        assert crow.inode == _inode(c) and fd_map[crow.inode] == c.fileno()
        srow = next(
            r for r in rows if r.local_port == pairs.port and r.peer == f"127.0.0.1:{cport}"
        )
        assert srow.inode == _inode(s) and fd_map[srow.inode] == s.fileno()
        # tcp_info is present for connected sockets
        for row in (crow, srow):
            assert row.rtt_us is not None and row.rtt_us >= 0
            assert row.rttvar_us is not None
            assert row.retransmits == 0
            assert row.last_data_recv_ms is not None and row.last_data_sent_ms is not None
        # rows built by the fast constructor are ordinary frozen dataclasses
        assert crow == TcpSocket(**dataclasses.asdict(crow))
        assert hash(crow) == hash(TcpSocket(**dataclasses.asdict(crow)))
        with pytest.raises(dataclasses.FrozenInstanceError):
            crow.inode = 1  # type: ignore[misc]
        sent = 100 * (i + 1)
        assert crow.bytes_acked is not None and crow.bytes_acked >= sent  # +1 for the SYN
        assert srow.bytes_received == sent
        assert srow.recv_q == 0 and crow.send_q == 0
        assert crow.notsent_bytes == 0


def test_notsent_bytes_are_what_a_slow_reader_left_unsent(pairs: Pairs) -> None:
    """A client that does not read: its receive window fills, and the server's send_q holds
    bytes the kernel could not send yet (`ss -i`'s notsent), unlike bytes sent and awaiting
    only an ACK."""
    _, server = pairs.pairs[0]
    server.setblocking(False)
    sent = 0
    with contextlib.suppress(BlockingIOError):
        for _ in range(10_000):
            sent += server.send(b"y" * 65536)
    deadline = time.monotonic() + 5
    while True:
        srow = next(r for r in dump_tcp(sport=pairs.port) if r.inode == _inode(server))
        if srow.notsent_bytes or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert sent > 0 and srow.send_q is not None
    assert srow.notsent_bytes is not None and 0 < srow.notsent_bytes <= srow.send_q, srow


def test_established_pairs_proc_agree_with_netlink(pairs: Pairs) -> None:
    rows = dump_tcp(sport=pairs.port, want_info=False)
    keys = {(r.local, r.peer, r.inode, r.state) for r in rows}
    from_proc = {
        (r.local, r.peer, r.inode, r.state)
        for r in procnet.read_proc_net_tcp(PID)
        if r.local_port == pairs.port
    }
    assert keys == from_proc
    assert len([k for k in keys if k[3] == "ESTABLISHED"]) == len(pairs.pairs)


def test_want_info_false_and_multi_port_filter(pairs: Pairs) -> None:
    other = socket.socket()
    try:
        other.bind(("127.0.0.1", 0))
        other.listen(2)
        oport = other.getsockname()[1]
        rows = dump_tcp(states=LISTEN_ONLY, sport=[pairs.port, oport], want_info=False)
        assert sorted(r.local_port for r in rows) == sorted([pairs.port, oport])
        assert all(r.rtt_us is None for r in rows)
        assert {r.local_port: r.send_q for r in rows} == {pairs.port: 16, oport: 2}
    finally:
        other.close()


# --- IPv6 ----------------------------------------------------------------------------------------


def _ipv6_loopback() -> socket.socket | None:
    if not socket.has_ipv6:
        return None
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        s.bind(("::1", 0))
    except OSError:
        s.close()
        return None
    return s


def test_ipv6_loopback_formatting() -> None:
    s = _ipv6_loopback()
    if s is None:
        pytest.skip("no IPv6 loopback")
    c: socket.socket | None = None
    try:
        s.listen(3)
        port = s.getsockname()[1]
        c = socket.create_connection(("::1", port), timeout=5)
        row = _listen_row(dump_tcp(families=(socket.AF_INET6,), states=LISTEN_ONLY), port)
        assert row.local == f"[::1]:{port}"
        assert row.peer == "[::]:0"
        assert row.family == socket.AF_INET6
        assert (row.recv_q, row.send_q) == (1, 3)
        prow = _listen_row(procnet.read_proc_net_tcp(PID), port)
        assert (prow.local, prow.peer, prow.inode) == (row.local, row.peer, row.inode)
        crow = next(r for r in dump_tcp(sport=c.getsockname()[1]) if r.state == "ESTABLISHED")
        assert crow.peer == f"[::1]:{port}"
        assert crow.rtt_us is not None
    finally:
        if c is not None:
            c.close()
        s.close()


def test_ipv4_mapped_in_tcp6() -> None:
    """A dual-stack listener reports v4 peers as ``[::ffff:a.b.c.d]`` in both readers."""
    s = _ipv6_loopback()
    if s is None:
        pytest.skip("no IPv6")
    s.close()
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c: socket.socket | None = None
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        s.listen(2)
        port = s.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        cport = c.getsockname()[1]
        nl = [r for r in dump_tcp(sport=port) if r.state == "ESTABLISHED"]
        pr = [
            r
            for r in procnet.read_proc_net_tcp(PID)
            if r.local_port == port and r.state == "ESTABLISHED"
        ]
        for rows in (nl, pr):
            assert [(r.local, r.peer) for r in rows] == [
                (f"[::ffff:127.0.0.1]:{port}", f"[::ffff:127.0.0.1]:{cport}")
            ]
    finally:
        if c is not None:
            c.close()
        s.close()


# --- fds -----------------------------------------------------------------------------------------


def test_fd_usage_matches_listdir() -> None:
    count, limit = procnet.fd_usage(PID)
    assert abs(count - len(os.listdir("/proc/self/fd"))) <= 2
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert limit == (None if soft == resource.RLIM_INFINITY else soft)


def test_socket_inodes_tolerates_churn() -> None:
    """fds opening and closing while we read must never make socket_inodes raise."""
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            socks = [socket.socket() for _ in range(20)]
            for s in socks:
                s.close()

    t = threading.Thread(target=churn, daemon=True)
    t.start()
    try:
        keeper = socket.socket()
        try:
            for _ in range(100):
                inodes = procnet.socket_inodes(PID)
                assert inodes[_inode(keeper)] == keeper.fileno()
        finally:
            keeper.close()
    finally:
        stop.set()
        t.join(5)


def test_gone_process_raises_file_not_found() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    with pytest.raises(FileNotFoundError):
        procnet.socket_inodes(proc.pid)
    with pytest.raises(FileNotFoundError):
        procnet.read_proc_net_tcp(proc.pid)
    with pytest.raises(FileNotFoundError):
        netns.same_netns(proc.pid)


# --- netlink protocol edges ----------------------------------------------------------------------


def test_netlink_error_is_raised_and_socket_recovers() -> None:
    with SockDiag() as diag:
        with pytest.raises(NetlinkError) as info:
            # a NOP op that jumps 0 bytes: the kernel's verifier rejects it with NLMSG_ERROR
            diag.dump_tcp(bytecode=b"\x00\x00\x00\x00")
        assert info.value.errno == errno.EINVAL
        assert diag.closed  # dropped after the failure ...
        assert isinstance(diag.dump_tcp(states=LISTEN_ONLY), list)  # ... and reopened on demand


def test_filters_validate_input() -> None:
    with pytest.raises(ValueError):
        dump_tcp(families=(socket.AF_UNIX,))
    with pytest.raises(ValueError):
        dump_tcp(sport=80, bytecode=b"")
    with pytest.raises(ValueError):
        state_mask("NOT_A_STATE")
    assert state_mask("LISTEN") == LISTEN_ONLY
    assert state_mask("SYN_RECV") == (1 << 3) | (1 << 12)
    assert state_mask(*("ESTABLISHED", "LISTEN")) & ALL_STATES == (1 << 1) | (1 << 10)
    with pytest.raises(ValueError):
        port_filter_bytecode([])
    with pytest.raises(ValueError):
        port_filter_bytecode([70000])
    assert len(port_filter_bytecode([80])) == 16
    assert len(port_filter_bytecode([80, 443, 8080])) == 56


# --- other processes and namespaces --------------------------------------------------------------

CHILD_LISTENER = (
    "import socket, sys\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', 0))\n"
    "s.listen(3)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "sys.stdin.read()\n"  # lives until the parent closes our stdin (or kills us)
)


@contextlib.contextmanager
def _child_listener(prefix: list[str]) -> Iterator[tuple[int, int]]:
    """Start ``prefix + [python -c CHILD_LISTENER]``; yield ``(pid, port)``; stop it by pid."""
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", CHILD_LISTENER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.skip(f"child listener did not start: {err.strip()[:200]}")
        yield proc.pid, int(line)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_child_in_same_namespace() -> None:
    with _child_listener([]) as (pid, port):
        assert netns.same_netns(pid)
        child_fds = procnet.socket_inodes(pid)
        with SockDiag(pid) as diag:
            row = _listen_row(diag.dump_tcp(states=LISTEN_ONLY, sport=port), port)
        assert row.inode in child_fds
        assert row.inode not in procnet.socket_inodes(PID)
        assert (row.recv_q, row.send_q) == (0, 3)
        prow = _listen_row(procnet.read_proc_net_tcp(pid, fd_by_inode=child_fds), port)
        assert (prow.inode, prow.recv_q, prow.send_q) == (row.inode, 0, 3)


def _can_unshare_net() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare_net(), reason="needs root and a working `unshare -n`")
def test_child_in_new_network_namespace() -> None:
    with _child_listener(["unshare", "-n"]) as (pid, port):
        assert not netns.same_netns(pid)
        assert netns.netns_id(pid) != netns.netns_id()
        child_fds = procnet.socket_inodes(pid)

        # netlink opened inside the child's namespace sees its listener ...
        with SockDiag(pid) as diag:
            rows = diag.dump_tcp(states=LISTEN_ONLY)
        row = _listen_row(rows, port)
        assert row.inode in child_fds
        assert row.local == f"127.0.0.1:{port}"
        assert (row.recv_q, row.send_q) == (0, 3)
        # ... and nothing else: a fresh namespace has no other sockets.
        assert [r.inode for r in rows] == [row.inode]

        # ... while our own namespace does not have it.
        assert row.inode not in {r.inode for r in dump_tcp()}
        assert row.inode not in {r.inode for r in procnet.read_proc_net_tcp(PID)}

        # /proc/PID/net is already the child's view.
        prow = _listen_row(procnet.read_proc_net_tcp(pid, fd_by_inode=child_fds), port)
        assert (prow.inode, prow.send_q) == (row.inode, 3)
        assert procnet.listen_counters(pid) == {"ListenOverflows": 0, "ListenDrops": 0}

        # The helpers switch only a helper thread / the with-block, never us for good.
        ours = netns.netns_id("thread-self")
        assert netns.run_in_netns(pid, netns.netns_id, "thread-self") == netns.netns_id(pid)
        assert netns.netns_id("thread-self") == ours
        with netns.entered_netns(pid):
            assert netns.netns_id("thread-self") == netns.netns_id(pid)
            assert row.inode in {r.inode for r in dump_tcp()}
        assert netns.netns_id("thread-self") == ours


def test_run_in_netns_same_namespace_runs_inline() -> None:
    tid = threading.get_native_id()
    assert netns.run_in_netns(PID, threading.get_native_id) == tid
    assert netns.run_in_netns(None, lambda: 42) == 42
    with netns.entered_netns(None):
        pass


def test_only_keeps_one_process_worth_of_rows() -> None:
    """`only=(inodes, ports)`: rows with one of the inodes or a local port in `ports` (or no
    inode yet) are decoded; the rest of the namespace — here the client half of a loopback
    pair and an unrelated listener — is skipped before decoding."""
    server = socket.socket()
    other = socket.socket()
    client: socket.socket | None = None
    accepted: socket.socket | None = None
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        other.bind(("127.0.0.1", 0))
        other.listen(4)
        port, other_port = server.getsockname()[1], other.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = server.accept()
        cport = client.getsockname()[1]
        everything = dump_tcp()
        inode = {
            (r.local_port, r.state): r.inode
            for r in everything
            if r.local_port in (port, other_port, cport)
        }
        assert len(inode) == 4, inode

        by_inode = dump_tcp(only=({inode[(port, "LISTEN")]}, set()))
        ours = {(r.local_port, r.state) for r in by_inode if r.inode}
        assert (port, "LISTEN") in ours
        assert (port, "ESTABLISHED") not in ours  # its inode was not given, nor its port
        assert (cport, "ESTABLISHED") not in ours and (other_port, "LISTEN") not in ours

        by_port = dump_tcp(only=(set(), {port}))
        ours = {(r.local_port, r.state) for r in by_port if r.inode}
        assert {(port, "LISTEN"), (port, "ESTABLISHED")} <= ours
        assert (cport, "ESTABLISHED") not in ours and (other_port, "LISTEN") not in ours
        assert len(by_port) < len(everything)
    finally:
        for s in (client, accepted, server, other):
            if s is not None:
                s.close()
