"""Connections from the kernel's side: listen queues, phases of each connection, and which
socket each blocked thread is waiting on.

Phase is inferred from state, queues and `tcp_info` timers, the way `ss -ti` would be read
by hand: data received more recently than data sent means a request is being read or
handled; bytes still unacknowledged mean a response is going out; neither, with a response
sent after the last request, is an idle keep-alive connection. What cannot be told apart
from these (a request fully read and now in the handler vs. one still arriving) is the same
phase, "request"; the layer engine refines it with stacks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from lifescope import syscalls
from lifescope.samples import Socket, SocketsSample, ThreadsSample

CLOSING = frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
                     "CLOSING", "CLOSE"})  # fmt: skip
HALF_OPEN = frozenset({"SYN_RECV", "NEW_SYN_RECV"})
TIE_ACTIVE_MS = 1000


@lru_cache(maxsize=65536)
def port(address: str) -> int:
    """Cached: at 10k connections the layer engine asks ~150k times per refresh."""
    return int(address.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class Listener:
    local: str
    accept_queue: int
    backlog: int
    half_open: int = 0
    overflows: int | None = None
    """Connections this listener turned away in the window (its own `sk_drops`), or — when
    the kernel's per-socket count is unavailable — `ListenOverflows` of the whole network
    namespace, which blames every listener for any one's drops (`overflows_scope`)."""
    overflows_scope: str = "listener"
    """"listener" (its own count) or "namespace"."""


@dataclass(frozen=True, slots=True)
class Connection:
    socket: Socket
    kind: str
    """client (a peer of one of our listeners) or outbound (we connected out)."""
    phase: str
    """handshake, accept-queue, request, response, idle, closing, connecting, open."""
    thread: int | None


def listen_ports(sockets: Sequence[Socket]) -> set[int]:
    return {port(s.local) for s in sockets if s.state == "LISTEN"}


def phase(sock: Socket, kind: str) -> str:
    if sock.state in HALF_OPEN:
        return "handshake"
    if sock.state in CLOSING:
        return "closing"
    if sock.state == "SYN_SENT":
        return "connecting"
    if sock.state != "ESTABLISHED":
        return sock.state.lower()
    if kind == "client" and sock.inode == 0:
        # Completed handshake, not accepted: no file yet, so no inode. (An fd that is merely
        # missing from our once-a-second fd map is a fresh accept, not a queued connection.)
        return "accept-queue"
    if sock.send_q > 0 and (kind != "client" or sock.notsent_bytes != 0):
        return "response" if kind == "client" else "request"
    # A response wholly sent, awaiting only the client's ACK, is in the network, no longer the
    # server's to write: the timers below place such a connection. One with bytes not sent
    # is still being written, however short: http.server's 2-byte body held back by Nagle
    # behind its unacknowledged headers until the client's delayed ACK (~40 ms; notsent 5 of
    # send_q 116 in the hog runs) is a response not finished.
    if sock.recv_q > 0:
        return "request" if kind == "client" else "response"
    received, sent = sock.last_data_recv_ms, sock.last_data_sent_ms
    if received is None or sent is None:
        return "open"
    if kind == "client" and sock.bytes_acked == 0 and (sock.bytes_received or 0) > 0:
        # A request came in and not one byte went out yet: being served, however long it
        # takes. (On a fresh connection the two timers tie — the send timer starts at the
        # handshake — so the tie rule below would call a 3 s request "idle".)
        return "request"
    # tcp_info counts in whole milliseconds, and on loopback or a fast LAN a keep-alive
    # client's next request lands in the same millisecond as the previous response: a tie.
    # Measured here (closed-loop client, 80 ms handler): the two timers were equal in every
    # sample. A tie cannot say which came last, so a young one is taken as a request being
    # served and an old one as a connection gone idle after a fast response.
    if received == sent and received < TIE_ACTIVE_MS:
        return "request" if kind == "client" else "response"
    if kind == "client":
        return "request" if received < sent else "idle"
    return "response" if sent < received else "idle"


def thread_sockets(
    threads: ThreadsSample | None, sockets: Sequence[Socket]
) -> dict[int, tuple[Socket, str]]:
    """tid → (socket, syscall) for threads blocked in a call whose first argument is that
    socket's fd: "worker-3 in recvfrom on fd 17 → 10.0.0.5:5432"."""
    if threads is None:
        return {}
    by_fd = {(s.pid, s.fd): s for s in sockets if s.fd is not None}  # fds are per process
    joined = {}
    for thread in threads.threads:
        name = syscalls.name(thread.syscall)
        sock = by_fd.get((thread.pid, thread.arg0)) if thread.arg0 is not None else None
        if name in syscalls.FD_FIRST and sock is not None:
            joined[thread.tid] = (sock, name or "")
    return joined


@dataclass(frozen=True, slots=True)
class ConnectionsStats:
    listeners: tuple[Listener, ...]
    connections: tuple[Connection, ...]
    by_state: tuple[tuple[str, int], ...]
    by_phase: tuple[tuple[str, int], ...]
    keepalive_idle: int
    threads: dict[int, tuple[Socket, str]]


def analyse(samples: Sequence[SocketsSample], latest_threads: ThreadsSample | None) -> (
    ConnectionsStats | None
):  # fmt: skip
    if not samples:
        return None
    latest = samples[-1]
    sockets = latest.sockets
    ports = listen_ports(sockets)
    joined = thread_sockets(latest_threads, sockets)
    waiting_on = {sock.inode: tid for tid, (sock, _) in joined.items()}
    namespace = None
    if samples[0].listen_overflows is not None and latest.listen_overflows is not None:
        namespace = latest.listen_overflows - samples[0].listen_overflows
    first_drops = {s.local: s.drops for s in samples[0].sockets if s.state == "LISTEN"}
    half_open = Counter(port(s.local) for s in sockets if s.state in HALF_OPEN)
    listeners = []
    for s in sockets:
        if s.state != "LISTEN":
            continue
        before = first_drops.get(s.local)
        own: int | None
        if s.drops is not None and before is not None:
            own, scope = s.drops - before, "listener"
        else:
            own, scope = namespace, "namespace"
        queued = half_open[port(s.local)]
        listeners.append(Listener(s.local, s.recv_q, s.send_q, queued, own, scope))
    connections = []
    for sock in sockets:
        if sock.state == "LISTEN":
            continue
        kind = "client" if port(sock.local) in ports else "outbound"
        connections.append(Connection(sock, kind, phase(sock, kind), waiting_on.get(sock.inode)))
    by_phase = Counter(c.phase for c in connections)
    return ConnectionsStats(
        listeners=tuple(listeners),
        connections=tuple(connections),
        by_state=tuple(sorted(Counter(s.state for s in sockets).items())),
        by_phase=tuple(sorted(by_phase.items())),
        keepalive_idle=sum(1 for c in connections if c.kind == "client" and c.phase == "idle"),
        threads=joined,
    )
