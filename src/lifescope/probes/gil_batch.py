"""The GIL probe's read loop, a batch at a time: native where it was built, Python otherwise.

Why batches: at 2 kHz, what a read costs is mostly the wake-up of the loop that makes it
(~30 µs of CPU per wake-up of a Python loop on the VMs measured, against a ~5 µs read). The
compiled helper (`_sampler.c`, built by `pip install` when a C compiler is there) sleeps and
reads in C with the GIL released for up to a batch (~100 ms) and hands back only the reads
whose bytes changed; the probe then decodes a handful of records instead of waking 200
times. Where the helper is missing (no compiler at install, an ssh:// bundle on another
Python), :func:`python_batch` does the same thing read by read — same pacing, same records,
the cost of round 2 — and the probe says it is the slower loop.

Pacing (both): absolute deadlines at the full period while the GIL is held or its switch
counter moves, the idle period after ``idle_after`` quiet seconds, a read counted late when
its gap exceeds two steps, the schedule reset when it falls 50 steps behind. A batch also ends
at a locked read whose holder the reader cannot name from its cache, or when the thread-state
counter moved, so new holders are resolved as promptly as a read-by-read loop would.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from lifescope.probes.gil_reader import BatchLayout, GilReader
from lifescope.probes.memory import PreparedRead
from lifescope.probes.memory import _error as memory_error

try:
    from lifescope.probes import _sampler  # type: ignore[attr-defined]
except ImportError:  # not built here: no compiler at install time, or another Python
    _sampler = None

NATIVE = _sampler is not None and os.environ.get("LIFESCOPE_NATIVE", "1") != "0"
"""Use the compiled loop; ``LIFESCOPE_NATIVE=0`` forces the Python one (to compare them)."""
SLOW_NOTE = (
    "pure-Python GIL loop (the compiled helper was not built at install): ~2× its CPU; "
    "reinstall with a C compiler and Python headers"
)

if TYPE_CHECKING:  # a runtime `tuple[...]` would fail on the 3.8 hosts ssh:// bundles run on
    Change = tuple[float, float, bytes]
    """(time of the read before, time of this read, its bytes): a read unlike the one before."""
    StackSample = tuple[float, tuple[tuple[int, int, bytes], ...]]
    """(time of the walk, (tid, status, packed frames) per thread): `native_stacks.Sample`."""
    FileTick = tuple[float, tuple[bytes | int, ...]]
    """(time of the reads, each file's bytes or its read's errno): `ThreadsProbe.ride_ticks`."""


@dataclass
class Pace:
    """The sampler's schedule, carried from batch to batch (CLOCK_MONOTONIC seconds)."""

    period: float
    idle_period: float
    idle_after: float
    next_read: float
    step: float
    quiet_since: float
    previous: float
    last: bytes
    reads: int = 0
    late: int = 0
    changes: list[Change] = field(default_factory=list)
    stack_samples: list[StackSample] = field(default_factory=list)
    """Stack samples the native loop took on its GIL wake-ups (see :func:`native_batch`)."""
    next_stack: float = 0.0
    stack_period: float = 0.01
    """Between stack walks; the GIL probe lowers the rate with the thread count and the budget."""
    files: tuple[int, ...] | None = None
    """Descriptors the native loop preads from offset 0 every ``file_period`` (the threads
    probe's /proc files); their bytes go to ``file_ticks``."""
    file_ticks: list[FileTick] = field(default_factory=list)
    next_file: float = 0.0
    file_period: float = 0.01


class Batcher(Protocol):
    def __call__(self, pace: Pace, until: float, known: tuple[int, ...]) -> None: ...


def _u64(buf: bytes, off: int) -> int:
    return int.from_bytes(buf[off : off + 8], "little")


def python_batch(prepared: PreparedRead, layout: BatchLayout, pid: int) -> Batcher:
    """The reference loop in Python (and the fallback): one wake-up per read."""
    locked_off, holder_off, switch_off, counter_off = (
        layout.locked, layout.holder, layout.switch, layout.counter
    )  # fmt: skip

    def run(pace: Pace, until: float, known: tuple[int, ...]) -> None:
        known_set = set(known)
        last = pace.last
        while True:
            delay = pace.next_read - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cur = prepared.read()  # raises MemoryReadError
            now = time.monotonic()
            pace.reads += 1
            if now - pace.previous > 2 * pace.step:
                pace.late += 1
            locked = int.from_bytes(cur[locked_off : locked_off + 4], "little", signed=True)
            stop = False
            if cur != last:
                if locked:
                    stop = _u64(cur, holder_off) not in known_set
                if counter_off >= 0 and _u64(cur, counter_off) != _u64(last, counter_off):
                    stop = True
                if locked not in (0, 1):
                    stop = True
                pace.changes.append((pace.previous, now, cur))
            seen_switch = _u64(last, switch_off)
            switch = _u64(cur, switch_off)
            last = pace.last = cur
            pace.previous = now
            if locked or switch != seen_switch:
                pace.quiet_since = now
                if pace.step != pace.period:
                    pace.step = pace.period
                    pace.next_read = now
            elif now - pace.quiet_since >= pace.idle_after:
                pace.step = pace.idle_period
            pace.next_read += pace.step
            if now - pace.next_read > 50 * pace.step:
                pace.next_read = now + pace.step
            if stop or now >= until:
                return

    return run


def native_batch(
    layout: BatchLayout,
    pid: int,
    stacks: tuple[object, ...] | None = None,
) -> Batcher:
    """The same loop in C (`_sampler.gil_batch`), the GIL released for the whole batch.

    With ``stacks`` (a :class:`~lifescope.probes.native_stacks.WalkLayout` as a tuple), the
    first GIL read at or after each ``pace.stack_period`` also walks every thread's frames, so
    one wake-up serves both probes (issue 17); the samples go to ``pace.stack_samples``.
    Likewise ``pace.files`` are read every ``pace.file_period`` into ``pace.file_ticks``."""
    assert _sampler is not None
    regions = list(layout.regions)

    def run(pace: Pace, until: float, known: tuple[int, ...]) -> None:
        extra: tuple[object, ...] = ()
        if stacks is not None:
            if pace.next_stack <= 0:
                pace.next_stack = pace.next_read
            extra = (stacks, pace.stack_period, pace.next_stack)
        if pace.files:
            if pace.next_file <= 0:
                pace.next_file = pace.next_read
            extra = (extra or (None, 0.0, 0.0)) + (pace.files, pace.file_period, pace.next_file)
        out = _sampler.gil_batch(
            pid, regions, pace.last, layout.locked, layout.holder, layout.switch,
            layout.counter, known, pace.next_read, pace.step, pace.period,
            pace.idle_period, pace.idle_after, pace.quiet_since, pace.previous, until, *extra,
        )  # fmt: skip
        changes, reads, late, next_read, step, quiet_since, previous, last, err = out[:9]
        if stacks is not None:
            pace.stack_samples.extend(out[9])
            pace.next_stack = out[10]
        if pace.files:
            pace.file_ticks.extend(out[12])
            pace.next_file = out[13]
        pace.changes.extend(changes)
        pace.reads += reads
        pace.late += late
        pace.next_read, pace.step, pace.quiet_since = next_read, step, quiet_since
        pace.previous, pace.last = previous, last
        if err:
            address, size = layout.regions[0]
            raise memory_error(err or errno.EFAULT, pid, address, size)

    return run


def fits_native(layout: BatchLayout, native: bool = NATIVE) -> bool:
    """The compiled loop was built (and asked for) and can read this layout."""
    return native and _sampler is not None and len(layout.regions) <= 8 and layout.size <= 256


def batcher_for(reader: GilReader, native: bool = NATIVE) -> Batcher:
    """The native loop when it was built (and asked for), else the Python one."""
    layout = reader.batch_layout
    if fits_native(layout, native):
        return native_batch(layout, reader.pid)
    return python_batch(PreparedRead(reader.pid, layout.regions), layout, reader.pid)
