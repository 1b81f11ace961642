"""What the packet events of a window say about connections: handshakes, first bytes, closes.

Input is the packet probe's `PacketsSample`s (`lifescope.probes.packets`). The probe's kernel
filter passes only SYN/FIN/RST segments, payload segments and the client's pure ACKs, and emits
only the handshake, the *first* payload of each direction and the closes, so per connection we
know (all times are kernel receive timestamps on the collector's monotonic clock):

* ``syn_synack_ms``: first SYN → SYN-ACK — the server kernel's answer (16–50 µs on loopback
  here; long when the SYN queue overflows and the client has to retransmit);
* ``synack_ack_ms``: SYN-ACK → the client's ACK — one network round trip seen from the server;
* ``handshake_ms``: first SYN → ACK (or → SYN-ACK when the probe ran without ``handshake_acks``
  and no ACK was seen) — what the client waited before it could send;
* ``ack_request_ms``: ACK → first request byte — the client's own delay (a TLS library, a
  connection pool opening ahead of use);
* ``request_response_ms``: first request byte → first response byte — the server's time to first
  byte for the connection's first request (later requests on a keep-alive connection are counted
  by the probe, not timed);
* who closed the connection (first FIN or RST) and who reset it, if anyone. The server side is
  the side whose port is one of the sample's listening ``ports``.

**Retransmissions** are SYN retransmissions only: a SYN whose sequence number was already seen
on that connection. Data retransmissions are invisible through this filter — the probe emits
just the first payload segment of each direction, so a resent segment looks like any later
one. So the summary's ``retransmits`` (a name fixed by the snapshot format) counts SYN
retransmissions only; the sockets probe's ``tcp_info`` retransmit counters cover data.

Everything here is pure: no I/O, frozen results, tested on recorded real captures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lifescope.samples import PacketEvent, PacketsSample

__all__ = [
    "SLOW_HANDSHAKE_MS",
    "Connection",
    "Notable",
    "PacketsSummary",
    "PacketsView",
    "connections",
    "notable_events",
    "packets_view",
    "percentile",
    "summarize",
]

SLOW_HANDSHAKE_MS = 100.0
"""Handshakes slower than this are notable: far above a LAN round trip, typical of a SYN that
was dropped (full SYN queue) and retransmitted after the 1 s initial RTO, or of a congested path."""


@dataclass(frozen=True, slots=True)
class Connection:
    """One TCP connection as the packet events of a window show it; ``None`` where not seen."""

    client: str
    server: str
    syn_t: float | None
    """First SYN of the connection (retransmissions do not move it)."""
    synack_t: float | None
    ack_t: float | None
    request_t: float | None
    """First payload byte from the client."""
    response_t: float | None
    """First payload byte from the server."""
    syns: int
    """SYNs seen with the connection's initial sequence number: 2 means one retransmission."""
    tls: bool
    """The first client payload was a TLS ClientHello."""
    request_line: str | None
    response_line: str | None
    closed_by: str | None
    """"client" or "server": who sent the first FIN or RST; ``None`` while open."""
    close_kind: str | None
    """"FIN" or "RST": how the first close looked."""
    close_t: float | None
    reset_by: str | None
    """Who sent the first RST, if any (also set when a FIN came first)."""
    reset_t: float | None

    @property
    def syn_retransmits(self) -> int:
        return max(0, self.syns - 1)

    @property
    def syn_synack_ms(self) -> float | None:
        return _ms(self.syn_t, self.synack_t)

    @property
    def synack_ack_ms(self) -> float | None:
        return _ms(self.synack_t, self.ack_t)

    @property
    def handshake_ms(self) -> float | None:
        """First SYN → ACK; first SYN → SYN-ACK when the ACK was not captured."""
        full = _ms(self.syn_t, self.ack_t)
        return full if full is not None else self.syn_synack_ms

    @property
    def ack_request_ms(self) -> float | None:
        return _ms(self.ack_t, self.request_t)

    @property
    def request_response_ms(self) -> float | None:
        return _ms(self.request_t, self.response_t)

    @property
    def start(self) -> float | None:
        """Earliest time the connection was seen."""
        times = [
            t
            for t in (self.syn_t, self.synack_t, self.ack_t, self.request_t, self.close_t)
            if t is not None
        ]
        return min(times) if times else None


@dataclass(frozen=True, slots=True)
class Notable:
    """A line of the packet-event log: a reset, a SYN retransmission or a slow handshake."""

    t: float
    kind: str
    """"reset", "syn_retransmit" or "slow_handshake"."""
    client: str
    server: str
    detail: str
    by: str | None = None
    """For resets: "client" or "server"."""


@dataclass(frozen=True, slots=True)
class PacketsSummary:
    status: str
    captured: int
    kernel_dropped: int
    handshake_p50_ms: float | None
    handshake_p99_ms: float | None
    resets: int
    """Connections reset (by either side) in the window — not RST packets, which can repeat."""
    retransmits: int
    """SYN retransmissions (see the module docstring: data retransmits are not visible here)."""
    connections: int
    """Connections with at least one event in the window."""
    handshakes: int
    """Connections whose handshake was timed."""
    ports: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The snapshot JSON shape: ``packets`` = {status, captured, kernel_dropped, ...}."""
        return {
            "status": self.status,
            "captured": self.captured,
            "kernel_dropped": self.kernel_dropped,
            "handshake_ms": {"p50": self.handshake_p50_ms, "p99": self.handshake_p99_ms},
            "resets": self.resets,
            "retransmits": self.retransmits,
        }


@dataclass(frozen=True, slots=True)
class PacketsView:
    summary: PacketsSummary
    connections: tuple[Connection, ...]
    """Newest first."""
    notable: tuple[Notable, ...]
    """Oldest first, like a log."""


# --- helpers --------------------------------------------------------------------------------------


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return (end - start) * 1000.0


def _port(endpoint: str) -> int | None:
    _, _, port = endpoint.rpartition(":")
    return int(port) if port.isdigit() else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linearly interpolated percentile (``q`` in 0..100) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * min(100.0, max(0.0, q)) / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class _Builder:
    """Mutable accumulation of one connection while events are folded in (private)."""

    __slots__ = (
        "ack_t",
        "client",
        "close_kind",
        "close_t",
        "closed_by",
        "isn",
        "request_line",
        "request_t",
        "reset_by",
        "reset_t",
        "response_line",
        "response_t",
        "server",
        "syn_t",
        "synack_t",
        "syns",
        "tls",
    )

    def __init__(self, client: str, server: str) -> None:
        self.client = client
        self.server = server
        self.isn: int | None = None
        self.syn_t: float | None = None
        self.synack_t: float | None = None
        self.ack_t: float | None = None
        self.request_t: float | None = None
        self.response_t: float | None = None
        self.syns = 0
        self.tls = False
        self.request_line: str | None = None
        self.response_line: str | None = None
        self.closed_by: str | None = None
        self.close_kind: str | None = None
        self.close_t: float | None = None
        self.reset_by: str | None = None
        self.reset_t: float | None = None

    def freeze(self) -> Connection:
        return Connection(
            client=self.client,
            server=self.server,
            syn_t=self.syn_t,
            synack_t=self.synack_t,
            ack_t=self.ack_t,
            request_t=self.request_t,
            response_t=self.response_t,
            syns=self.syns,
            tls=self.tls,
            request_line=self.request_line,
            response_line=self.response_line,
            closed_by=self.closed_by,
            close_kind=self.close_kind,
            close_t=self.close_t,
            reset_by=self.reset_by,
            reset_t=self.reset_t,
        )


def _events(
    samples: Iterable[PacketsSample], start: float | None, end: float | None
) -> list[tuple[PacketEvent, frozenset[int]]]:
    out: list[tuple[PacketEvent, frozenset[int]]] = []
    for sample in samples:
        ports = frozenset(sample.ports)
        for event in sample.events:
            if (start is None or event.t >= start) and (end is None or event.t <= end):
                out.append((event, ports))
    out.sort(key=lambda pair: pair[0].t)
    return out


def _from_server(event: PacketEvent, ports: frozenset[int]) -> bool:
    """Whether the event travelled server → client.

    The server's port is a listening port. Without ports (a recording from a probe that found
    none) a SYN still says who the client is, and otherwise the lower port is taken as the
    server's — right for every ordinary service port against an ephemeral client port.
    """
    sport, dport = _port(event.src), _port(event.dst)
    if dport in ports:
        return False
    if sport in ports:
        return True
    if event.kind == "SYN":
        return False
    if event.kind == "SYNACK":
        return True
    return sport is not None and dport is not None and sport < dport


# --- the analysis ---------------------------------------------------------------------------------


def connections(
    samples: Iterable[PacketsSample], start: float | None = None, end: float | None = None
) -> tuple[Connection, ...]:
    """Fold the window's packet events into connections, oldest first.

    A connection is keyed by (client, server) endpoints; a SYN with a new sequence number on a
    key whose connection already got past its SYN starts a new connection (the 4-tuple was
    reused). Events of connections opened before the window (a FIN, a RST) give connections with
    no handshake fields.
    """
    done: list[_Builder] = []
    live: dict[tuple[str, str], _Builder] = {}
    for event, ports in _events(samples, start, end):
        from_server = _from_server(event, ports)
        client, server = (event.dst, event.src) if from_server else (event.src, event.dst)
        key = (client, server)
        conn = live.get(key)
        kind = event.kind
        if kind == "SYN" and not from_server:
            if conn is not None and conn.isn is not None and conn.isn != event.seq:
                done.append(conn)
                conn = None
            elif conn is not None and conn.isn is None and conn.close_t is not None:
                done.append(conn)  # the previous use of this 4-tuple closed
                conn = None
            if conn is None:
                conn = live[key] = _Builder(client, server)
            if conn.isn is None:
                conn.isn = event.seq
                conn.syn_t = event.t
            if event.seq == conn.isn:
                conn.syns += 1
            continue
        if conn is None:
            conn = live[key] = _Builder(client, server)
        side = "server" if from_server else "client"
        if kind == "SYNACK":
            if conn.synack_t is None:
                conn.synack_t = event.t
        elif kind == "ACK":
            if conn.ack_t is None:
                conn.ack_t = event.t
        elif kind in ("DATA", "TLS_HELLO"):
            if from_server:
                if conn.response_t is None:
                    conn.response_t = event.t
                    conn.response_line = event.line
            elif conn.request_t is None:
                conn.request_t = event.t
                conn.request_line = event.line
                conn.tls = kind == "TLS_HELLO"
        elif kind in ("FIN", "RST"):
            if conn.closed_by is None:
                conn.closed_by = side
                conn.close_kind = kind
                conn.close_t = event.t
            if kind == "RST" and conn.reset_by is None:
                conn.reset_by = side
                conn.reset_t = event.t
    done.extend(live.values())
    built = [b.freeze() for b in done]
    built.sort(key=lambda c: c.start if c.start is not None else 0.0)
    return tuple(built)


def notable_events(
    conns: Iterable[Connection], slow_handshake_ms: float = SLOW_HANDSHAKE_MS
) -> tuple[Notable, ...]:
    """Resets, SYN retransmissions and handshakes slower than ``slow_handshake_ms``, by time."""
    out: list[Notable] = []
    for c in conns:
        if c.reset_t is not None:
            out.append(
                Notable(
                    c.reset_t, "reset", c.client, c.server, f"reset by {c.reset_by}", c.reset_by
                )
            )
        if c.syn_retransmits and c.syn_t is not None:
            out.append(
                Notable(
                    c.syn_t,
                    "syn_retransmit",
                    c.client,
                    c.server,
                    f"SYN sent {c.syns} times"
                    + (f", answered after {c.syn_synack_ms:.1f} ms" if c.syn_synack_ms else ""),
                )
            )
        handshake = c.handshake_ms
        if handshake is not None and handshake > slow_handshake_ms and c.syn_t is not None:
            out.append(
                Notable(
                    c.syn_t, "slow_handshake", c.client, c.server, f"handshake {handshake:.1f} ms"
                )
            )
    out.sort(key=lambda n: n.t)
    return tuple(out)


def summarize(
    samples: Sequence[PacketsSample],
    status: str | None = None,
    conns: Sequence[Connection] | None = None,
) -> PacketsSummary:
    """Counters and handshake percentiles of the window.

    ``status`` is the probe's latest status (the samples do not carry it); by default "ok" when
    there are samples and "unavailable" when there are none.
    """
    if conns is None:
        conns = connections(samples)
    handshakes = [h for h in (c.handshake_ms for c in conns) if h is not None]
    return PacketsSummary(
        status=status if status is not None else ("ok" if samples else "unavailable"),
        captured=sum(s.captured for s in samples),
        kernel_dropped=sum(s.kernel_dropped for s in samples),
        handshake_p50_ms=percentile(handshakes, 50),
        handshake_p99_ms=percentile(handshakes, 99),
        resets=sum(1 for c in conns if c.reset_by is not None),
        retransmits=sum(c.syn_retransmits for c in conns),
        connections=len(conns),
        handshakes=len(handshakes),
        ports=samples[-1].ports if samples else (),
    )


def packets_view(
    samples: Sequence[PacketsSample],
    status: str | None = None,
    slow_handshake_ms: float = SLOW_HANDSHAKE_MS,
) -> PacketsView:
    """Summary, connections (newest first) and the notable-event log for one window."""
    conns = connections(samples)
    return PacketsView(
        summary=summarize(samples, status, conns),
        connections=tuple(reversed(conns)),
        notable=notable_events(conns, slow_handshake_ms),
    )
