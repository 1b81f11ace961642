"""Stacks of every thread, read from the target's memory by our own native walker (issue 17 spike).

Why: py-spy costs ~0.45 ms of CPU a sample on the bench target and a process woken on its own
timer; lifescope's GIL loop (``_sampler.c``) already wakes 2,000 times a second. The C side
(``_sampler.stack_walk`` / ``stack_loop``, or ``gil_batch`` with a stack layout: one wake-up
serves both) walks each thread's frame chain and hands back, per thread, packed
``(code address, code-unit index)`` pairs, innermost first. This module names those pairs —
reading each code object once, through the asyncio reader's own code-object and line-table
decoding (:meth:`TaskWalk._code`, :meth:`TaskWalk._line`), cached by address — and turns the
samples into the :class:`~lifescope.samples.StacksWindow` a py-spy window produces, so the
analysis cannot tell the two apart.

What it reads: CPython 3.8-3.15 (3.11+: frames in each thread's data stack, 3.14+ with a tagged
``f_executable``; 3.8-3.10: heap ``PyFrameObject`` chains, thread ids mapped from ``pthread_t``
by the GIL reader); the offsets the walker needs beyond the asyncio tables are in
``stack_offsets.json`` (``tools/gen_stack_offsets.py`` says where each came from). Not yet:
native (C) frames, subinterpreters, free-threaded builds, pre-fork workers.

Torn reads: the target runs on. The walker drops a thread whose chain breaks (status
``TORN``); here a code address that does not read back as a code object drops that thread's
sample too (counted in ``errors``). A code object freed and its address reused by another
would be misnamed until the cache is cleared; code objects of a running server are long-lived,
and the cache is bounded and cleared wholesale when full, like the asyncio reader's.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from lifescope.probes.asyncio_layout import _HDR, _Code, _Layout
from lifescope.probes.asyncio_offsets import load_asyncio_offsets
from lifescope.probes.asyncio_reader import AsyncioReader
from lifescope.probes.elf import open_python_binary
from lifescope.probes.errors import TasksUnavailable
from lifescope.probes.gil_reader import GilReader, GilUnavailable
from lifescope.probes.memory import MemoryReadError
from lifescope.probes.memory import TornRead as _Torn
from lifescope.probes.nspid import TidMap
from lifescope.probes.pyspy import SourceLines, annotate_source
from lifescope.samples import Frame, StackSpan, StacksWindow

try:
    from lifescope.probes import _sampler  # type: ignore[attr-defined]
except ImportError:  # not built: no compiler at install time
    _sampler = None

if TYPE_CHECKING:
    ThreadSample = tuple[int, int, bytes]
    """(native thread id as the target sees it, status, packed (code, index) pairs)."""
    Sample = tuple[float, tuple[ThreadSample, ...]]

OK, TORN, DEEP, EMPTY = 0, 1, 2, 3
"""Per-thread status from the walker: frames read; chain broke (frames dropped); deeper than
``max_depth`` (outermost cut); no Python frame (a thread outside the interpreter)."""
MAX_DEPTH = 128
MAX_THREADS = 4096
"""The C side's cap. A walk costs ~3 µs a thread; the stacks budget (``stacks_rate_for``)
walks 500 threads at 10 Hz (~1.5 % of a core), as py-spy was asked to sample them; a cap of
256 left half of a 500-thread server's threads out of every window."""
_PAIR = struct.Struct("<Qq")
_MAX_STACKS = 65536
"""Distinct stacks remembered (packed bytes → named frames); cleared wholesale when full."""


def unpack_frames(packed: bytes) -> tuple[tuple[int, int], ...]:
    """The walker's packed frames as ``((code address, code-unit index), ...)``, innermost
    first (index -1: the frame has not started its first instruction)."""
    return tuple(_PAIR.iter_unpack(packed))


def _stack_table(minor: int) -> dict[str, object] | None:
    raw = json.loads(resources.files("lifescope.probes").joinpath("stack_offsets.json").read_text())
    entry: dict[str, object] | None = raw.get(f"3.{minor}")
    return entry


@dataclass(frozen=True, slots=True)
class WalkLayout:
    """What ``_sampler.stack_walk`` is given: addresses and offsets, nothing to interpret."""

    threads_head: int
    ts_next: int
    ts_tid: int
    ts_frame: tuple[int, ...]
    f_code: int
    f_previous: int
    f_instr: int
    f_owner: int
    owner_cstack: int
    code_units: int
    max_depth: int = MAX_DEPTH
    max_threads: int = MAX_THREADS
    instr_is_lasti: bool = False
    """3.8-3.10: the frame's int ``f_lasti`` instead of an instruction pointer."""
    batched: bool = True
    """Read level by level, every thread per system call (``walk_batched`` in the C), rather
    than ~3 system calls a thread; False keeps the thread-by-thread walk to compare."""
    code_tags: int = 0
    """3.14+: the low bits of ``f_executable`` (a ``_PyStackRef``) that are tags, not address."""

    def as_tuple(self) -> tuple[object, ...]:
        return (
            self.threads_head, self.ts_next, self.ts_tid, self.ts_frame, self.f_code,
            self.f_previous, self.f_instr, self.f_owner, self.owner_cstack, self.code_units,
            self.max_depth, self.max_threads, int(self.instr_is_lasti), int(self.batched),
            self.code_tags,
        )  # fmt: skip


class NativeStacks:
    """Attach to ``pid``, walk its threads' stacks natively, name frames, build windows.

    One thread owns it. :meth:`walk` is one sample now; :meth:`loop` samples on a C-timed
    schedule; samples from ``gil_batch`` (the GIL loop with a stack layout) go to
    :meth:`window` the same way.
    """

    def __init__(self, pid: int, gil_reader: GilReader | None = None) -> None:
        if _sampler is None:
            raise TasksUnavailable(
                "the compiled sampler (_sampler) was not built", "reinstall with a C compiler"
            )
        # The GIL reader's parse of the interpreter's ELF when there is one (~0.13 s of CPU
        # saved at attach); else our own.
        binary = (
            gil_reader.binary
            if gil_reader is not None
            else open_python_binary(pid, TasksUnavailable, "attach to a CPython 3.8-3.15")
        )
        major, minor = binary.version
        table = load_asyncio_offsets(major, minor)
        extra = _stack_table(minor) if major == 3 else None
        if table is None or extra is None:
            raise TasksUnavailable(
                f"CPython {major}.{minor}: the native stack walker reads 3.8-3.15",
                "py-spy still samples stacks",
            )
        lay = _Layout(table)
        # The asyncio reader, un-attached: its code-object and line-table decoding is what we
        # reuse (its attach needs asyncio imported; this needs only the interpreter).
        self._objects = AsyncioReader(pid, binary, table, lay)
        self.pid = pid
        self.python = binary.version_string or table.python
        interp = self._objects._mem.read_pointer(binary.runtime_address + lay.interp_main)
        if not interp:
            raise TasksUnavailable("the interpreter is not initialised", "retry", retry=True)
        lasti = bool(extra.get("instr_is_lasti"))
        self._gil: GilReader | None = None
        """3.8-3.10: thread states hold a pthread_t, not the thread id; the GIL reader maps
        one to the other through the libc thread descriptor (see gil_reader.py)."""
        if lay.ts_native is None:
            self._gil = gil_reader if gil_reader is not None else GilReader.open(pid)
        self._pthread_tids: dict[int, int] = {}
        self._pthread_refresh = 0.0
        self._objects.interp = interp  # its thread_states() walks from here
        path = extra["tstate_frame"]
        assert isinstance(path, list)
        self.layout = WalkLayout(
            threads_head=interp + lay.interp_threads,
            ts_next=lay.ts_next,
            ts_tid=lay.ts_native if lay.ts_native is not None else lay.ts_thread_id,
            ts_frame=tuple(int(p) for p in path),
            f_code=int(extra["frame_code"]),  # type: ignore[call-overload]
            f_previous=int(extra["frame_previous"]),  # type: ignore[call-overload]
            f_instr=int(extra["frame_instr"]),  # type: ignore[call-overload]
            f_owner=int(extra["frame_owner"]),  # type: ignore[call-overload]
            owner_cstack=int(extra["owner_cstack"]),  # type: ignore[call-overload]
            code_units=lay.co_code_adaptive,
            instr_is_lasti=lasti,
            code_tags=~lay.untag,
        )
        self._args = self.layout.as_tuple()
        self._tids = TidMap(pid)
        self._code_by_addr: dict[int, tuple[tuple[int, ...], _Code] | None] = {}
        self._stacks: dict[bytes, tuple[Frame, ...] | None] = {}
        self.thread_names: dict[int, str] = {}
        """Our tid → name; set by whoever knows them (the threads probe, or :meth:`name`)."""
        self.next_walk = 0.0
        self.source = SourceLines(pid)
        """Source lines for innermost and application frames, as py-spy's windows get them."""

    # ------------------------------------------------------------------ sampling
    def walk(self) -> list[Sample]:
        """One sample of every thread, now. Raises :class:`MemoryReadError`-free: an
        unreadable thread list (the process exited) comes back as an empty list."""
        samples, err = _sampler.stack_walk(self.pid, self._args)
        return [] if err else samples

    def loop(self, period: float, until: float) -> tuple[list[Sample], int]:
        """Sample every ``period`` seconds until ``until`` (``time.monotonic()`` clock), timed
        and read in C with the GIL released; returns (samples, errno of a failed read)."""
        import time

        if self.next_walk <= 0:
            self.next_walk = time.monotonic()
        samples, self.next_walk, err = _sampler.stack_loop(
            self.pid, self._args, period, self.next_walk, until
        )
        return samples, err

    def tid(self, raw: int) -> int | None:
        """Our id of the thread the walker names: its native id (3.11+, through the pid
        namespace), or on 3.8-3.10 the id the GIL reader maps its pthread_t to (None while
        unknown; the map is rebuilt at most once a second)."""
        if self._gil is None:
            return self._tids.ours(raw)
        found = self._pthread_tids.get(raw)
        now = time.monotonic()
        if found is None and now - self._pthread_refresh >= 1.0:
            self._pthread_refresh = now
            gil = self._gil
            with contextlib.suppress(MemoryReadError, GilUnavailable):
                states = gil._thread_states()
                tids = gil._state_tids(states, gil._own_tasks())
                self._pthread_tids = {
                    s.raw_tid: tids[s.address] for s in states if s.address in tids
                }
            found = self._pthread_tids.get(raw)
        return found

    # ------------------------------------------------------------------ naming
    def _code(self, address: int) -> tuple[tuple[int, ...], _Code] | None:
        """A code object, read and decoded once per address (None: not a code object)."""
        if address in self._code_by_addr:
            return self._code_by_addr[address]
        objects = self._objects
        lay = objects._l
        found = None
        with contextlib.suppress(_Torn, MemoryReadError, struct.error, TasksUnavailable):
            raw = objects._g.one(address, lay.code_read)
            if "code" not in objects._known:
                self._learn_types(address, raw)
            found = objects._code(address, raw)
        if found is not None:  # a torn read is retried on the next sample, not remembered
            if len(self._code_by_addr) >= 8192:
                self._code_by_addr.clear()
            self._code_by_addr[address] = found
        return found

    def _learn_types(self, address: int, raw: bytes) -> None:
        """The code, str and bytes types, from the first code object a frame points at:
        each checked by name and instance size against the table, as the asyncio attach
        checks the types it finds through ``sys.modules``."""
        objects = self._objects
        lay = objects._l
        objects._validate_type("code", _HDR.unpack_from(raw, 0)[1])
        filename = struct.unpack_from("<Q", raw, lay.co_filename)[0]
        linetable = struct.unpack_from("<Q", raw, lay.co_linetable)[0]
        objects._validate_type("str", objects._type_of(filename))
        objects._validate_type("bytes", objects._type_of(linetable))

    def frames(self, packed: bytes) -> tuple[Frame, ...] | None:
        """Name one thread's stack (innermost first); None when a frame's code object does
        not read back (that sample is dropped as torn)."""
        hit = self._stacks.get(packed, ())
        if hit != ():
            return hit
        objects = self._objects
        units = self.layout.code_units
        out: list[Frame] = []
        named: tuple[Frame, ...] | None = None
        for code_address, index in _PAIR.iter_unpack(packed):
            found = self._code(code_address)
            if found is None:
                break
            key, code = found
            pos = index if self.layout.instr_is_lasti else code_address + units + 2 * index
            line = objects._line(key, code, code_address, pos)
            out.append(Frame(code.qualname, code.filename, line))
        else:
            named = tuple(out)
        if named is not None:  # a torn stack is not remembered: its bytes may recur intact
            if len(self._stacks) >= _MAX_STACKS:
                self._stacks.clear()
            self._stacks[packed] = named
        return named

    def read_thread_names(self) -> dict[int, str]:
        """Our tid → ``threading`` name of every thread, as py-spy shows them: read from
        ``threading._active`` (ident → Thread) and each Thread's ``_name``, through the
        asyncio reader's dict and instance-attribute decoding; idents map to native ids
        through the thread states. Best effort: whatever does not read back is left out."""
        objects = self._objects
        lay = objects._l
        out: dict[int, str] = {}
        with contextlib.suppress(_Torn, MemoryReadError, struct.error, TasksUnavailable):
            interp = self.layout.threads_head - lay.interp_threads
            modules = objects._mem.read_pointer(interp + lay.interp_modules)
            if "dict" not in objects._known:
                objects._validate_type("dict", objects._type_of(modules))
            mods = objects._dict_str_items(modules, {"threading"})
            module = mods.get("threading")
            if module is None:
                return out
            md = objects._mem.read_pointer(module + lay.md_dict)
            active = objects._dict_str_items(md, {"_active"}).get("_active")
            if active is None or objects._type_of(active) != objects._known["dict"]:
                return out
            entries = objects._dict_entries(active)
            by_ident: dict[int, str] = {}
            for key, thread in entries[:MAX_THREADS]:
                ident = objects._decode_int(objects._g.one(key, 64))
                name_ptr = objects._instance_attr(
                    thread, objects._type(objects._type_of(thread)), "_name"
                )
                if ident is None or name_ptr is None:
                    continue
                name = objects._read_strs([name_ptr])[0]
                if name is not None:
                    by_ident[ident] = name
            for ident, native in objects.thread_states().values():
                if native is None:  # 3.8-3.10: the ident is the pthread_t
                    native = self.tid(ident)
                if native is not None and ident in by_ident:
                    out[native] = by_ident[ident]
        return out

    # ------------------------------------------------------------------ windows
    def window(
        self, samples: list[Sample], start: float, end: float, rate_hz: float
    ) -> StacksWindow:
        """The samples of ``[start, end)`` as a py-spy-like window: identical consecutive
        stacks of a thread collapse into one span from the sample that first showed it to
        the sample that showed something else, or, at the window's end, for one walk's
        period (capped at ``end``): a walk stands for the time until the next one. Ended at
        the last walk instead, a thread first seen there had a span of no length, which the
        analysis drops: at a shed 25 Hz, thread-per-request threads live one or two walks,
        and a collection that ended on such a window read every request in flight as
        "code not visible": once in a CI run under a CPU hog, and once in 96 runs here with
        the walk rate patched down (that run's last window walked at 25 Hz)."""
        frame_index: dict[Frame, int] = {}
        frames: list[Frame] = []
        spans: list[StackSpan] = []
        open_: dict[int, tuple[float, bytes, tuple[int, ...]]] = {}
        errors = 0
        traces = 0
        last_t = start
        for t, threads in samples:
            if not start <= t <= end:  # inclusive: the GIL loop's last walk is at `end`
                continue
            last_t = t
            seen: set[int] = set()
            for native_tid, status, packed in threads:
                found_tid = self.tid(native_tid)
                if found_tid is None:
                    errors += 1
                    continue
                tid = found_tid
                seen.add(tid)
                if status == TORN:
                    errors += 1
                    continue
                current = open_.get(tid)
                if current is not None and current[1] == packed:
                    traces += 1
                    continue
                stack: tuple[int, ...] = ()
                if packed:
                    named = self.frames(packed)
                    if named is None:
                        errors += 1
                        continue
                    stack = tuple(frame_index.setdefault(f, len(frame_index)) for f in named)
                    if len(frame_index) > len(frames):
                        frames.extend(list(frame_index)[len(frames) :])
                traces += 1
                if current is not None and current[2] == stack:  # same lines, other bytecode
                    open_[tid] = (current[0], packed, stack)
                    continue
                if current is not None and current[2]:
                    spans.append(StackSpan(tid, current[0], t, current[2]))
                open_[tid] = (t, packed, stack)
            for tid in [tid for tid in open_ if tid not in seen]:  # the thread exited
                began, _, stack = open_.pop(tid)
                if stack:
                    spans.append(StackSpan(tid, began, t, stack))
        held_to = min(end, last_t + 1.0 / rate_hz) if rate_hz > 0 else last_t
        for tid, (began, _, stack) in open_.items():
            if stack:
                spans.append(StackSpan(tid, began, held_to, stack))
        tids = {s.tid for s in spans}
        if tids - self.thread_names.keys():
            self.thread_names.update(self.read_thread_names())
            for tid in tids - self.thread_names.keys():
                self.thread_names[tid] = ""  # no threading name (a C thread): do not re-read
        names = tuple(sorted((tid, self.thread_names.get(tid, "")) for tid in tids))
        annotate_source(frames, spans, self.source)
        return StacksWindow(end, start, tuple(frames), tuple(spans), names, traces, errors, rate_hz)
