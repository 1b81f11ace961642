"""Per-thread scheduler state, CPU time and current syscall, from /proc/PID/task.

Cost measured on this kind of machine: ~26 µs per thread per sample, so 2 threads at 100 Hz
cost ~3 % of a core but 100 threads at 100 Hz ~35 %. The rate therefore adapts to the thread
count (a budget of thread-reads per second), from 100 Hz for a handful down to 10 Hz.

The files are opened once per thread and re-read with `pread`, which saves two syscalls per
read; a thread that exits simply disappears (ENOENT/ESRCH) and its file is closed.

Where the GIL probe runs its compiled loop on a single process, that loop preads these files on
its own wake-ups (`Ride`; issue 17): this probe's thread then only sits out the ride, the GIL
loop lists the threads and hands back the bytes after each batch (~10 times a second), and the
parsing below turns them into the same samples, each stamped with the time of its read. A
non-Python thread born mid-batch is seen from the next batch (≤ 0.1 s later); a Python thread's
birth ends the batch (the GIL loop watches the thread-state counter).
"""

from __future__ import annotations

import errno
import os
import time

from lifescope.probes.base import Emit, Probe, Ride
from lifescope.probes.budget import rate_within
from lifescope.probes.family import Family
from lifescope.samples import ThreadsSample, ThreadStat
from lifescope.target import Target

READS_PER_SECOND = 400
"""Thread reads per second the probe allows itself: ~1 % of a core at the measured 26 µs."""
MAX_HZ = 100.0
MIN_HZ = 10.0
SHED_MIN_HZ = 5.0
"""The floor while the machine is saturated (see `budget.py`)."""


def rate_for(thread_count: int) -> float:
    return rate_within(READS_PER_SECOND, thread_count, MIN_HZ, MAX_HZ)


def parse_stat(raw: bytes) -> tuple[str, str, int]:
    """(comm, state letter, utime+stime ticks) from a /proc/.../stat line.

    The comm field is in parentheses and may itself contain spaces or ')' — split at the
    last ')' as the kernel documentation advises.
    """
    open_paren = raw.index(b"(")
    close_paren = raw.rindex(b")")
    comm = raw[open_paren + 1 : close_paren].decode(errors="replace")
    rest = raw[close_paren + 2 :].split()
    return comm, rest[0].decode(), int(rest[11]) + int(rest[12])


def parse_syscall(raw: bytes) -> tuple[int | None, int | None]:
    """(syscall number or -1 for user space, first argument) from /proc/.../syscall."""
    fields = raw.split()
    if not fields:
        return None, None
    if fields[0] == b"running":
        return -1, None
    number = int(fields[0])
    if number < 0 or len(fields) < 2:
        return number, None
    return number, int(fields[1], 16)


class _TaskFiles:
    """Open descriptors on one thread's stat and syscall files, and the last bytes read from
    each with what they parsed to: an idle thread's files read the same tick after tick, and
    parsing them again was most of a read's Python time."""

    __slots__ = ("last_stat", "last_syscall", "stat_fd", "syscall_fd")

    def __init__(self, pid: int, tid: int) -> None:
        base = f"/proc/{pid}/task/{tid}"
        self.stat_fd = os.open(f"{base}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.syscall_fd: int | None = os.open(f"{base}/syscall", os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            self.syscall_fd = None  # state and CPU still readable: degrade, don't die
        self.last_stat: tuple[bytes, tuple[str, str, int]] = (b"", ("", "", 0))
        self.last_syscall: tuple[bytes, tuple[int | None, int | None]] = (b"", (None, None))

    def close(self) -> None:
        for fd in (self.stat_fd, self.syscall_fd):
            if fd is not None:
                os.close(fd)


class ThreadsProbe(Probe):
    probe_name = "threads"

    def __init__(
        self, target: Target, emit: Emit, max_hz: float = MAX_HZ, family: Family | None = None
    ) -> None:
        super().__init__(target, emit)
        self.max_hz = max_hz
        self.family = family
        """A pre-fork master's workers are read too, one sample per process each tick."""
        self._files: dict[int, dict[int, _TaskFiles]] = {}
        self._syscall_denied = False
        self.ride = Ride()
        """The GIL probe's loop may read the files on its wake-ups (single process only)."""
        self._ride_tasks: list[tuple[int, _TaskFiles]] = []

    def _pids(self) -> tuple[int, ...]:
        return self.family.serving() if self.family is not None else (self.target.pid,)

    def _refresh_tasks(self, pid: int) -> dict[int, _TaskFiles]:
        """This process's threads' open files; raises FileNotFoundError if it is gone."""
        tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
        files = self._files.setdefault(pid, {})
        for tid in list(files):
            if tid not in tids:
                files.pop(tid).close()
        for tid in tids - files.keys():
            try:
                opened = _TaskFiles(pid, tid)
            except FileNotFoundError:
                continue
            if opened.syscall_fd is None:
                self._syscall_denied = True
            files[tid] = opened
        return files

    def read_once(self) -> ThreadsSample:
        """Every thread of the attached process, and of its workers (tagged with their pid).
        A worker that exited is forgotten; the attached one's exit raises."""
        pids = self._pids()
        for gone in set(self._files) - set(pids):
            for task_files in self._files.pop(gone).values():
                task_files.close()
        threads = []
        for pid in pids:
            try:
                files = self._refresh_tasks(pid)
            except FileNotFoundError:
                if pid == self.target.pid:
                    raise
                continue
            tag = None if pid == self.target.pid else pid
            for tid, task in list(files.items()):
                try:
                    raw_stat = os.pread(task.stat_fd, 1024, 0)
                    raw_syscall = None
                    if task.syscall_fd is not None:
                        raw_syscall = os.pread(task.syscall_fd, 256, 0)
                except OSError as exc:
                    if exc.errno in (errno.ESRCH, errno.ENOENT):
                        files.pop(tid).close()
                        continue
                    raise
                threads.append(_thread_stat(tid, task, raw_stat, raw_syscall, tag))
        return ThreadsSample(time.monotonic(), tuple(threads))

    def ride_files(self) -> tuple[int, ...] | None:
        """For the GIL loop, before each batch: the descriptors to pread, in the order
        `ride_ticks` reads them back (each thread's stat, then its syscall file if open).
        None when the target is gone or unreadable (the status says so)."""
        try:
            files = self._refresh_tasks(self.target.pid)
        except FileNotFoundError:
            self.set_status("gone", "the target process exited")
            return None
        except PermissionError as exc:
            self._denied(exc)
            return None
        self._say_ok()
        self._ride_tasks = list(files.items())
        fds: list[int] = []
        for _, task in self._ride_tasks:
            fds.append(task.stat_fd)
            if task.syscall_fd is not None:
                fds.append(task.syscall_fd)
        return tuple(fds)

    def ride_ticks(self, ticks: list[tuple[float, tuple[bytes | int, ...]]]) -> None:
        """After each batch: one sample per tick the GIL loop read, from its bytes (an int
        is the errno of a read; a thread that exited since the listing is left out)."""
        gone: set[int] = set()
        for t, reads in ticks:
            threads = []
            at = 0
            for tid, task in self._ride_tasks:
                raw_stat = reads[at]
                raw_syscall = reads[at + 1] if task.syscall_fd is not None else None
                at += 1 if raw_syscall is None else 2
                if not isinstance(raw_stat, bytes) or not raw_stat:
                    gone.add(tid)  # ESRCH/ENOENT, or an empty read: the thread exited
                    continue
                syscall = raw_syscall if isinstance(raw_syscall, bytes) else None
                threads.append(_thread_stat(tid, task, raw_stat, syscall, None))
            self.emit(ThreadsSample(t, tuple(threads)))
        files = self._files.get(self.target.pid, {})
        for tid in gone:
            if tid in files:
                files.pop(tid).close()

    def ride_period(self, scale: float) -> float:
        """Seconds between the GIL loop's reads of the files: `sample_loop`'s rate."""
        count = len(self._ride_tasks)
        return 1.0 / max(min(self.max_hz, rate_for(count)) * scale, SHED_MIN_HZ)

    def _denied(self, exc: OSError) -> None:
        self.set_status(
            "denied",
            f"cannot read /proc/{self.target.pid}/task ({exc.strerror})",
            "run as the target's user or root",
        )

    def _say_ok(self) -> None:
        if self._syscall_denied:
            self.set_status(
                "degraded",
                "syscalls unreadable (/proc/PID/task/TID/syscall needs ptrace access)",
                "run as root or grant CAP_SYS_PTRACE",
            )
        else:
            self.set_status("ok", self._ride_note)

    @property
    def _ride_note(self) -> str | None:
        return "read on the GIL loop's wake-ups" if self.ride.riding else None

    def sample_loop(self) -> None:
        if self.ride.wait(self, "read on the GIL loop's wake-ups"):
            return  # the GIL loop owned the files, and closes them
        self.ride.wanted = False  # sampling on our own from here
        try:
            while not self.stopping:
                started = time.monotonic()
                try:
                    sample = self.read_once()
                except FileNotFoundError:
                    self.set_status("gone", "the target process exited")
                    return
                except PermissionError as exc:
                    self._denied(exc)
                    return
                self._say_ok()
                self.emit(sample)
                rate = min(self.max_hz, rate_for(len(sample.threads))) * self.budget.scale
                period = 1.0 / max(rate, SHED_MIN_HZ)
                if not self.sleep(period - (time.monotonic() - started)):
                    return
        finally:
            self.close()

    def close(self) -> None:
        """Release the per-thread descriptors; callers of `read_once` outside `run` own this."""
        for files in self._files.values():
            for task in files.values():
                task.close()
        self._files.clear()


def _thread_stat(
    tid: int, task: _TaskFiles, raw_stat: bytes, raw_syscall: bytes | None, tag: int | None
) -> ThreadStat:
    """One thread's sample from its files' bytes; an unchanged file is not parsed again."""
    if raw_stat != task.last_stat[0]:
        task.last_stat = (raw_stat, parse_stat(raw_stat))
    comm, state, ticks = task.last_stat[1]
    number = arg0 = None
    if raw_syscall is not None:
        if raw_syscall != task.last_syscall[0]:
            task.last_syscall = (raw_syscall, parse_syscall(raw_syscall))
        number, arg0 = task.last_syscall[1]
    return ThreadStat(tid, comm, state, ticks, number, arg0, tag)
