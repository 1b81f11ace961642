"""The tasks probe: every asyncio task of the target, what it awaits, 1-4 times a second.

The reading itself is :mod:`lifescope.probes.asyncio_reader` (``process_vm_readv`` only: the
target is never paused and runs no code for us).  This probe paces it, measures what each pass
costs (``read_ms``, shown in the UI), and works out which thread runs the busiest event loop
(``loop_tid``) so the coroutine view can be put beside that thread's stack samples.

Pacing: a pass over 5,000 tasks costs tens of milliseconds of *our* CPU; the probe keeps its
duty cycle at most ~25 % by stretching the period when passes get slow, so a huge task count
slows the view down instead of eating a core.

When tasks cannot be read (not CPython 3.8-3.13, no ``_asyncio``, permissions, a build whose
layout does not validate) the probe reports ``unavailable``/``denied``/``gone`` with the reason
and a remedy, and never raises: the analysis then falls back to the running coroutine seen in
stack samples and says so.  "asyncio not imported yet" is retried every few seconds, since a
server may import it after we attach.
"""

from __future__ import annotations

import dataclasses
import time

from lifescope.analysis.frames import kind as frame_kind
from lifescope.probes.asyncio_reader import AsyncioReader, TasksUnavailable
from lifescope.probes.base import Emit, Probe
from lifescope.probes.family import Family
from lifescope.probes.gil_reader import GilReader, GilUnavailable
from lifescope.probes.pyspy import SourceLines
from lifescope.samples import TaskInfo, TasksSample
from lifescope.target import Target

DEFAULT_HZ = 2.0
MAX_DUTY = 0.25
"""Longest share of wall time the probe spends reading: a 100 ms pass waits ≥ 300 ms."""
RETRY_S = 5.0
"""How often to retry attaching while the target has not imported asyncio yet."""
LOOP_TID_REFRESH_S = 10.0


class TasksProbe(Probe):
    probe_name = "tasks"

    def __init__(
        self,
        target: Target,
        emit: Emit,
        rate_hz: float = DEFAULT_HZ,
        max_tasks: int = 5000,
        family: Family | None = None,
    ) -> None:
        super().__init__(target, emit)
        self.rate_hz = max(0.1, min(rate_hz, 20.0))
        self.max_tasks = max(1, max_tasks)
        self.family = family
        """A pre-fork master's workers run the event loops: their tasks are read too."""
        self._readers: dict[int, AsyncioReader] = {}
        self._sources: dict[int, SourceLines] = {}
        self._failures: dict[int, tuple[TasksUnavailable, float]] = {}
        """pid → why its reader could not open, and when to try again (never: inf)."""
        self._gil: GilReader | None = None
        self._gil_failed = False
        self._loop: int | None = None
        self._loop_tid: int | None = None
        self._loop_checked = 0.0

    def _with_source(self, pid: int, tasks: list[TaskInfo]) -> list[TaskInfo]:
        """The application's frames get their source line (read from disk, cached)."""
        source = self._sources.get(pid)
        if source is None:
            source = self._sources[pid] = SourceLines(pid)
        out = []
        for task in tasks:
            chain = tuple(
                dataclasses.replace(
                    a,
                    code=source(a.file, a.line),
                    calls_next=source.calls_next(a.file, a.line),
                )
                if a.file and frame_kind(a.file) == "app"
                else a
                for a in task.chain
            )
            out.append(dataclasses.replace(task, chain=chain) if chain != task.chain else task)
        return out

    def _pids(self) -> tuple[int, ...]:
        return self.family.serving() if self.family is not None else (self.target.pid,)

    def _open(self, pid: int, now: float) -> AsyncioReader | None:
        reader = self._readers.get(pid)
        if reader is not None:
            return reader
        failed = self._failures.get(pid)
        if failed is not None and now < failed[1]:
            return None
        try:
            reader = AsyncioReader.open(pid)
        except TasksUnavailable as exc:
            again = now + RETRY_S if exc.retry and exc.status != "gone" else float("inf")
            self._failures[pid] = (exc, again)
            return None
        self._failures.pop(pid, None)
        self._readers[pid] = reader
        return reader

    def sample_loop(self) -> None:
        period = 1.0 / self.rate_hz
        while not self.stopping:
            started = time.monotonic()
            pids = self._pids()
            for gone in set(self._readers) - set(pids):
                del self._readers[gone]
            tasks: list[TaskInfo] = []
            total = errors = 0
            loop_tid = None
            for pid in pids:
                reader = self._open(pid, started)
                if reader is None:
                    continue
                try:
                    found, count, torn = reader.read(self.max_tasks)
                except TasksUnavailable as exc:
                    del self._readers[pid]
                    self._failures[pid] = (exc, started + RETRY_S)
                    continue
                found = self._with_source(pid, found)
                if pid != self.target.pid:
                    found = [dataclasses.replace(task, pid=pid) for task in found]
                elif loop_tid is None:
                    loop_tid = self._busiest_loop_tid(reader)
                tasks += found
                total += count
                errors += torn
            if not self._readers:
                failed = self._failures.get(self.target.pid) or next(
                    iter(self._failures.values()), None
                )
                if failed is not None:
                    why = failed[0]
                    self.set_status(why.status, why.reason, why.remedy or None)
                    if why.status == "gone" or not self.target.alive():
                        return
                if not self.sleep(RETRY_S):
                    return
                continue
            read_ms = (time.monotonic() - started) * 1000.0
            self.emit(
                TasksSample(
                    t=time.monotonic(),
                    loop_tid=loop_tid,
                    tasks=tuple(tasks),
                    total=total,
                    read_ms=round(read_ms, 3),
                    errors=errors,
                )
            )
            if total > len(tasks) and len(tasks) >= self.max_tasks:
                self.set_status(
                    "degraded",
                    f"{total} tasks, reading the first {self.max_tasks} per pass",
                    "raise max_tasks to see every task (each pass costs more)",
                )
            else:
                self.set_status("ok")
            elapsed = time.monotonic() - started
            shed = period / self.budget.scale  # slower while the machine is saturated
            wait = max(shed - elapsed, elapsed * (1.0 / MAX_DUTY - 1.0))
            if not self.sleep(wait):
                return

    # ------------------------------------------------------------------ loop thread
    def _busiest_loop_tid(self, reader: AsyncioReader) -> int | None:
        """TID of the thread running the loop that owns the most tasks (cached ~10 s).

        The loop's ``_thread_id`` is a ``threading.get_ident()`` value; the thread state with
        that ident gives the kernel TID directly on 3.11+ and through the GIL reader's
        pthread mapping on 3.8-3.10.
        """
        if not reader.loops:
            return self._loop_tid
        loop = max(reader.loops, key=lambda k: reader.loops[k])
        now = time.monotonic()
        if loop == self._loop and now - self._loop_checked < LOOP_TID_REFRESH_S:
            return self._loop_tid
        self._loop, self._loop_checked = loop, now
        self._loop_tid = None
        ident = reader.loop_thread_ident(loop)
        if not ident:
            return None
        states = reader.thread_states()
        for address, (thread_ident, native) in states.items():
            if thread_ident != ident:
                continue
            if native:
                self._loop_tid = native
            else:
                self._loop_tid = self._tid_from_gil_reader(address)
            break
        return self._loop_tid

    def _tid_from_gil_reader(self, tstate: int) -> int | None:
        if self._gil_failed:
            return None
        try:
            if self._gil is None:
                self._gil = GilReader.open(self.target.pid)
            return self._gil.threads().get(tstate)
        except GilUnavailable:
            self._gil_failed = True
            return None
        except Exception:  # the TID is a nicety: never let it stop the task view
            self._gil_failed = True
            self._gil = None
            return None
