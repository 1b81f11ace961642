"""The GIL probe: lifescope's own reader of the target's GIL, sampled at ~2 kHz.

Reads are ~5-7 µs (`process_vm_readv`, see `gil_reader.py`); the loop is sleep-paced on an
absolute schedule, so a late wake-up shortens the next sleep instead of drifting. It runs a
batch (up to one 100 ms emit period) at a time in `gil_batch.py`: in a compiled loop with the
GIL released where the extension was built, which hands back only the reads that changed
(issue 17: the GIL thread went from 12.3 % to 5.8 % of a core at 2 kHz; a bare C sleep loop
at 2 kHz costs ~5 % on this VM, so what is left is the wake-ups themselves), else in Python.
After 200 ms in which the GIL was never held and never switched the probe reads at 500 Hz
until the next sign of life. The achieved rate and the read count are reported so the UI can
say how fine-grained the hold times are.

The sampling thread asks for SCHED_FIFO priority 1 where permitted (root/CAP_SYS_NICE).
Measured here: with both cores busy, a normal-priority sampler only got the CPU while the
target slept, and read a thread that holds the GIL 49 % of the time as 15–40 % held; at
FIFO priority it matched the target's own measurement within 0.01. It sleeps between reads
(~5 µs of work every 0.5 ms), so it cannot monopolise a core, and the kernel's RT
throttling caps it regardless. Without the privilege it runs normally, counts reads that
came late (gap over 1 ms), and reports "degraded" when many do. While the collector sheds
load (`budget.py`: the machine saturated and the target kept waiting for a CPU) it gives up
FIFO too: then accuracy yields to the target, and the header says so.

Other probes ride these wake-ups instead of waking on their own (issue 17; `base.Ride`): the
native walker's stacks and the threads probe's /proc reads, each at its own rate, on a single
process and the compiled loop only. If this loop ends while they ride, they go on by
themselves.

If the reader cannot attach or validate (unknown build, permissions), the probe says so and
stops; the analysis then falls back to py-spy's `owns_gil` samples (source "pyspy").
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

from lifescope.probes.base import Emit, Probe, Ride
from lifescope.probes.gil_batch import (
    NATIVE,
    SLOW_NOTE,
    Batcher,
    Pace,
    batcher_for,
    fits_native,
    native_batch,
)
from lifescope.probes.gil_reader import GilReader, GilUnavailable
from lifescope.probes.memory import MemoryReadError, PreparedRead
from lifescope.samples import FREE, UNKNOWN_HOLDER, GilInfo, GilRuns
from lifescope.target import Target

if TYPE_CHECKING:
    from lifescope.probes.native_stacks import NativeStacks
    from lifescope.probes.pyspy import StacksProbe
    from lifescope.probes.threads import ThreadsProbe

DEFAULT_HZ = float(os.environ.get("LIFESCOPE_GIL_HZ", "2000"))
IDLE_HZ = 500.0
"""While nothing happens to the GIL the sampler reads at this rate instead.
On this kind of VM each timer wake-up costs ~30 µs of CPU, so 2,000 wake-ups a second were
most of the probe's ~7-12 % of a core on an idle server. Sampling stays unbiased at any rate;
the first read that finds the GIL held, or its switch counter moved, returns to full rate."""
IDLE_AFTER_S = 0.2
"""Quiet this long (every read free, no switch) before slowing down."""
EMIT_EVERY_S = 0.1
NATIVE_STACKS = os.environ.get("LIFESCOPE_NATIVE_STACKS", "1") != "0"
"""The stacks probe's windows come from the native walker riding this loop's wake-ups
(``native_stacks.py``): a walk costs ~40 µs where a py-spy sample costs ~500 µs and its own
process (issue 17). ``LIFESCOPE_NATIVE_STACKS=0`` goes back to py-spy, which is also what
runs wherever the walker cannot (no compiled loop, pre-fork workers)."""
STACK_WINDOW_S = 1.0


def _realtime() -> bool:
    """Ask for SCHED_FIFO 1 for this thread only; False where not permitted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        return False
    return True


def _normal() -> None:
    """Back to the normal scheduler (always permitted)."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class GilProbe(Probe):
    probe_name = "gil"

    def __init__(
        self,
        target: Target,
        emit: Emit,
        rate_hz: float = DEFAULT_HZ,
        native: bool = NATIVE,
        stacks: StacksProbe | None = None,
        threads: ThreadsProbe | None = None,
    ) -> None:
        super().__init__(target, emit)
        self.rate_hz = rate_hz
        self.native = native and NATIVE
        """Sample in the compiled loop (`_sampler.c`) when it was built; else in Python."""
        self.stacks = stacks
        """The stacks probe whose windows this loop takes, at the rate py-spy would sample."""
        self.threads = threads
        """The threads probe whose /proc files this loop reads (compiled loop only)."""

    def _ride(self, reader: GilReader) -> tuple[NativeStacks | None, Batcher]:
        """The native stack walker on this loop, if asked for and it attaches; else the plain
        batch loop, and the stacks probe told to run py-spy. The threads probe is told
        whether this loop reads its files: only the compiled loop can."""
        layout = reader.batch_layout
        if self.threads is not None:
            native = fits_native(layout, self.native)
            self.threads.ride.answer(None if native else "the compiled GIL loop is not in use")
        if self.stacks is None:
            return None, batcher_for(reader, self.native)
        from lifescope.probes.errors import TasksUnavailable
        from lifescope.probes.native_stacks import NativeStacks

        try:
            if not self.native:
                raise TasksUnavailable("the compiled GIL loop is not in use", "")
            walker = NativeStacks(reader.pid, reader)
        except (TasksUnavailable, MemoryReadError) as exc:
            self.stacks.ride.answer(str(exc))
            return None, batcher_for(reader, self.native)
        self.stacks.ride.answer(None)
        return walker, native_batch(layout, reader.pid, walker.layout.as_tuple())

    def _riders(self) -> tuple[Ride, ...]:
        return tuple(p.ride for p in (self.stacks, self.threads) if p is not None)

    def sample_loop(self) -> None:
        try:
            try:
                reader = GilReader.open(self.target.pid)
            except GilUnavailable as exc:
                self.set_status(exc.status, exc.reason, exc.remedy or "none")
                return
            try:
                self._loop(reader)
            finally:
                reader.close()
        finally:
            said = self._status[1] if self._status is not None else None
            if self.threads is not None and self.threads.ride.riding:
                self.threads.close()  # its files were this loop's to read, and to close
            for ride in self._riders():
                if not ride.answered:
                    # The loop never rode: the probe samples on its own, at once.
                    ride.answer(said or "the GIL loop did not start")
                elif not self.stopping:
                    ride.end()  # the loop died under it: the probe goes on by itself

    def _loop(self, reader: GilReader) -> None:
        period = 1.0 / self.rate_hz
        realtime = can_realtime = _realtime()
        now = time.monotonic()

        def info(t: float, rate_hz: float, realtime: bool) -> GilInfo:
            """Sent at start and whenever shedding changes the rate or the priority, so the
            pane's resolution (±half a period) and the realtime flag stay true."""
            return GilInfo(
                t=t,
                python=self.target.python or "",
                interval_us=reader.interval_us,
                cond_address=reader.cond_address,
                cond_size=reader.cond_size,
                mutex_address=reader.mutex_address,
                mutex_size=reader.mutex_size,
                tid_source=reader.tid_source,
                rate_hz=rate_hz,
                realtime=realtime,
            )

        self.emit(info(now, self.rate_hz, realtime))
        note = reader.note  # an untested version, a forked worker, a pid namespace
        if not self.native:
            note = f"{note}; {SLOW_NOTE}" if note else SLOW_NOTE
        self.set_status("ok", note)
        layout = reader.batch_layout
        try:
            first_raw = PreparedRead(reader.pid, layout.regions).read()
        except MemoryReadError as exc:
            error = reader.read_error(exc)
            self.set_status(error.status, error.reason, error.remedy or None)
            return
        value = first = reader.decode(first_raw)
        run_holder = _holder(first.locked, first.holder_tid)
        run_start = window_start = now
        last_switch = first.switch_number
        runs: list[tuple[float, float, int]] = []
        full_period = period
        pace = Pace(
            period=period,
            idle_period=max(period, 1.0 / IDLE_HZ),
            idle_after=IDLE_AFTER_S,
            next_read=now + period,
            step=period,
            quiet_since=now,
            previous=now,
            last=first_raw,
            reads=1,
        )
        walker, batch = self._ride(reader)
        if walker is not None and self.stacks is not None:
            pace.stack_period = 1.0 / self.stacks.walk_rate(self.budget.scale)
        threads = self.threads if self.threads is not None and self.threads.ride.riding else None
        stacks_start = now
        next_emit = now + EMIT_EVERY_S
        while not self.stopping:
            if threads is not None:
                threads = self._threads_step(threads, pace, before=True)
            try:
                batch(pace, next_emit, reader.known_holders())
                # Reads whose bytes changed, in order; between them every read was the same.
                for previous, at, raw in pace.changes:
                    value = reader.decode(raw)
                    holder = _holder(value.locked, value.holder_tid)
                    if holder != run_holder:
                        # The change happened somewhere since the read before: split the gap.
                        edge = max(run_start, at - (at - previous) / 2)
                        runs.append((round(run_start, 6), round(edge, 6), run_holder))
                        run_holder, run_start = holder, edge
            except MemoryReadError as exc:
                error = reader.read_error(exc)
                self.set_status(error.status, error.reason, error.remedy or None)
                return
            except GilUnavailable as exc:
                self.set_status(exc.status, exc.reason, exc.remedy or None)
                return
            finally:
                pace.changes.clear()
            if threads is not None and pace.file_ticks:
                threads = self._threads_step(threads, pace, before=False)
            now = pace.previous
            if now >= next_emit:
                reads, late = pace.reads, pace.late
                self.samples += 1
                self._emit(
                    GilRuns(
                        t=now,
                        start=window_start,
                        runs=tuple(runs),
                        current=(round(run_start, 6), run_holder),
                        reads=reads,
                        switches=max(0, value.switch_number - last_switch),
                        late=late,
                    )
                )
                if not realtime and late > reads // 10:
                    shedding = self.budget.scale < 1.0
                    self.set_status(
                        "degraded",
                        f"{late} of {reads} GIL reads came late (CPU busy); "
                        "held share may read low",
                        "--full-rate keeps the sampler real-time (costs a saturated target)"
                        if shedding
                        else "run as root so the sampler can use SCHED_FIFO",
                    )
                else:
                    self.set_status("ok", note)
                runs = []
                due = now - stacks_start >= STACK_WINDOW_S
                if walker is not None and self.stacks is not None and due:
                    try:
                        self.stacks.emit(
                            walker.window(
                                pace.stack_samples, stacks_start, now, 1.0 / pace.stack_period
                            )
                        )
                    except Exception as exc:  # a stacks bug must not stop the GIL probe
                        self.stacks.errors += 1
                        self.stacks.set_status(
                            "degraded", f"native stack window failed: {exc!r}", None
                        )
                    pace.stack_samples.clear()
                    stacks_start = now
                    pace.stack_period = 1.0 / self.stacks.walk_rate(self.budget.scale)
                if threads is not None:
                    pace.file_period = threads.ride_period(self.budget.scale)
                pace.reads = pace.late = 0
                window_start = now
                last_switch = value.switch_number
                next_emit = now + EMIT_EVERY_S
                # The machine's budget, applied between batches (a float read, 10× a second).
                scale = self.budget.scale
                fast = full_period / scale
                if fast != pace.period:
                    pace.step = fast if pace.step == pace.period else pace.step
                    pace.period = fast
                    pace.idle_period = max(fast, 1.0 / IDLE_HZ)
                    # A real-time sampler preempts a saturated target at every read (measured:
                    # requests/s ×0.74 with SCHED_FIFO, ×0.94 without, same CPU); while
                    # shedding it yields like any other thread, and reads may come late.
                    if scale < 1.0 and realtime:
                        _normal()
                        realtime = False
                    elif scale == 1.0 and can_realtime and not realtime:
                        realtime = _realtime()
                    self.emit(info(now, 1.0 / fast, realtime))

    def _threads_step(self, threads: ThreadsProbe, pace: Pace, before: bool) -> ThreadsProbe | None:
        """Before a batch, the threads probe's descriptors to read (None: its target is gone
        or unreadable, which its status says); after, its samples from the reads. On a bug
        there that probe goes on in its own loop, and this one keeps reading the GIL."""
        try:
            if before:
                pace.files = threads.ride_files()
                return threads if pace.files is not None else None
            threads.ride_ticks(pace.file_ticks)
        except Exception as exc:
            threads.errors += 1
            threads.set_status("degraded", f"threads on the GIL loop failed: {exc!r}", None)
            pace.files = None
            threads.ride.end()
            return None
        finally:
            if not before:
                pace.file_ticks.clear()
        return threads


def _holder(locked: bool, tid: int | None) -> int:
    if not locked:
        return FREE
    return tid if tid is not None else UNKNOWN_HOLDER
