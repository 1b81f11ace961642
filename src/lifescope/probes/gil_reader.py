"""Read a running CPython's GIL from outside: who holds it, and how often it changes hands.

How: ``_PyRuntime`` is found from the ELF symbol table and ``/proc/PID/maps``
(:mod:`lifescope.probes.elf`); from there the GIL struct is located with per-version offsets
generated from each version's internal headers (:mod:`lifescope.probes.offsets`), or, on 3.13+,
with the offsets the interpreter itself publishes in ``_Py_DebugOffsets``.  A read is one
``process_vm_readv`` that gathers the GIL's first 32 bytes (``interval``, ``last_holder``,
``locked``, ``switch_number``) and the main interpreter's ``next_unique_id`` counter; the
holder's ``PyThreadState*`` is turned into a kernel TID through a cache.

Why the counter: thread states are malloc'ed and freed, so a new thread's state often lands at
the address of one that just exited, and an address→TID cache goes stale exactly under thread
churn (measured here with 150-250 short-lived threads/s: a cache that was only refreshed,
rate-limited, on misses lost the holder in 6-37 % of locked samples, and a cache that was never
invalidated named an already-dead thread in ~95 % of them).  CPython bumps ``next_unique_id``
every time it creates a thread state, so the cache is dropped whenever the counter moves; a
holder not in the cache is resolved directly by reading its thread state (one more
``process_vm_readv``, two on 3.8-3.10).

Why we validate before trusting: a wrong offset does not crash, it yields plausible nonsense.
So :meth:`GilReader.open` checks the layout against facts that cannot be true by accident — the
switch interval is sane, ``locked`` is 0 or 1, every thread state points back at its
interpreter and maps to a live thread of ``/proc/PID/task``, and when the GIL is held its
``last_holder`` is one of those thread states — and raises :class:`GilUnavailable` (with the
reason and a remedy) instead of guessing, so the collector can fall back to py-spy sampling.

TIDs on 3.8-3.10: those thread states store only ``thread_id`` (the ``pthread_t``), not the
kernel TID.  With glibc and musl a ``pthread_t`` is the address of the thread's descriptor, which
holds the TID at a fixed, libc-specific offset.  We find that offset *in the target*: the one
offset at which every thread state's descriptor contains a distinct live TID of the process
(our own process's libc is used only to break ties).  If no single offset fits, holders are
reported with ``holder_tid=None`` rather than guessed.  Reading the descriptor needs no ptrace.

Why this file is ~950 lines: :class:`GilReader` is one object whose attach (locate, validate,
discover the TID field) and whose 2 kHz read share the layout, the thread-state cache and the
rule that invalidates it; the checks in ``open`` are the reasons the read may trust its bytes.
Spread over files, a reader of the hot path would have to hold three modules to see why a read
is right. The per-version offsets and the ELF lookup already live apart (``offsets``, ``elf``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import struct
import threading
import time
from dataclasses import dataclass

from lifescope.probes.elf import (
    PythonBinary,
    open_python_binary,
)
from lifescope.probes.errors import GilUnavailable, NoGil
from lifescope.probes.memory import (
    MemoryReadError,
    PreparedRead,
    ProcessGoneError,
    ReadPermissionError,
    RemoteMemory,
)
from lifescope.probes.nspid import TidMap, ns_tids
from lifescope.probes.offsets import (
    CPythonOffsets,
    available_versions,
    load_offsets,
    newest_table,
    support,
    supported_range,
)
from lifescope.samples import NO_GIL

__all__ = ["GilRead", "GilReader", "GilUnavailable"]

# Sanity bounds used to validate a layout on attach.
_MAX_INTERVAL_US = 1_000_000  # sys.setswitchinterval() accepts more, but nobody runs with >1 s
_MAX_SWITCH_NUMBER = 1 << 48  # 9 years at 10^6 switches/s: anything larger is not a counter
_MAX_INTERPRETERS = 256
_MAX_THREADS = 100_000
_PTHREAD_SCAN_BYTES = 1024  # glibc keeps the TID at 720 (x86-64), musl far lower
_DEBUG_COOKIE = b"xdebugpy"
_INTERP_REFRESH_S = 0.05  # re-list interpreters at most this often (a new subinterpreter)
_MAX_CACHE = 4096


@dataclass(frozen=True, slots=True)
class GilRead:
    """One sample of the GIL.

    ``holder_tid`` is the kernel TID of the thread holding the GIL, None when the GIL is free
    or the holder cannot be mapped to a thread.  ``switch_number`` counts hand-overs to a
    *different* thread (it does not move when the same thread re-takes the GIL), so hold
    durations must come from runs of ``locked`` with the same holder, not from this counter.
    """

    locked: bool
    holder_tid: int | None
    switch_number: int


@dataclass(frozen=True, slots=True)
class BatchLayout:
    """The regions one GIL read gathers and the offsets of its fields in the gathered bytes
    (``counter`` is -1 when the thread-state counter is not read)."""

    regions: tuple[tuple[int, int], ...]
    size: int
    locked: int
    holder: int
    switch: int
    counter: int


@dataclass(frozen=True, slots=True)
class _Layout:
    """Resolved absolute addresses and field offsets for one attached process."""

    gil_address: int
    interval_off: int
    holder_off: int
    locked_off: int
    switch_off: int
    cond_off: int
    cond_size: int
    mutex_off: int
    mutex_size: int
    interpreters_head_address: int  # &_PyRuntime.interpreters.head
    main_interp: int
    counter_off: int | None  # main interp's next_unique_id; None: not trusted → no cache
    tstate_id_off: int | None  # PyThreadState.id (≤ next_unique_id), for validation
    interp_next_off: int
    interp_threads_head_off: int
    tstate_next_off: int
    tstate_interp_off: int
    tstate_tid_off: int  # native_thread_id (3.11+) or thread_id (pthread_t, 3.8-3.10)
    tid_is_native: bool


def _tasks(pid: int) -> set[int]:
    try:
        return {int(t) for t in os.listdir(f"/proc/{pid}/task")}
    except FileNotFoundError:
        return set()


@dataclass(frozen=True, slots=True)
class _ThreadState:
    address: int
    interp: int
    raw_tid: int  # native TID, or pthread_t on 3.8-3.10
    unique_id: int | None


class GilReader:
    """Reads one process's GIL.  Create with :meth:`open`; not thread-safe (one probe owns it)."""

    def __init__(
        self,
        pid: int,
        binary: PythonBinary,
        python_version: str,
        layout: _Layout,
        mem: RemoteMemory,
    ) -> None:
        self.pid = pid
        self.binary = binary
        self.python_version = python_version
        self._layout = layout
        self._mem = mem
        lo = min(layout.interval_off, layout.holder_off, layout.locked_off, layout.switch_off)
        hi = max(layout.interval_off, layout.holder_off, layout.locked_off, layout.switch_off) + 8
        self._span_start = lo
        self._span_len = hi - lo
        regions = [(layout.gil_address + lo, hi - lo)]
        if layout.counter_off is not None:
            regions.append((layout.main_interp + layout.counter_off, 8))
        self._prepared: PreparedRead = mem.prepare(regions)
        self._tstate_span = (
            max(layout.tstate_next_off, layout.tstate_interp_off, layout.tstate_tid_off) + 8
        )
        self._u64 = struct.Struct("<Q")
        self._i32 = struct.Struct("<i")
        self._tids: dict[int, int] = {}  # main-interpreter tstate address -> TID
        self._counter: int | None = None  # next_unique_id when _tids was last valid
        self._pthread_tid_off: int | None = None
        self._interval_us = 0
        self._last_interp_refresh = 0.0
        self.interp_addresses: tuple[int, ...] = (layout.main_interp,)
        self._tidmap = TidMap(pid)
        self.untested = False
        """A newer CPython than any table, attempted through its published offsets."""
        self.validated = ""
        """What the layout was checked against on attach, in words (for an untested version)."""
        self.forked_from: int | None = None
        """The stale thread id a forked worker's only thread state keeps (uWSGI), if any."""
        self._table_from = ""

    # ----------------------------------------------------------------- public API
    @classmethod
    def open(cls, pid: int) -> GilReader:
        """Attach (read-only) to ``pid``, resolve the GIL and validate the layout.

        Raises :class:`GilUnavailable` when anything does not check out.
        """
        binary = open_python_binary(
            pid,
            GilUnavailable,
            f"attach to a CPython {supported_range()} process (or its worker processes)",
        )
        major, minor = binary.version
        table = load_offsets(major, minor)
        untested = False
        if table is None and support(major, minor) == "untested":
            # A newer minor than any table: its _Py_DebugOffsets say where everything is;
            # the newest table supplies only what they do not publish, and is trusted only
            # where the published offsets agree with it (checked in _resolve_debug_offsets).
            table, untested = newest_table(), True
        if table is None:
            raise GilUnavailable(
                f"CPython {major}.{minor} is not supported by the GIL reader "
                f"(tables exist for {', '.join(available_versions())})",
                "use py-spy sampling (automatic) for this target",
            )
        if binary.machine != "EM_X86_64" or table.machine != "x86_64":
            raise GilUnavailable(
                f"{binary.machine} target; offset tables were generated for {table.machine}",
                "regenerate the tables on this architecture with tools/gen_offsets.py",
            )
        mem = RemoteMemory(pid)
        try:
            reader = cls._resolve(pid, binary, table, mem)
            reader.untested = untested
            reader._table_from = f"the {table.generated_from} table"
            reader._validate()
        except ReadPermissionError as exc:
            raise GilUnavailable.denied(pid) from exc
        except ProcessGoneError as exc:
            raise GilUnavailable.gone(pid) from exc
        except MemoryReadError as exc:
            raise GilUnavailable(
                f"reading the interpreter state failed: {exc}",
                "the target may be starting up or shutting down; retry",
            ) from exc
        return reader

    @property
    def note(self) -> str | None:
        """What the user should know about a reader that works: an untested (newer) version
        and what validated it, a forked worker, a pid namespace.  None when nothing."""
        notes = []
        if self.untested:
            notes.append(
                f"untested version {self.python_version}, validated: {self.validated} "
                f"(layout of the unpublished fields from {self._table_from})"
            )
        if self.forked_from is not None:
            notes.append(
                f"forked worker: its thread state keeps thread id {self.forked_from} of the "
                "process it was forked from; read as this process's only thread"
            )
        if self._tidmap.namespaced:
            notes.append("in another pid namespace: thread ids mapped through NSpid")
        return "; ".join(notes) or None

    @property
    def interval_us(self) -> int:
        """The target's switch interval in µs (``sys.getswitchinterval()``, 5000 by default)."""
        return self._interval_us

    @property
    def gil_address(self) -> int:
        return self._layout.gil_address

    @property
    def cond_address(self) -> int:
        """Address of the GIL's ``pthread_cond_t``.

        A thread waiting for the GIL sleeps in ``futex`` on a word *inside* this condition
        variable (glibc waits on ``__g_signals[]``, 40-48 bytes in), so compare ranges with
        :meth:`waits_for_gil` rather than equality.
        """
        return self._layout.gil_address + self._layout.cond_off

    @property
    def cond_size(self) -> int:
        return self._layout.cond_size

    @property
    def mutex_address(self) -> int:
        """Address of the GIL's mutex (briefly contended while the GIL changes hands)."""
        return self._layout.gil_address + self._layout.mutex_off

    @property
    def mutex_size(self) -> int:
        return self._layout.mutex_size

    @property
    def tid_source(self) -> str:
        """``"native_thread_id"`` (3.11+) or ``"pthread"`` (3.8-3.10, via the libc descriptor)."""
        return "native_thread_id" if self._layout.tid_is_native else "pthread"

    def waits_for_gil(self, futex_address: int) -> bool:
        """True if a thread blocked in ``futex(futex_address, ...)`` is waiting for this GIL.

        Use with the first argument of ``/proc/PID/task/TID/syscall`` when the syscall is
        ``futex`` (202 on x86-64).
        """
        c = self.cond_address
        m = self.mutex_address
        return (c <= futex_address < c + self._layout.cond_size) or (
            m <= futex_address < m + self._layout.mutex_size
        )

    def read(self) -> GilRead:
        """Sample the GIL: one ``process_vm_readv``; one more (two on 3.8-3.10) when the holder
        is a thread state not seen since thread states were last created.

        Raises :class:`GilUnavailable` with ``status="gone"`` when the process exited, or
        ``"unavailable"`` when the GIL memory stops making sense (interpreter finalising).
        """
        try:
            buf = self._prepared.read_into_buffer()
        except MemoryReadError as exc:
            raise self.read_error(exc) from exc
        return self.decode(buf)

    def read_error(self, exc: MemoryReadError) -> GilUnavailable:
        """What a failed read of the GIL means for the probe (the target gone, or not)."""
        if isinstance(exc, ProcessGoneError):
            return GilUnavailable.gone(self.pid, "")
        return GilUnavailable(f"GIL read failed: {exc}", "re-attach")

    @property
    def batch_layout(self) -> BatchLayout:
        """What a batch sampler (`gil_batch.py`) reads and where, in the buffer, the fields are:
        it reads the same regions as :meth:`read` and hands the bytes back to :meth:`decode`."""
        lay = self._layout
        base = self._span_start
        return BatchLayout(
            regions=self._prepared.regions,
            size=self._prepared.size,
            locked=lay.locked_off - base,
            holder=lay.holder_off - base,
            switch=lay.switch_off - base,
            counter=self._span_len if lay.counter_off is not None else -1,
        )

    def known_holders(self) -> tuple[int, ...]:
        """Thread-state addresses :meth:`decode` can name without reading the target again."""
        return tuple(self._tids)

    def decode(self, buf: bytes | bytearray | ctypes.Array[ctypes.c_char]) -> GilRead:
        """Interpret one read of :attr:`batch_layout`'s regions (as :meth:`read` does)."""
        lay = self._layout
        base = self._span_start
        locked = self._i32.unpack_from(buf, lay.locked_off - base)[0]
        holder = self._u64.unpack_from(buf, lay.holder_off - base)[0]
        switch = self._u64.unpack_from(buf, lay.switch_off - base)[0]
        self._interval_us = self._u64.unpack_from(buf, lay.interval_off - base)[0]
        if locked not in (0, 1):
            raise GilUnavailable(
                f"GIL 'locked' word reads {locked}: the interpreter is gone or finalising",
                "re-attach",
            )
        if lay.counter_off is not None:
            counter = self._u64.unpack_from(buf, self._span_len)[0]
            if counter != self._counter:
                # New thread states exist; any cached address may now belong to another thread.
                self._tids.clear()
                self._counter = counter
        if not locked:
            return GilRead(False, None, switch)
        tid = self._tids.get(holder)
        if tid is None and holder:
            tid = self._resolve_holder(holder)
        return GilRead(True, tid, switch)

    @property
    def cache_enabled(self) -> bool:
        """False when ``next_unique_id`` could not be trusted: every locked read then costs
        an extra read of the holder's thread state, but is never stale."""
        return self._layout.counter_off is not None

    def threads(self) -> dict[int, int]:
        """Thread-state address → TID for every interpreter (walks the lists; diagnostics)."""
        return self._refresh()

    def refresh(self) -> None:
        """Re-walk the thread-state lists now and re-seed the holder cache."""
        self._refresh()

    def close(self) -> None:
        """Nothing is held open in the target; provided for symmetry with other probes."""

    def __enter__(self) -> GilReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GilReader(pid={self.pid}, python={self.python_version}, "
            f"{'shared' if self.binary.shared else 'static'}, gil={self.gil_address:#x})"
        )

    # ----------------------------------------------------------------- resolution
    @classmethod
    def _resolve(
        cls, pid: int, binary: PythonBinary, t: CPythonOffsets, mem: RemoteMemory
    ) -> GilReader:
        runtime = binary.runtime_address
        version = binary.version_string or f"{binary.version[0]}.{binary.version[1]}"
        g = t.gil
        sizes = t.sizes
        if t.debug_offsets_layout is not None:
            untested = support(*binary.version) == "untested"
            return cls._resolve_debug_offsets(pid, binary, t, mem, untested)
        main = mem.read_pointer(runtime + t.runtime["interpreters_main"])
        if not main:
            raise GilUnavailable(
                "the interpreter is not initialised (or already finalised)",
                "attach once the server is running",
            )
        if t.gil_location == "runtime":
            gil = runtime + t.runtime["ceval_gil"]
        else:
            gil = mem.read_pointer(main + t.interp["ceval_gil"])
            if gil != main + t.interp["gil_struct"]:
                raise GilUnavailable(
                    f"main interpreter's ceval.gil ({gil:#x}) is not its own _gil "
                    f"({main + t.interp['gil_struct']:#x}): layout mismatch for {version}",
                    "regenerate offsets with tools/gen_offsets.py; falling back to py-spy",
                )
        native = t.tstate_tid == "native_thread_id"
        layout = _Layout(
            gil_address=gil,
            interval_off=g["interval"],
            holder_off=g["last_holder"],
            locked_off=g["locked"],
            switch_off=g["switch_number"],
            cond_off=g["cond"],
            cond_size=sizes["pthread_cond"],
            mutex_off=g["mutex"],
            mutex_size=sizes["pthread_mutex"],
            interpreters_head_address=runtime + t.runtime["interpreters_head"],
            main_interp=main,
            counter_off=t.interp["next_unique_id"],
            tstate_id_off=t.tstate["id"],
            interp_next_off=t.interp["next"],
            interp_threads_head_off=t.interp["threads_head"],
            tstate_next_off=t.tstate["next"],
            tstate_interp_off=t.tstate["interp"],
            tstate_tid_off=t.tstate["native_thread_id"] if native else t.tstate["thread_id"],
            tid_is_native=native,
        )
        return cls(pid, binary, version, layout, mem)

    @classmethod
    def _resolve_debug_offsets(
        cls,
        pid: int,
        binary: PythonBinary,
        t: CPythonOffsets,
        mem: RemoteMemory,
        untested: bool = False,
    ) -> GilReader:
        """3.13+: take offsets from the target's own ``_Py_DebugOffsets``.

        ``_Py_DebugOffsets`` does not publish ``switch_number``, ``cond`` or ``mutex``; those come
        from the header-generated table, and are trusted only if the published ``locked`` and
        ``last_holder`` offsets (relative to the GIL struct) equal the table's — i.e. the GIL
        struct in this build has the layout the table was generated from.
        """
        assert t.debug_offsets_layout is not None
        lay = t.debug_offsets_layout
        runtime = binary.runtime_address
        base = runtime + t.runtime["debug_offsets"]
        raw = mem.read(base, lay["size"])
        try:
            published = parse_debug_offsets(raw, lay)
        except ValueError as exc:
            raise GilUnavailable(
                str(exc), "not a standard CPython build; falling back to py-spy"
            ) from exc
        pub = published.value
        if published.minor_version != binary.version:
            major, minor = published.minor_version
            raise GilUnavailable(
                f"_Py_DebugOffsets says {major}.{minor}, the binary says "
                f"{binary.version[0]}.{binary.version[1]}",
                "report this build; falling back to py-spy",
            )
        version = published.version
        ip = "interpreter_state."
        gil_struct = pub(ip + "gil_runtime_state")
        rel_locked = pub(ip + "gil_runtime_state_locked") - gil_struct
        rel_holder = pub(ip + "gil_runtime_state_holder") - gil_struct
        g = t.gil
        if (rel_locked, rel_holder) != (g["locked"], g["last_holder"]):
            raise GilUnavailable(
                f"GIL struct of {version} differs from the table generated from "
                f"{t.generated_from} (locked +{rel_locked} vs +{g['locked']}, holder "
                f"+{rel_holder} vs +{g['last_holder']}); switch_number cannot be located",
                "regenerate offsets with tools/gen_offsets.py against this build",
            )
        main = mem.read_pointer(runtime + t.runtime["interpreters_main"])
        head_addr = runtime + pub("runtime_state.interpreters_head")
        # Cross-check the table's interpreters.main with the published list: main is the
        # interpreter with id 0, reachable from the published head.
        interp, seen = mem.read_pointer(head_addr), 0
        main_published = 0
        while interp and seen < _MAX_INTERPRETERS:
            if mem.read_i64(interp + pub(ip + "id")) == 0:
                main_published = interp
                break
            interp = mem.read_pointer(interp + pub(ip + "next"))
            seen += 1
        if not main_published:
            raise GilUnavailable(
                "no main interpreter in the published interpreter list",
                "attach once the server is running",
            )
        if published.free_threaded:
            # "enabled" is published relative to the GIL struct, not the interpreter
            gil_struct_address = main_published + pub(ip + "gil_runtime_state")
            enabled = mem.read_i32(gil_struct_address + pub(ip + "gil_runtime_state_enabled"))
            raise free_threaded_verdict(version, enabled)
        if untested:
            main = main_published  # the table's runtime offsets are another version's
        elif main != main_published:
            raise GilUnavailable(
                f"interpreters.main ({main:#x}) disagrees with the published list "
                f"({main_published:#x})",
                "regenerate offsets with tools/gen_offsets.py against this build",
            )
        gil = mem.read_pointer(main + pub(ip + "ceval_gil"))
        if gil != main + gil_struct:
            raise GilUnavailable(
                f"main interpreter's ceval.gil ({gil:#x}) is not its own _gil "
                f"({main + gil_struct:#x})",
                "falling back to py-spy",
            )
        # next_unique_id and PyThreadState.id are not published: use the table's offsets only
        # if every published interpreter/thread-state offset equals the table's, i.e. this
        # build has the layout the table was generated from.  Otherwise run without the cache.
        ts = "thread_state."
        same_layout = (
            all(pub(ip + k) == t.interp[k] for k in ("next", "id", "threads_head", "ceval_gil"))
            and all(
                pub(ts + k) == t.tstate[k]
                for k in ("prev", "next", "interp", "thread_id", "native_thread_id")
            )
            and gil_struct == t.interp["gil_struct"]
        )
        layout = _Layout(
            gil_address=gil,
            interval_off=g["interval"],
            holder_off=rel_holder,
            locked_off=rel_locked,
            switch_off=g["switch_number"],
            cond_off=g["cond"],
            cond_size=t.sizes["pthread_cond"],
            mutex_off=g["mutex"],
            mutex_size=t.sizes["pthread_mutex"],
            interpreters_head_address=head_addr,
            main_interp=main,
            counter_off=t.interp["next_unique_id"] if same_layout else None,
            tstate_id_off=t.tstate["id"] if same_layout else None,
            interp_next_off=pub(ip + "next"),
            interp_threads_head_off=pub(ip + "threads_head"),
            tstate_next_off=pub("thread_state.next"),
            tstate_interp_off=pub("thread_state.interp"),
            tstate_tid_off=pub("thread_state.native_thread_id"),
            tid_is_native=True,
        )
        if untested:
            layout = _discover_tid_field(pid, layout, raw, lay, mem)
        return cls(pid, binary, version, layout, mem)

    # ----------------------------------------------------------------- thread states
    def _interpreters(self) -> list[int]:
        """All interpreters (≤3.11 share the runtime GIL; 3.12 legacy subinterpreters share the
        main one), so a holder may belong to any of them."""
        lay = self._layout
        out: list[int] = []
        interp = self._mem.read_pointer(lay.interpreters_head_address)
        while interp and interp not in out and len(out) < _MAX_INTERPRETERS:
            out.append(interp)
            interp = self._mem.read_pointer(interp + lay.interp_next_off)
        return out

    def _thread_states(self) -> list[_ThreadState]:
        lay = self._layout
        span = self._tstate_span
        if lay.tstate_id_off is not None:
            span = max(span, lay.tstate_id_off + 8)
        states: list[_ThreadState] = []
        seen: set[int] = set()
        interps = self._interpreters()
        self.interp_addresses = tuple(interps)
        for interp in interps:
            ts = self._mem.read_pointer(interp + lay.interp_threads_head_off)
            while ts and ts not in seen and len(seen) < _MAX_THREADS:
                seen.add(ts)
                raw = self._mem.read(ts, span)
                states.append(
                    _ThreadState(
                        address=ts,
                        interp=int.from_bytes(raw[lay.tstate_interp_off :][:8], "little"),
                        raw_tid=int.from_bytes(raw[lay.tstate_tid_off :][:8], "little"),
                        unique_id=None
                        if lay.tstate_id_off is None
                        else int.from_bytes(raw[lay.tstate_id_off :][:8], "little"),
                    )
                )
                ts = int.from_bytes(raw[lay.tstate_next_off :][:8], "little")
        return states

    def _read_counter(self) -> int | None:
        off = self._layout.counter_off
        return None if off is None else self._mem.read_u64(self._layout.main_interp + off)

    def _refresh(self) -> dict[int, int]:
        """Walk all thread states; seed the cache with the main interpreter's ones.

        The counter is read *before* the walk: if a thread state is created during the walk,
        the next :meth:`read` sees a different counter and drops what we cached here.
        """
        counter = self._read_counter()
        states = self._thread_states()
        tids = self._state_tids(states, self._own_tasks())
        if counter is not None:
            main = self._layout.main_interp
            self._tids = {
                s.address: tids[s.address] for s in states if s.address in tids and s.interp == main
            }
            self._counter = counter
        return tids

    def _resolve_holder(self, holder: int) -> int | None:
        """Read the holder's thread state directly; cache it if it is the main interpreter's."""
        lay = self._layout
        try:
            raw = self._mem.read(holder, self._tstate_span)
            interp = self._u64.unpack_from(raw, lay.tstate_interp_off)[0]
            raw_tid = self._u64.unpack_from(raw, lay.tstate_tid_off)[0]
            if interp not in self.interp_addresses:
                now = time.monotonic()
                if now - self._last_interp_refresh < _INTERP_REFRESH_S:
                    return None
                self._last_interp_refresh = now
                self.interp_addresses = tuple(self._interpreters())
                if interp not in self.interp_addresses:
                    return None  # not a thread state (torn read of a changing holder)
            if not raw_tid:
                return None
            if lay.tid_is_native:
                own = raw_tid
            else:
                off = self._pthread_tid_off
                if off is None:
                    return None
                own = self._i32.unpack_from(self._mem.read(raw_tid + off, 4), 0)[0]
        except ProcessGoneError as exc:
            raise GilUnavailable.gone(self.pid, "") from exc
        except MemoryReadError:
            return None  # freed under us
        tid = self._tid_of(own) if own > 0 else None
        if tid is None:
            return None
        if lay.counter_off is not None and interp == lay.main_interp:
            if len(self._tids) >= _MAX_CACHE:
                self._tids.clear()
            self._tids[holder] = tid
        return tid

    def _tid_of(self, own: int) -> int | None:
        """Our id of the thread a thread state names: through the pid namespace's NSpid map,
        and, for a forked worker, its stale inherited id read as its only thread."""
        if own == self.forked_from:
            return self.pid
        return self._tidmap.host(own)

    def _own_tasks(self) -> set[int]:
        """The target's threads by the ids *it* uses (its pid namespace's)."""
        if self._tidmap.namespaced:
            self._tidmap.refresh()
            return set(ns_tids(self.pid))
        return _tasks(self.pid)

    def _state_tids(self, states: list[_ThreadState], own_tasks: set[int]) -> dict[int, int]:
        """Thread-state address → our TID, for the states that map to one."""
        if self._layout.tid_is_native:
            owns = {s.address: s.raw_tid for s in states if s.raw_tid}
        else:
            owns = self._map_pthreads(states, own_tasks)
        out = {}
        for address, own in owns.items():
            tid = self._tid_of(own)
            if tid is not None:
                out[address] = tid
        return out

    def _map_pthreads(self, states: list[_ThreadState], tasks: set[int]) -> dict[int, int]:
        """3.8-3.10: pthread_t → TID through the libc thread descriptor (see module doc)."""
        pthreads = sorted({s.raw_tid for s in states if s.raw_tid})
        blocks = {p: self._read_descriptor(p) for p in pthreads}
        off = self._pthread_tid_off
        if off is None or not self._offset_fits(off, blocks, tasks):
            off = self._discover_tid_offset(blocks, tasks)
            self._pthread_tid_off = off
        if off is None:
            return {}
        out: dict[int, int] = {}
        for s in states:
            block = blocks.get(s.raw_tid)
            if block is not None and off + 4 <= len(block):
                tid = self._i32.unpack_from(block, off)[0]
                if tid in tasks:
                    out[s.address] = tid
        return out

    def _read_descriptor(self, pthread: int) -> bytes | None:
        """Up to _PTHREAD_SCAN_BYTES of the descriptor, stopping at a page end if need be."""
        for size in (_PTHREAD_SCAN_BYTES, 4096 - (pthread % 4096)):
            with contextlib.suppress(MemoryReadError):
                return self._mem.read(pthread, min(size, _PTHREAD_SCAN_BYTES))
        return None

    def _offset_fits(self, off: int, blocks: dict[int, bytes | None], tasks: set[int]) -> bool:
        """Every descriptor (bar transient ones) holds a distinct live TID at ``off``."""
        tids = []
        for block in blocks.values():
            if block is None or off + 4 > len(block):
                continue
            tids.append(self._i32.unpack_from(block, off)[0])
        live = [t for t in tids if t in tasks]
        return bool(live) and len(set(live)) == len(live) and len(live) >= len(tids) - 1

    def _discover_tid_offset(self, blocks: dict[int, bytes | None], tasks: set[int]) -> int | None:
        usable = [b for b in blocks.values() if b is not None]
        if not usable:
            return None
        limit = min(len(b) for b in usable)
        cands: list[int] = []
        for off in range(0, limit - 3, 4):
            tids = [self._i32.unpack_from(b, off)[0] for b in usable]
            if all(t in tasks for t in tids) and len(set(tids)) == len(tids):
                cands.append(off)
        if len(cands) == 1:
            return cands[0]
        if not cands:
            return None
        mine = _own_pthread_tid_offsets()
        preferred = [c for c in cands if c in mine]
        if len(preferred) == 1:
            return preferred[0]
        # Several offsets fit; harmless only if they all give the same answer.
        answers = {tuple(self._i32.unpack_from(b, c)[0] for b in usable) for c in cands}
        return cands[0] if len(answers) == 1 else None

    # ----------------------------------------------------------------- validation
    def _validate(self, attempts: int = 20, pause_s: float = 0.005) -> None:
        """Check the layout against the live process; retry briefly to ride out races
        (a holder changing between our reads, a thread starting or exiting)."""
        problems: list[tuple[str, str]] = []
        for _ in range(attempts):
            problem = self._validate_once()
            if problem is None:
                return
            problems.append(problem)
            time.sleep(pause_s)
        # Report the most frequent problem: it is the systematic one.
        reason, remedy = max(set(problems), key=problems.count)
        raise GilUnavailable(
            f"GIL layout failed validation for CPython {self.python_version}: {reason}",
            f"falling back to py-spy sampling; {remedy}",
        )

    def _layout_remedy(self) -> str:
        """What to do about offsets that do not fit: depends on whether they were generated
        for this version at all."""
        if self.untested:
            return (
                f"CPython {self.python_version} is newer than lifescope's tables: generate "
                "one with tools/gen_offsets.py against it, or upgrade lifescope"
            )
        return "regenerate offsets with tools/gen_offsets.py against this build"

    def _unmapped(self, states: list[_ThreadState], own: set[int]) -> tuple[str, str] | None:
        """No thread state maps to a live thread: say why, with the remedy for that cause —
        or accept a forked worker (its one thread state keeps its parent's id)."""
        lay = self._layout
        raws = sorted({s.raw_tid for s in states if s.raw_tid})
        shown = ", ".join(str(r) for r in raws[:4])
        if self._tidmap.namespaced and not own:
            return (
                f"the target is in another pid namespace and /proc/{self.pid}/task/*/status "
                "has no NSpid line to map its thread ids",
                "run lifescope on a kernel ≥ 4.1, or inside the target's container",
            )
        main_states = [s for s in states if s.interp == lay.main_interp]
        if lay.tid_is_native and len(own) == 1 and len(main_states) == 1 and raws:
            # A process forked by C code that did not re-initialise CPython (uWSGI's workers
            # unless py-call-osafterfork is set): the one thread state is the thread that
            # forked, in the parent.  With one thread there is only one it can be now.
            self.forked_from = main_states[0].raw_tid
            return None
        if lay.tid_is_native and all(os.path.exists(f"/proc/{r}") for r in raws):
            return (
                f"thread states keep thread ids ({shown}) of another process, not of "
                f"/proc/{self.pid}/task ({len(own)} threads): a worker forked without "
                "re-initialising CPython, which now runs more than one thread",
                "uWSGI: set py-call-osafterfork = true (or attach while a worker has one thread)",
            )
        return (
            f"no thread state maps to a live thread of /proc/PID/task (thread states say "
            f"{shown or 'nothing'}; the process has {len(own)} threads)",
            self._layout_remedy(),
        )

    def _validate_once(self) -> tuple[str, str] | None:
        """None when the layout fits the live process, else (what failed, the remedy)."""
        lay = self._layout
        raw = self._mem.read(lay.gil_address, max(lay.switch_off, lay.locked_off) + 8)
        interval = self._u64.unpack_from(raw, lay.interval_off)[0]
        locked = self._i32.unpack_from(raw, lay.locked_off)[0]
        holder = self._u64.unpack_from(raw, lay.holder_off)[0]
        switch = self._u64.unpack_from(raw, lay.switch_off)[0]
        remedy = self._layout_remedy()
        if not 1 <= interval <= _MAX_INTERVAL_US:
            return f"switch interval reads {interval} µs", remedy
        if locked not in (0, 1):
            return f"'locked' reads {locked}", remedy
        if switch >= _MAX_SWITCH_NUMBER:
            return f"switch_number reads {switch}", remedy
        self._interval_us = interval
        tasks = _tasks(self.pid)
        if not tasks:
            raise ProcessGoneError(3, "no such process", self.pid, lay.gil_address, 0)
        own = self._own_tasks()
        counter = self._read_counter()
        states = self._thread_states()
        if not states:
            return "no thread states in any interpreter", "attach once the server is running"
        interps = set(self.interp_addresses)
        strays = [s for s in states if s.interp not in interps]
        if strays:
            return f"{len(strays)} thread state(s) do not point back to an interpreter", remedy
        tids = self._state_tids(states, own)
        if not lay.tid_is_native and not tids:
            return (
                "cannot map pthread_t to a kernel TID in this libc",
                "use py-spy sampling (automatic) for this target",
            )
        live = {a: t for a, t in tids.items() if t in tasks}
        if not live:
            failure = self._unmapped(states, own)
            if failure is not None:
                return failure
            live = self._state_tids(states, own)
        if locked and holder not in live:
            return f"GIL held by {holder:#x}, which is not a live thread state", remedy
        if counter is not None:
            # Thread-state ids are handed out as ++next_unique_id: all distinct and ≤ counter.
            ids = [s.unique_id for s in states if s.interp == lay.main_interp]
            if not counter < _MAX_SWITCH_NUMBER:
                return f"next_unique_id reads {counter}", remedy
            if any(i is None or not 0 < i <= counter for i in ids) or len(set(ids)) != len(ids):
                return f"thread-state ids {ids[:8]} do not fit next_unique_id={counter}", remedy
            self._tids = {
                a: t
                for a, t in live.items()
                if a in {s.address for s in states if s.interp == lay.main_interp}
            }
            self._counter = counter
        self.validated = (
            f"switch interval {interval} µs, {len(live)} of {len(states)} thread states map to "
            f"live threads, locked={locked}"
            + (", the holder is one of them" if locked else "")
            + (", thread-state ids fit next_unique_id" if counter is not None else "")
        )
        return None


@dataclass(frozen=True, slots=True)
class PublishedOffsets:
    """What a ``_Py_DebugOffsets`` block (3.13+, at the start of ``_PyRuntime``) says about
    its interpreter: its version, whether it is a free-threaded build, and where things are."""

    raw: bytes
    layout: dict[str, int]
    version_hex: int
    free_threaded: bool

    def value(self, key: str) -> int:
        at = self.layout[key]
        return int.from_bytes(self.raw[at : at + 8], "little")

    @property
    def minor_version(self) -> tuple[int, int]:
        return (self.version_hex >> 24) & 0xFF, (self.version_hex >> 16) & 0xFF

    @property
    def version(self) -> str:
        h = self.version_hex
        level = {0xA: "a", 0xB: "b", 0xC: "rc"}.get((h >> 4) & 0xF, "")
        return f"{(h >> 24) & 0xFF}.{(h >> 16) & 0xFF}.{(h >> 8) & 0xFF}" + (
            f"{level}{h & 0xF}" if level else ""
        )


def parse_debug_offsets(raw: bytes, layout: dict[str, int]) -> PublishedOffsets:
    """Read a ``_Py_DebugOffsets`` block with one version's layout of that struct.

    The cookie, version and ``free_threaded`` flag lead the struct in every version, so they
    read true even with a neighbouring version's layout.  Pure: tested on recorded blocks.
    """
    if raw[:8] != _DEBUG_COOKIE:
        raise ValueError(f"_Py_DebugOffsets cookie missing at _PyRuntime ({raw[:8]!r})")
    version_hex = int.from_bytes(raw[8:16], "little")
    free = int.from_bytes(raw[layout["free_threaded"] :][:8], "little")
    return PublishedOffsets(raw, layout, version_hex, bool(free))


def free_threaded_verdict(version: str, gil_enabled: int) -> GilUnavailable:
    """A free-threaded build: with its GIL disabled at run time (the default) there is no GIL
    to read, and saying "held 0 %" or taking py-spy's owns_gil would be made up; with the GIL
    re-enabled (``PYTHON_GIL=1``) its struct differs from the GIL-build tables."""
    if gil_enabled == 0:
        return NoGil(
            f"{NO_GIL}: free-threaded CPython {version}t with the GIL disabled",
            "nothing to fix: the GIL pane shows how many threads run Python at once instead",
        )
    return GilUnavailable(
        f"free-threaded CPython {version}t running with its GIL enabled (PYTHON_GIL=1 or an "
        "extension that needs it): its GIL struct differs from the GIL-build tables",
        "held share from py-spy sampling (automatic)",
    )


_MAX_TSTATE = 1 << 14
_THREAD_SECTION_SLOTS = 24


def _discover_tid_field(
    pid: int, layout: _Layout, raw: bytes, lay: dict[str, int], mem: RemoteMemory
) -> _Layout:
    """A newer CPython may have inserted fields into ``_Py_DebugOffsets``' thread-state section
    (3.15 did, before ``thread_id``), so the newest known layout can point at the wrong one.
    Find ``native_thread_id`` by value instead: among the offsets that section publishes, the
    one at which every thread state of the main interpreter holds a distinct live thread id
    of the target.  Validation still follows; none or several fits leave the layout as read.
    """
    start = lay["thread_state.size"]
    size = int.from_bytes(raw[start : start + 8], "little")
    if not 0 < size <= _MAX_TSTATE:
        return layout
    slots = [
        int.from_bytes(raw[at : at + 8], "little")
        for at in range(start + 8, min(len(raw), start + 8 * _THREAD_SECTION_SLOTS), 8)
    ]
    candidates = sorted({v for v in slots if 0 < v <= size - 8 and v % 8 == 0})
    blocks: list[bytes] = []
    ts = mem.read_pointer(layout.main_interp + layout.interp_threads_head_off)
    while ts and len(blocks) < 256:
        block = mem.read(ts, size)
        blocks.append(block)
        ts = int.from_bytes(block[layout.tstate_next_off :][:8], "little")
    own = set(ns_tids(pid)) or _tasks(pid)
    fits = []
    for off in candidates:
        values = [int.from_bytes(b[off : off + 8], "little") for b in blocks]
        if values and all(v in own for v in values) and len(set(values)) == len(values):
            fits.append(off)
    if len(fits) != 1:
        return layout
    return dataclasses.replace(layout, tstate_tid_off=fits[0])


_own_offsets_cache: list[frozenset[int]] = []
_own_offsets_lock = threading.Lock()


def _own_pthread_tid_offsets() -> frozenset[int]:
    """Offsets in *our* libc's thread descriptor that hold our TID (a tie-breaker only)."""
    with _own_offsets_lock:
        if _own_offsets_cache:
            return _own_offsets_cache[0]
        found: frozenset[int] = frozenset()
        try:
            libc = ctypes.CDLL(None)
            libc.pthread_self.restype = ctypes.c_ulong
            me = libc.pthread_self()
            tid = threading.get_native_id()
            block = ctypes.string_at(me, _PTHREAD_SCAN_BYTES)
            found = frozenset(
                off
                for off in range(0, _PTHREAD_SCAN_BYTES - 3, 4)
                if struct.unpack_from("<i", block, off)[0] == tid
            )
        except (OSError, AttributeError, ValueError):
            found = frozenset()
        _own_offsets_cache.append(found)
        return found
