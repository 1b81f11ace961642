"""Handshakes, first bytes and closes of the target's TCP connections, from a packet socket.

What it answers: how long handshakes take (SYN → SYN-ACK → ACK), when a connection's first
request and first response bytes went by, who closed it (FIN) or reset it (RST), and whether
clients retransmit SYNs — layer L0 of a request, which no socket table shows.

**How, and why this way** (measured on this kind of machine, 2 cores, loopback load):

* scapy's ``AsyncSniffer`` handled ~5k packets/s at ~60 % of a core with 78–92 % kernel drops
  (64 KiB buffer, full dissection of every packet). A plain ``AF_PACKET`` socket with a kernel BPF
  filter and a 4 MiB receive buffer kept up with 18–56k packets/s at 14–21 % with no drops. So:
  one packet socket, opened *inside the target's network namespace*
  (:func:`lifescope.probes.netns.run_in_netns`; the socket stays bound to that namespace after the
  helper thread switched back), not bound to an interface, so it sees every interface of that
  namespace, loopback included.
* ``SOCK_DGRAM`` rather than ``SOCK_RAW``: the kernel strips the link-layer header, so offset 0
  is the IP header on ``lo``, Ethernet, veth, tun and WireGuard alike, and one filter program fits
  all of them (with ``SOCK_RAW`` the offsets depend on each interface's link type). Nothing we use
  (filter, timestamps, ``sll_pkttype``, drop counters) differs between the two.
* the filter is classic BPF assembled by :mod:`lifescope.probes.bpf` (why not scapy/libpcap: see
  there — libpcap is not installed on a fresh Debian, pcap cannot address TCP flags in IPv6, and it
  cannot drop ``lo``'s outgoing copies or return a per-packet snap length). It passes only TCP
  to/from the target's listening ports, and of that only SYN/FIN/RST segments, segments carrying
  payload (the kernel cannot know which payload is a connection's first) and pure ACKs towards
  the server (one of them is the handshake's third packet). On ``lo`` every packet is seen twice;
  the filter drops the outgoing copy in the kernel, and :meth:`PacketsProbe._drain` checks
  ``sll_pkttype == PACKET_OUTGOING`` again in case ``lo`` is not the interface the filter expected.
  The kernel copies only headers + 8 payload bytes per packet (headers + 256 with ``http_lines``).
* headers are parsed with ``struct`` (:func:`parse_segment`), not scapy: ``scapy.IP(data)``
  costs ~95 µs per packet here, more than a core at the 18–56k/s above; unpacking the fixed
  headers costs ~0.5 µs, and nothing beyond the fixed headers is needed.
* what it costs (``bench/bench_packets.py``, 2 cores, loopback, the probe in its own process and
  encoding its samples like the collector): 6.5k short connections/s = ~55k filtered packets/s at
  ~53 % of a core; 105k keep-alive payload packets/s at ~62 %; 88k streamed segments/s at ~43 %;
  no kernel drops. That is ~5 µs a packet, ~3.5 µs of which is the ``recvmsg`` syscall itself on
  this VM (measured alone), so a ``PACKET_RX_RING`` (TPACKET_V3, no syscall per packet) is the
  next step if that is ever too much. A queued packet takes ~830 bytes of the 4 MiB buffer (skb
  truesize), so the buffer rides out ~10k packets, a ~200 ms stall at 50k packets/s; starved of
  CPU for longer (seen when the 2 cores were shared with other busy processes), the kernel drops
  and ``kernel_dropped`` says so.

**Timestamps**: ``SO_TIMESTAMPNS`` makes the kernel attach the receive time of each packet
(``CLOCK_REALTIME``, stamped when the device handed the packet over, before any scheduling delay of
ours). We convert to the collector's ``time.monotonic()`` with an offset ``realtime - monotonic``
measured as the tightest of three bracketed clock reads, re-measured with every sample (0.25 s)
and adopted only when it moved by more than 50 µs (an NTP step or accumulated slew). Differences
between two packets — handshake times — therefore come straight from kernel timestamps and are
exact to the nanosecond unless an adjustment falls between them. On loopback SYN → SYN-ACK
measures 5–25 µs here (the recorded fixture), SYN → ACK under 50 µs. The kernel switches
stamping-on-arrival on a moment after the first socket asks for it; capture starts once it is on
(:func:`_wait_for_rx_timestamps`), or a packet read early would carry its read time.

**Per-connection state** exists only to emit the *first* payload segment of each direction: an
entry is created at a client's SYN, remembers both initial sequence numbers (to recognise the
handshake's ACK: ``ack == server ISN + 1``, and SYN retransmissions: same ISN again) and is deleted
when both first payloads, a RST, or both FINs have been seen. The table is an insertion-ordered
LRU of at most :data:`MAX_CONNECTIONS` entries. Connections that were already open when the
probe started have no entry; their payload is counted, not emitted. FIN and RST are emitted for
every connection, tracked or not, unless over the event budget (:data:`MAX_EVENTS_PER_SAMPLE`).

**Privacy**: payload bytes are never stored. Without ``http_lines`` the kernel hands us at most 8
payload bytes per packet, enough to recognise a TLS ClientHello (record type 0x16, version 0x03,
handshake type 1); with ``http_lines`` the first line of an HTTP/1.x request or response
(``GET /path HTTP/1.1``, ``HTTP/1.1 200 OK``) is kept, at most 200 characters, latin-1, with
control characters replaced.

Needs CAP_NET_RAW; without it the probe reports ``denied`` with the remedy and stops.

Why this file is ~740 lines: seventy of them are this account of what was measured; the rest
is one pipeline — the capture socket, the filter's ports, the segment parser and the probe that
follows connections from SYN to FIN — whose constants and per-connection state are shared. The
filter's assembler is apart (``bpf``), and so is the analysis (``analysis/packets``).
"""

from __future__ import annotations

import errno
import re
import select
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from lifescope.probes import bpf, procnet
from lifescope.probes.base import Emit, Probe
from lifescope.probes.netlink_diag import LISTEN_ONLY, SockDiag, format_endpoint
from lifescope.probes.netns import run_in_netns
from lifescope.samples import PacketEvent, PacketsSample
from lifescope.target import Target

__all__ = [
    "EMIT_INTERVAL_S",
    "MAX_CONNECTIONS",
    "MAX_EVENTS_PER_SAMPLE",
    "PacketsProbe",
    "TcpSegment",
    "http_first_line",
    "is_tls_client_hello",
    "listening_ports",
    "parse_segment",
]

# --- constants (linux/socket.h, asm-generic/socket.h, linux/if_packet.h, linux/if_ether.h) -------

SOL_PACKET: Final = 263
PACKET_STATISTICS: Final = 6
SO_TIMESTAMPNS: Final = 35  # SO_TIMESTAMPNS_OLD: a struct timespec of two longs
SO_TIMESTAMPING: Final = 37  # SO_TIMESTAMPING_OLD: three struct timespecs
SOF_TIMESTAMPING_RX_SOFTWARE: Final = 1 << 3
SOF_TIMESTAMPING_SOFTWARE: Final = 1 << 4
SO_RCVBUFFORCE: Final = 33
ETH_P_ALL: Final = 0x0003
PACKET_OUTGOING: Final = 4

RCVBUF_BYTES: Final = 4 << 20
"""4 MiB: with the filter attached this absorbed every burst in the measurements (0 drops at
18–56k packets/s); the kernel's default (~208 KiB) is capped by ``net.core.rmem_max``, so root
uses ``SO_RCVBUFFORCE`` to get the full size."""

EMIT_INTERVAL_S: Final = 0.25
PORTS_REFRESH_S: Final = 1.0
"""Listening ports are re-read ~1 Hz: a LISTEN-only netlink dump is ~0.05 ms, the fd walk ~6 µs
per fd; the filter is rebuilt only when the set changes."""

MAX_CONNECTIONS: Final = 65_536
"""Connection-table bound. An entry is ~250 bytes, so the table stays under ~16 MiB even under a
SYN flood; the oldest entries go first."""

MAX_EVENTS_PER_SAMPLE: Final = 4_096
"""Soft bound on events per 0.25 s sample (~16k/s; a short connection makes ~7 events, so ~2k new
connections a second are seen in full). The stream and the UI must stay bounded under a SYN flood,
yet a cut through the middle of connections would bias the handshake statistics, so the probe
samples *whole connections*: past this bound it stops tracking new ones (their SYNs and closes
are counted in ``events_suppressed``, not sent) but still reports the connections it already
tracks, up to twice the bound. Measured in ``bench/bench_packets.py``: 6.6k connections/s gave
~16k events/s sent, the rest counted. The status says ``degraded`` while this happens."""

DRAIN_BUDGET: Final = 20_000
"""Packets read in one go before looking at the clock again (so samples stay on time)."""

HTTP_LINE_MAX: Final = 200
PAYLOAD_SNAP: Final = 8
PAYLOAD_SNAP_HTTP: Final = 256

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

_IP4 = struct.Struct("!BxHxxHxBxx4s4s")  # ver/ihl, total length, frag, proto, src, dst
_TCP = struct.Struct("!HHIIBB")  # sport, dport, seq, ack, data offset, flags
_STATS = struct.Struct("=II")  # struct tpacket_stats {tp_packets, tp_drops}
_TIMESPEC = struct.Struct("@ll")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


# --- parsing --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """The fixed IP and TCP header fields of one captured segment (addresses in network order)."""

    family: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload_len: int
    """Payload length from the IP header: the segment's, even when fewer bytes were captured."""
    payload_at: int
    """Offset of the payload in the captured bytes."""


if TYPE_CHECKING:  # annotations only: `tuple[...]` at runtime needs 3.9 (remote collectors: 3.8)
    _Parsed = tuple[int, bytes, bytes, int, int, int, int, int, int, int]


def _parse(data: bytes) -> _Parsed | None:
    """The hot-path parser; :func:`parse_segment` wraps it for everyone else."""
    n = len(data)
    if n < 40:
        return None
    version = data[0] >> 4
    if version == 4:
        vihl, total, frag, proto, src, dst = _IP4.unpack_from(data)
        ihl = (vihl & 0x0F) * 4
        if proto != 6 or ihl < 20 or frag & 0x1FFF or n < ihl + 20:
            return None
        family = socket.AF_INET
    elif version == 6:
        if n < 60 or data[6] != 6:
            return None
        ihl = 40
        total = 40 + ((data[4] << 8) | data[5])
        src = data[8:24]
        dst = data[24:40]
        family = socket.AF_INET6
    else:
        return None
    sport, dport, seq, ack, off, flags = _TCP.unpack_from(data, ihl)
    headers = ihl + (off >> 4) * 4
    payload = total - headers
    if off < 0x50 or payload < 0:
        return None
    return family, src, dst, sport, dport, seq, ack, flags, payload, headers


def parse_segment(data: bytes) -> TcpSegment | None:
    """IP (v4 or v6 without extension headers) + TCP headers of a packet, or ``None``.

    ``data`` starts at the IP header (a ``SOCK_DGRAM`` packet socket's view). Never raises: any
    byte string that is not a well-formed unfragmented TCP segment gives ``None``. Fragments other
    than the first have no TCP header and are rejected.
    """
    parsed = _parse(bytes(data))
    return None if parsed is None else TcpSegment(*parsed)


_METHODS: Final = (
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
)
_REQUEST_END = re.compile(rb" HTTP/1\.[019]$")
_STATUS = re.compile(rb"HTTP/1\.[01] \d{3}(?: |$)")
_PRINTABLE = {i: "?" for i in (*range(0x20), *range(0x7F, 0xA0))}


def http_first_line(payload: bytes, *, request: bool) -> str | None:
    """The first line of an HTTP/1.x request (``request=True``) or response, else ``None``.

    A request line must start with a method and end in `` HTTP/1.x`` unless it is cut off by the
    end of the captured bytes; a response must start with ``HTTP/1.x NNN``. The result is at most
    200 characters, decoded latin-1, with control characters replaced by ``?`` (a request target
    can contain anything a client sends, and it ends up on someone's terminal).
    """
    if request:
        if not payload.startswith(_METHODS):
            return None
    elif _STATUS.match(payload) is None:
        return None
    end = payload.find(b"\r\n")
    if end < 0:
        end = payload.find(b"\n")
    if end >= 0:
        line = payload[:end]
        if request and _REQUEST_END.search(line) is None:
            return None
    else:
        line = payload
    return line[:HTTP_LINE_MAX].decode("latin-1").translate(_PRINTABLE)


def is_tls_client_hello(payload: bytes) -> bool:
    """A TLS handshake record (0x16, version 0x03xx) whose first message is a ClientHello (1)."""
    return len(payload) >= 6 and payload[0] == 0x16 and payload[1] == 0x03 and payload[5] == 0x01


# --- the target's ports ---------------------------------------------------------------------------


def listening_ports(pid: int, diag: SockDiag | None = None) -> tuple[int, ...]:
    """TCP ports the process listens on: LISTEN sockets whose inode is one of its fds.

    Uses the caller's sock_diag socket (LISTEN-only dump, ~0.05 ms) when given, else
    ``/proc/PID/net/tcp{,6}``. Raises :class:`FileNotFoundError` when the process is gone.
    """
    inodes = procnet.socket_inodes(pid)
    if diag is not None:
        rows = diag.dump_tcp(states=LISTEN_ONLY, want_info=False)
    else:
        rows = [r for r in procnet.read_proc_net_tcp(pid) if r.state == "LISTEN"]
    return tuple(sorted({r.local_port for r in rows if r.inode in inodes}))


# --- the probe ------------------------------------------------------------------------------------


class _Conn:
    """Handshake state of one tracked connection (mutable, private to the probe thread)."""

    __slots__ = ("client_data", "client_fin", "client_isn", "server_data", "server_fin", "synack")

    def __init__(self, client_isn: int) -> None:
        self.client_isn = client_isn
        self.synack: int | None = None  # server ISN once the SYN-ACK was seen
        self.client_data = False
        self.server_data = False
        self.client_fin = False
        self.server_fin = False


class _Denied(Exception):
    def __init__(self, reason: str, remedy: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.remedy = remedy


_REMEDY_NET_RAW: Final = (
    "capturing packets needs CAP_NET_RAW: run lifescope as root (sudo), or grant it with "
    "`setcap cap_net_raw+ep` on the Python that runs the collector, or in a container "
    "`--cap-add NET_RAW`"
)
_REMEDY_NETNS: Final = (
    "run lifescope as root: entering the target's network namespace needs CAP_SYS_ADMIN, and "
    "capturing packets needs CAP_NET_RAW"
)


def _open_capture() -> tuple[socket.socket, int, int]:
    """Create the packet socket (in the current thread's namespace), filtered to nothing yet.

    Returns ``(socket, lo ifindex, receive buffer bytes)``. The socket receives from creation on
    (binding ``ETH_P_ALL`` to "no interface" is only possible through ``socket()``), so a drop-all
    filter goes on first and whatever slipped in before it is drained by the caller.
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except PermissionError as exc:
        reason = f"no CAP_NET_RAW: packet socket refused ({exc.strerror})"
        raise _Denied(reason, _REMEDY_NET_RAW) from exc
    try:
        bpf.attach(sock, bpf.drop_all_program())
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        except PermissionError:  # no CAP_NET_ADMIN: capped by net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        try:
            lo = socket.if_nametoindex("lo")
        except OSError:
            lo = 1  # LOOPBACK_IFINDEX: the kernel gives lo index 1 in every namespace
        rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # the kernel doubles
    except BaseException:
        sock.close()
        raise
    return sock, lo, rcvbuf


def _clock_offset_ns() -> int:
    """``CLOCK_REALTIME - CLOCK_MONOTONIC`` in ns, from the tightest of three bracketed reads."""
    best: tuple[int, int] | None = None
    for _ in range(3):
        m1 = time.monotonic_ns()
        r = time.time_ns()
        m2 = time.monotonic_ns()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, r - (m1 + m2) // 2)
    assert best is not None
    return best[1]


def _wait_for_rx_timestamps(timeout: float = 0.5) -> bool:
    """Wait until the kernel stamps packets as they arrive; ``False`` if it did not in time.

    The first socket that asks for timestamps only *schedules* the switch that makes the kernel
    stamp packets on arrival (``net_enable_timestamp`` defers it to a work item). A packet that
    arrives before the switch is stamped when it is read instead — 20 ms late in a test here —
    while the next one, after the switch, carries its true time: a request could read as answered
    before it was sent. Under two CPU hogs the switch lagged the packet socket's
    ``SO_TIMESTAMPNS`` in 19 of 300 attaches, by at most 3 ms. The switch is global, so a UDP
    datagram to ourselves on loopback shows when it is on: with ``SO_TIMESTAMPING`` alone, the
    kernel reports a software receive stamp only when one was taken on arrival.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.settimeout(timeout)
            flags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
            udp.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
            while True:
                udp.sendto(b"t", udp.getsockname())
                _, anc, _, _ = udp.recvmsg(1, socket.CMSG_SPACE(3 * _TIMESPEC.size))
                if any(
                    (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPING)
                    and _TIMESPEC.unpack_from(data) != (0, 0)
                    for level, kind, data in anc
                ):
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.002)
    except OSError:  # no loopback here: capture anyway, the first packets may be stamped late
        return False


DRAIN_BATCH_S = 0.02


class PacketsProbe(Probe):
    """Capture the target's TCP handshakes, first payloads and closes; emit `PacketsSample`s.

    ``ports``: capture these ports instead of discovering the target's listening ports (for a
    target whose fds we may not read, or a benchmark). ``http_lines``: keep HTTP/1.x first lines
    (the ``--http-lines`` opt-in). ``handshake_acks``: pass pure client ACKs through the kernel
    filter so the handshake's ACK can be timed (see :func:`lifescope.probes.bpf.tcp_events_program`
    for what that costs); without it only SYN → SYN-ACK is timed.
    """

    probe_name = "packets"

    def __init__(
        self,
        target: Target,
        emit: Emit,
        http_lines: bool = False,
        ports: Sequence[int] | None = None,
        *,
        handshake_acks: bool = True,
    ) -> None:
        super().__init__(target, emit)
        self.http_lines = http_lines
        self.fixed_ports = tuple(sorted({int(p) for p in ports})) if ports is not None else None
        self.handshake_acks = handshake_acks
        self.shedding = False
        """SYN/FIN/RST only, while the collector sheds load (see `_install`)."""
        self.ports: tuple[int, ...] = ()
        self.rcvbuf = 0
        # counters over the probe's life (the samples carry per-interval deltas)
        self.packets = 0
        self.later_payloads = 0
        self.other_acks = 0
        self.malformed = 0
        self.outgoing_copies = 0  # lo's second copies that got past the kernel filter (expect 0)
        self.events_suppressed = 0
        self.captured_total = 0
        self.dropped_total = 0
        self._sock: socket.socket | None = None
        self._lo = 1
        self._port_set: frozenset[int] = frozenset()
        self._conns: OrderedDict[tuple[bytes, int, bytes, int], _Conn] = OrderedDict()
        self._events: list[PacketEvent] = []
        self._offset_ns = 0
        self.rx_stamps_on_arrival = False
        """Whether the kernel was stamping packets on arrival when the capture began."""
        self._diag: SockDiag | None = None
        self._suppressed_at = 0.0

    # --- lifecycle --------------------------------------------------------------------------------

    def sample_loop(self) -> None:
        try:
            self._capture()
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._diag is not None:
                self._diag.close()
                self._diag = None

    def _capture(self) -> None:
        pid = self.target.pid
        try:
            self._sock, self._lo, self.rcvbuf = run_in_netns(pid, _open_capture)
        except _Denied as exc:
            self.set_status("denied", exc.reason, exc.remedy)
            return
        except FileNotFoundError:
            self.set_status("gone", "the target process exited")
            return
        except PermissionError as exc:
            self.set_status(
                "denied",
                f"cannot enter the target's network namespace ({exc.strerror})",
                _REMEDY_NETNS,
            )
            return
        except OSError as exc:
            if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
                self.set_status(
                    "unavailable",
                    f"packet sockets are not available here ({exc.strerror})",
                    "a kernel with CONFIG_PACKET, and no seccomp filter blocking AF_PACKET",
                )
                return
            raise
        self.rx_stamps_on_arrival = _wait_for_rx_timestamps()
        self._drain_unfiltered()
        self._offset_ns = _clock_offset_ns()
        next_emit = time.monotonic() + EMIT_INTERVAL_S
        next_ports = 0.0
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        while not self.stopping:
            now = time.monotonic()
            if now >= next_ports:
                if not self._refresh_ports():
                    return
                next_ports = now + PORTS_REFRESH_S
            if now >= next_emit:
                self._emit_sample(now)
                next_emit = max(next_emit + EMIT_INTERVAL_S, now + EMIT_INTERVAL_S / 2)
            self._drain()
            wait_ms = max(0.0, min(next_emit, next_ports) - time.monotonic()) * 1000
            if poller.poll(min(wait_ms, EMIT_INTERVAL_S * 1000) + 1):
                # Let packets gather before draining: waking per packet cost the probe 15 % of
                # a core and the target ~1,400 preemptions/s under load, draining every 20 ms
                # 6 % and ~440/s (bench/bench_overhead.py). Timestamps are the kernel's, so
                # batching changes no number, and 4 MiB buffer ~200 ms at 50k packets/s.
                self.sleep(DRAIN_BATCH_S)
        self._emit_sample(time.monotonic())

    def _drain_unfiltered(self) -> None:
        """Discard what queued before the drop-all filter, and zero the kernel's counters."""
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(1)
            except (BlockingIOError, InterruptedError):
                break
        self._read_stats()

    def _refresh_ports(self) -> bool:
        """Re-read the listening ports; rebuild the filter when they changed. False: target gone."""
        if not self.target.alive():
            self.set_status("gone", "the target process exited")
            return False
        if self.fixed_ports is not None:
            ports = self.fixed_ports
        else:
            try:
                ports = self._discover()
            except FileNotFoundError:
                self.set_status("gone", "the target process exited")
                return False
            except PermissionError as exc:
                self.set_status(
                    "denied",
                    f"cannot read the target's sockets ({exc.strerror})",
                    "run lifescope as the target's user or as root",
                )
                return True
        shedding = self.budget.scale < 1.0
        if ports != self.ports or shedding != self.shedding:
            if self.shedding and not shedding:
                # Connections opened while payload was filtered out never saw their first
                # bytes; the next payload would be a later request, reported as the first.
                self._conns.clear()
            self.shedding = shedding
            self._install(ports)
        self._update_status()
        return True

    def _update_status(self) -> None:
        if not self.ports:
            self.set_status(
                "degraded",
                "the target has no listening TCP socket (yet): nothing to capture",
                "packets are captured on the target's listening ports; pass `ports` explicitly "
                "for a process that only connects out",
            )
        elif self._suppressing():
            self.set_status(
                "degraded",
                f"over {MAX_EVENTS_PER_SAMPLE / EMIT_INTERVAL_S:.0f} packet events/s: "
                "the excess is counted, not sent",
                "narrow the capture to fewer ports",
            )
        else:
            self.set_status("ok")

    def _discover(self) -> tuple[int, ...]:
        pid = self.target.pid
        if self._diag is None:
            try:
                self._diag = SockDiag(pid)
            except FileNotFoundError:
                raise
            except OSError:
                return listening_ports(pid)
        try:
            return listening_ports(pid, self._diag)
        except FileNotFoundError:
            raise
        except OSError:
            self._diag.close()
            self._diag = None
            return listening_ports(pid)

    def _install(self, ports: tuple[int, ...]) -> None:
        assert self._sock is not None
        # While shedding, only handshakes and closes: a saturated keep-alive server's packets
        # are nearly all payload, which kept this probe at ~10 % of a core (bench_overhead).
        program = bpf.tcp_events_program(
            ports,
            payload_snap=PAYLOAD_SNAP_HTTP if self.http_lines else PAYLOAD_SNAP,
            handshake_acks=self.handshake_acks and not self.shedding,
            payloads=not self.shedding,
            lo_ifindex=self._lo,
        )
        bpf.attach(self._sock, program)
        self.ports = ports
        self._port_set = frozenset(ports)

    def _suppressing(self) -> bool:
        return bool(self._suppressed_at) and time.monotonic() - self._suppressed_at < 5.0

    # --- samples ----------------------------------------------------------------------------------

    def _read_stats(self) -> tuple[int, int]:
        assert self._sock is not None
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        packets, drops = _STATS.unpack(raw[: _STATS.size])
        return packets, drops

    def _emit_sample(self, now: float) -> None:
        if self._sock is None:
            return
        packets, drops = self._read_stats()  # reading resets the kernel's counters
        captured = max(0, packets - drops)  # tp_packets counts the dropped ones too
        self.captured_total += captured
        self.dropped_total += drops
        events, self._events = tuple(self._events), []
        offset = _clock_offset_ns()
        if abs(offset - self._offset_ns) > 50_000:
            self._offset_ns = offset
        self.emit(PacketsSample(now, events, captured, drops, self.ports))
        if self._status is not None and self._status[0] != "denied":
            self._update_status()

    def _event(
        self,
        kind: str,
        anc: list[tuple[int, int, bytes]],
        seg: _Parsed,
        line: str | None = None,
        tracked: bool = False,
    ) -> None:
        """Queue one event; ``tracked`` ones (of a connection in the table) get twice the room."""
        if len(self._events) >= (2 * MAX_EVENTS_PER_SAMPLE if tracked else MAX_EVENTS_PER_SAMPLE):
            self.events_suppressed += 1
            self._suppressed_at = time.monotonic()
            return
        t = None
        for level, kind_, data in anc:
            if level == socket.SOL_SOCKET and kind_ == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(data)
                t = (sec * 1_000_000_000 + nsec - self._offset_ns) / 1e9
                break
        if t is None:  # no kernel timestamp (should not happen): our own receive time
            t = time.monotonic()
        family, src, dst, sport, dport, seq, ack, _flags, payload, _at = seg
        self._events.append(
            PacketEvent(
                t,
                kind,
                format_endpoint(family, src, sport),
                format_endpoint(family, dst, dport),
                seq,
                ack,
                payload,
                line,
            )
        )

    # --- the hot path -----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Read every queued packet (up to a budget) and turn the interesting ones into events."""
        sock = self._sock
        assert sock is not None
        recvmsg = sock.recvmsg
        bufsize = 120 + (PAYLOAD_SNAP_HTTP if self.http_lines else PAYLOAD_SNAP)
        handle = self._handle
        for _ in range(DRAIN_BUDGET):
            try:
                data, anc, _flags, addr = recvmsg(bufsize, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            self.packets += 1
            if addr[2] == PACKET_OUTGOING and addr[0] == "lo":
                self.outgoing_copies += 1  # normally already dropped by the filter
                continue
            handle(data, anc)

    def _handle(self, data: bytes, anc: list[tuple[int, int, bytes]]) -> None:
        seg = _parse(data)
        if seg is None:
            self.malformed += 1
            return
        _family, src, dst, sport, dport, seq, ack, flags, payload, at = seg
        ports = self._port_set
        if dport in ports:
            to_server = True
            key = (src, sport, dst, dport)
        elif sport in ports:
            to_server = False
            key = (dst, dport, src, sport)
        else:
            return  # a port between two listening ports (range filter), or a stale filter
        conns = self._conns
        if flags & TH_RST:
            self._event("RST", anc, seg, tracked=conns.pop(key, None) is not None)
            return
        if flags & TH_SYN:
            conn = conns.get(key)
            if flags & TH_ACK:
                if conn is not None and not to_server:
                    conn.synack = seq
                self._event("SYNACK", anc, seg, tracked=conn is not None)
                return
            if not to_server:  # a simultaneous open, not a client of ours: report, don't track
                self._event("SYN", anc, seg)
                return
            if conn is None or conn.client_isn != seq:  # a new connection, not a retransmit
                if conn is not None:
                    del conns[key]
                if len(self._events) >= MAX_EVENTS_PER_SAMPLE:  # over budget: skip it whole
                    self.events_suppressed += 1
                    self._suppressed_at = time.monotonic()
                    return
                if len(conns) >= MAX_CONNECTIONS:
                    conns.popitem(last=False)
                conn = conns[key] = _Conn(seq)
            self._event("SYN", anc, seg, tracked=True)
            if payload:  # TCP Fast Open: the SYN carries the first request bytes
                self._first_payload(conn, True, data, at, anc, seg)
            return
        conn = conns.get(key)
        if payload:
            if conn is not None:
                if (conn.client_data if to_server else conn.server_data) is False:
                    self._first_payload(conn, to_server, data, at, anc, seg)
                    if conn.client_data and conn.server_data:
                        conns.pop(key, None)
                else:
                    self.later_payloads += 1
            else:
                self.later_payloads += 1
        elif not flags & TH_FIN:
            if (
                conn is not None
                and to_server
                and conn.synack is not None
                and ack == (conn.synack + 1) & 0xFFFFFFFF
                and not conn.client_data
            ):
                self._event("ACK", anc, seg, tracked=True)
                conn.synack = None  # the handshake is done; later ACKs are not it
            else:
                self.other_acks += 1
        if flags & TH_FIN:
            self._event("FIN", anc, seg, tracked=conn is not None)
            if conn is not None:
                if to_server:
                    conn.client_fin = True
                else:
                    conn.server_fin = True
                if conn.client_fin and conn.server_fin:
                    conns.pop(key, None)

    def _first_payload(
        self,
        conn: _Conn,
        to_server: bool,
        data: bytes,
        at: int,
        anc: list[tuple[int, int, bytes]],
        seg: _Parsed,
    ) -> None:
        head = data[at:]
        kind = "DATA"
        line = None
        if to_server:
            conn.client_data = True
            if is_tls_client_hello(head):
                kind = "TLS_HELLO"
        else:
            conn.server_data = True
        if self.http_lines and kind == "DATA":
            line = http_first_line(head, request=to_server)
        self._event(kind, anc, seg, line, tracked=True)
