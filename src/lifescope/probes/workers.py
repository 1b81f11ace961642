"""The processes of a pre-fork server: the attached master and its Python workers.

gunicorn, uvicorn `--workers` and multiprocessing servers fork workers that share the
master's listening socket; the master itself serves nothing. So when lifescope is attached
to a master, what the user first needs is which worker holds the load: per process, CPU,
memory, threads, fds and the connections it owns (by socket inode, from one sock_diag dump
of the namespace). The children are re-listed every read, so a worker that gunicorn
restarts after `--max-requests` or a crash appears with its new pid within a second.

Costs, measured here: ~1-2 ms a read for 3 workers with a few dozen sockets each (one
readlink per fd is most of it). It reads once a second and only while the target has
Python children; a plain single-process server makes it stand by.
"""

from __future__ import annotations

import os
import time

from lifescope.probes import procnet
from lifescope.probes.base import Emit, Probe
from lifescope.probes.family import Family
from lifescope.probes.netlink_diag import SockDiag, TcpSocket, state_mask
from lifescope.samples import ProcessesSample, ProcessStat
from lifescope.target import Target

PERIOD_S = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, int, int]:
    """(utime+stime ticks, threads, rss pages) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        raw = handle.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12]), int(fields[17]), int(fields[21])


class WorkersProbe(Probe):
    probe_name = "workers"

    def __init__(self, target: Target, emit: Emit, family: Family | None = None) -> None:
        super().__init__(target, emit)
        self.family = family or Family(target)
        self._diag: SockDiag | None = None

    def read_once(self) -> ProcessesSample | None:
        """None when the target has no Python children (nothing to aggregate)."""
        master = self.target.pid
        members = self.family.members()
        if len(members) == 1:
            return None
        roles = {m.pid: m.role for m in members}
        owners: dict[int, int] = {}
        processes = []
        for pid in roles:
            try:
                inodes = procnet.socket_inodes(pid)
                ticks, threads, rss = _stat(pid)
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except (FileNotFoundError, ProcessLookupError):
                if pid == master:
                    raise
                continue  # a worker that exited between the listing and now
            for inode in inodes:
                owners.setdefault(inode, pid)  # shared (the listener): the master keeps it
            processes.append((pid, ticks, threads, rss, fds))
        connections: dict[int, int] = {}
        busy: dict[int, int] = {}
        for row in self._established(owners):
            owner = owners.get(row.inode)
            if owner is None:
                continue
            connections[owner] = connections.get(owner, 0) + 1
            if row.recv_q or row.send_q:
                busy[owner] = busy.get(owner, 0) + 1
        return ProcessesSample(
            t=time.monotonic(),
            processes=tuple(
                ProcessStat(
                    pid=pid,
                    role=roles[pid],
                    cpu_ticks=ticks,
                    rss_bytes=rss * _PAGE,
                    threads=threads,
                    fds=fds,
                    connections=connections.get(pid, 0),
                    busy=busy.get(pid, 0),
                )
                for pid, ticks, threads, rss, fds in processes
            ),
        )

    def _established(self, inodes: dict[int, int]) -> list[TcpSocket]:
        if self._diag is None:
            self._diag = SockDiag(self.target.pid)
        try:
            return self._diag.dump_tcp(
                states=state_mask("ESTABLISHED"), want_info=False, only=(inodes, ())
            )
        except OSError:
            self._diag.close()
            self._diag = None
            raise

    def sample_loop(self) -> None:
        try:
            while not self.stopping:
                try:
                    sample = self.read_once()
                except FileNotFoundError:
                    self.set_status("gone", "the target process exited")
                    return
                except PermissionError as exc:
                    self.set_status(
                        "denied",
                        f"cannot read the workers' fds ({exc.strerror})",
                        "run as the server's user or root",
                    )
                    return
                except OSError as exc:
                    self.set_status("degraded", f"socket dump failed ({exc.strerror})", None)
                else:
                    if sample is None:
                        self.set_status("standby", "no pre-fork workers (a single-process server)")
                    else:
                        self.set_status("ok")
                        self.emit(sample)
                if not self.sleep(PERIOD_S / self.budget.scale):
                    return
        finally:
            if self._diag is not None:
                self._diag.close()
