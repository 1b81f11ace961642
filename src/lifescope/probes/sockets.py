"""Every TCP socket of the target, its listen queues, and its fds against the limit.

Sockets are read from the target's own network namespace — by a netlink sock_diag dump
opened inside it (`netlink_diag.py`: ~10× faster than pyroute2, and it carries `tcp_info`:
rtt, retransmits, time since last data), else from `/proc/PID/net/tcp*`, which is already the
target's view. psutil's system-wide `net_connections` would show the caller's namespace.

A socket belongs to the target when its inode is one of the target's fds. Connections that
completed the handshake but wait in the accept queue have no fd yet (inode 0); they are kept,
with `fd=None`, when their local port is one the target listens on — they are layer 1.
"""

from __future__ import annotations

import contextlib
import time

from lifescope.probes import procnet
from lifescope.probes.base import Emit, Probe
from lifescope.probes.budget import rate_within
from lifescope.probes.family import MAIN, WORKER, Family
from lifescope.probes.netlink_diag import SockDiag, TcpSocket
from lifescope.samples import Socket, SocketsSample
from lifescope.target import Target

INODE_REFRESH_S = 1.0
"""readlink of every fd costs ~6 µs per fd (59 ms at 10k); once a second is plenty."""
ROWS_PER_SECOND = 5000
"""Socket rows per second the probe allows itself. A refresh costs ~15-20 µs a row (dump,
row objects, encoding; 10k connections took ~190 ms), so at a fixed 2 Hz a 10k-connection
server cost the collector 64 % of a core. Like `ss` in a watch loop, big tables refresh
less often: 2 Hz up to 2,500 sockets, down to every 2 s."""
MIN_HZ = 0.5


def rate_for(rows: int, max_hz: float) -> float:
    return rate_within(ROWS_PER_SECOND, rows, MIN_HZ, max_hz)


class SocketsProbe(Probe):
    probe_name = "sockets"

    def __init__(
        self, target: Target, emit: Emit, rate_hz: float = 2.0, family: Family | None = None
    ) -> None:
        super().__init__(target, emit)
        self.rate_hz = rate_hz
        self.family = family
        """A pre-fork master's workers' sockets are the server's too: their fds are read."""
        self._inodes: dict[int, int] = {}
        self._owners: dict[int, int] = {}
        """inode → pid, for sockets of a process other than the attached one."""
        self._foreign: set[int] = set()
        """Inodes of the family's helpers (not workers): not the server's connections."""
        self._inodes_at = 0.0
        self._diag: SockDiag | None = None
        self._source = "netlink"
        self._netlink_error = ""
        self.rows_seen = 0
        self._ports: set[int] = set()
        """The target's listening ports at the last read."""

    def _rows(self) -> list[TcpSocket]:
        """A netlink dump when we can, /proc otherwise (and say which in the sample)."""
        if self._source == "netlink":
            try:
                if self._diag is None:
                    self._diag = SockDiag(self.target.pid)
                return self._diag.dump_tcp(only=(self._inodes, self._ports))
            except FileNotFoundError:
                raise
            except OSError as exc:
                self._source = "procfs"
                self._netlink_error = f"netlink sock_diag unavailable ({exc}); using /proc"
                if self._diag is not None:
                    self._diag.close()
                    self._diag = None
        return procnet.read_proc_net_tcp(self.target.pid, fd_by_inode=self._inodes)

    def _listen_drops(self) -> dict[str, int]:
        """Each listener's own drop count, when netlink works (/proc has no such column)."""
        if self._diag is None:
            return {}
        try:
            return self._diag.listen_drops()
        except OSError:
            return {}

    def _helpers_sockets(self) -> set[int]:
        """Sockets of the family's helpers, read at every sample: uWSGI's router holds the
        clients' side of every request it forwards to a worker, a new connection each time
        when clients do not keep theirs alive — the same request, not another one. A helper
        holds a handful of fds: this costs a few readlinks."""
        found: set[int] = set()
        for member in self.family.members() if self.family is not None else ():
            if member.role not in (MAIN, WORKER):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    found.update(procnet.socket_inodes(member.pid))
        return found

    def read_once(self) -> SocketsSample:
        pid = self.target.pid
        now = time.monotonic()
        if now - self._inodes_at >= INODE_REFRESH_S:
            self._inodes = procnet.socket_inodes(pid)
            self._owners = {}
            for worker in self.family.workers() if self.family is not None else ():
                try:
                    owned = procnet.socket_inodes(worker)
                except (FileNotFoundError, ProcessLookupError):
                    continue  # exited since the listing
                for inode, fd in owned.items():
                    if inode not in self._inodes:  # shared (the listener): the master's
                        self._inodes[inode] = fd
                        self._owners[inode] = worker
            self._inodes_at = now
        self._foreign = self._helpers_sockets()
        rows = self._rows()
        # The sample's time is the dump's: tcp_info's "ms since last data" are as of then, and
        # the loop's stalls are cut at `t - last_data_sent_ms` (a stamp taken before the fd
        # map refresh put every cut tens of ms early under load, shortening each stall).
        dumped = time.monotonic()
        self.rows_seen = len(rows)  # what the next read will decode again: its cost
        listen_ports = {
            r.local_port for r in rows if r.state == "LISTEN" and r.inode in self._inodes
        }
        self._ports = listen_ports
        drops = self._listen_drops() if listen_ports else {}
        sockets = []
        for row in rows:
            owner = self._inodes.get(row.inode) if row.inode else None
            if owner is None and row.inode in self._foreign:
                continue
            if owner is None and (row.state == "LISTEN" or row.local_port not in listen_ports):
                continue  # not the target's, and not waiting for it on its own ports
            sockets.append(
                Socket(
                    fd=owner,
                    state=row.state,
                    local=row.local,
                    peer=row.peer,
                    recv_q=row.recv_q,
                    send_q=row.send_q if row.send_q is not None else 0,
                    inode=row.inode,
                    rtt_us=row.rtt_us,
                    retransmits=row.retransmits,
                    last_data_recv_ms=row.last_data_recv_ms,
                    last_data_sent_ms=row.last_data_sent_ms,
                    bytes_received=row.bytes_received,
                    bytes_acked=row.bytes_acked,
                    notsent_bytes=row.notsent_bytes,
                    drops=drops.get(row.local) if row.state == "LISTEN" else None,
                    pid=self._owners.get(row.inode) if row.inode else None,
                )
            )
        fds, limit = procnet.fd_usage(pid)
        counters = procnet.listen_counters(pid)
        return SocketsSample(
            t=dumped,
            sockets=tuple(sockets),
            fds=fds,
            fd_limit=limit,
            listen_overflows=counters.get("ListenOverflows"),
            listen_drops=counters.get("ListenDrops"),
            source=self._source,
        )

    def sample_loop(self) -> None:
        try:
            self._poll()
        finally:
            if self._diag is not None:
                self._diag.close()

    def _poll(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                sample = self.read_once()
            except FileNotFoundError:
                self.set_status("gone", "the target process exited")
                return
            except PermissionError as exc:
                self.set_status(
                    "denied",
                    f"cannot read the target's fds ({exc.strerror})",
                    "run as the target's user or root",
                )
                if not self.sleep(5.0):
                    return
                continue
            if sample.source == "procfs":
                self.set_status("degraded", self._netlink_error, "run as root for netlink")
            else:
                self.set_status("ok")
            self.emit(sample)
            rate = rate_for(self.rows_seen, self.rate_hz) * self.budget.scale
            if not self.sleep(1.0 / rate - (time.monotonic() - started)):
                return
