"""Read every asyncio task of a running CPython 3.8-3.13 from outside, with ``process_vm_readv``.

Why from outside: the point of lifescope is to watch a production server without running code
in it or pausing it.  py-spy sees only the *running* coroutine; the hundreds of requests parked
in ``await`` are invisible to stack sampling, and CPython's own ``python -m asyncio ps`` needs
3.14 on both sides.  This module finds the tasks the way CPython itself keeps them and walks
each one's ``await`` chain to the innermost suspended frame.

Where the tasks are: ``asyncio.tasks`` keeps a ``weakref.WeakSet`` of live tasks —
``_all_tasks`` on 3.8-3.11, ``_scheduled_tasks`` on 3.12+ (plus ``_eager_tasks``, a plain
``set`` holding tasks during their eager first step).  With the C accelerator these are the
objects the ``_asyncio`` module created (on 3.12+ they live in its module state, and
``asyncio.tasks`` re-exports them), so both module dicts name the same objects.  The path is::

    _PyRuntime.interpreters.main → interp->modules (sys.modules, a dict)
      → "asyncio.tasks" (a module) → md_dict → "_all_tasks"/"_scheduled_tasks" (a WeakSet)
      → its instance attribute "data" (a set) → set entries (weak references)
      → wr_object (a Task) → task_coro (a coroutine) → frame → awaited object → ...

The current (running) task of each loop comes from ``_current_tasks`` (a dict loop → task).

How the chain is walked: a suspended coroutine that is inside ``await x`` holds the awaited
iterator on top of its value stack (this is exactly what ``cr_await`` returns); we follow it
only when the frame is provably in a yield-from — 3.8-3.10: the next opcode is ``YIELD_FROM``;
3.11-3.12: the next code unit is a ``RESUME`` with oparg ≥ 2; 3.13: the frame state is
``FRAME_SUSPENDED_YIELD_FROM`` — so a bare ``yield`` (``asyncio.sleep(0)``) never makes us
read a local variable as if it were awaited.  ``FutureIter`` (what ``await future`` iterates)
is followed to its future; ``coroutine.__await__()`` wrappers and async-generator ``asend``
objects to their generator.  Lines come from decoding each version's line table at the
frame's instruction offset (``co_lnotab`` 3.8-3.9, ``co_linetable`` 3.10, the PEP 657
location table 3.11+), so they match what the target's own ``frame.f_lineno`` says.

Who awaits whom: a task whose chain ends on another Task (``await task``, 3.12+ ``wait_for``)
sets that task's ``awaited_by``.  Tasks waiting on several at once are linked too, from the
objects CPython keeps them in: the awaited ``_GatheringFuture``'s ``_children`` (``gather``),
and the first local of an innermost ``asyncio.wait`` (``fs``), ``TaskGroup.__aexit__``
(``self._tasks``) or 3.8-3.11 ``wait_for`` (the wrapped task) frame.

Layouts come from generated tables (:mod:`lifescope.probes.asyncio_offsets`).  On attach every
type we reach is checked by name *and* instance size against the table (``dict``, ``set``,
``str``, ``module``, ``WeakSet``, ``_asyncio.Task``, ``_asyncio.Future``, ``coroutine``,
``generator``, ``code``...); any mismatch raises :class:`TasksUnavailable` ("task view
unavailable for this build") rather than guessing.

Torn reads: the target keeps running while we read, so any object may be freed or reused
between two reads.  Every object we decode must have the expected type pointer and a sane
reference count; every size and count is bounded; every walk has a depth limit.  An object that
fails is skipped and counted in ``errors`` — a pass never raises except when the process is gone
or we lost permission.

On 3.8-3.12 the yield-from test needs the code object, which is read once per pass for all
tasks; so the walk reads past a suspended frame speculatively and the chain is cut afterwards
where the test fails — such reads never count as errors.

Cost: reads are gathered level by level — all weak references of the pass in one batch, then
all tasks, then all coroutines, and so on — with up to 1024 regions per system call; code
objects (few, long-lived) are decoded once and cached under a key of their immutable fields;
chains shared by many tasks are decoded once per pass; and the future at the end of an
``await`` inside ``asyncio.sleep``/``Event.wait``/``Lock.acquire``... is not read at all (the
frame already says what it is).  See ``bench/bench_tasks.py`` for the numbers.

What it cannot see: subinterpreters (only the main interpreter's ``sys.modules`` is read);
tasks that are not ``_asyncio.Task`` (pure-Python ``_PyTask``: skipped and counted in
``unsupported``); free-threaded (``3.13t``) builds and non-x86-64 targets (no tables); task
age (CPython records no creation time; the analysis derives "seen for at least"); and the
loop of a task is kept beside the result (``task_loops``), since ``TaskInfo`` has no field for
it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import os
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lifescope.probes.asyncio_offsets import (
    AsyncioOffsets,
    available_versions,
    load_asyncio_offsets,
)
from lifescope.probes.elf import (
    PythonBinary,
    open_python_binary,
)
from lifescope.probes.memory import (
    MemoryReadError,
    ProcessGoneError,
    ReadPermissionError,
    RemoteMemory,
)
from lifescope.samples import TaskAwait, TaskInfo

__all__ = [
    "AsyncioReader",
    "TasksUnavailable",
    "awaiting_from_frame",
    "line_from_linetable310",
    "line_from_lnotab",
    "line_from_locations",
]

# ---------------------------------------------------------------------------- bounds
_MAX_REFCNT = 1 << 40  # 3.12+ immortal objects read 0xFFFFFFFF; freed pymalloc blocks hold a
# free-list pointer (~0x7f...) where the refcount was, which this rejects.
_MAX_ADDRESS = 1 << 47  # x86-64 user space
_MAX_DICT_ENTRIES = 1 << 17  # sys.modules of a huge app is ~5k
_MAX_SET_SLOTS = 1 << 24  # 16M slots = 256 MB of table: refuse beyond
_TABLE_CHUNK = 1 << 16  # set table read in 64 KB pieces, stopping once max_tasks are found
_MAX_DEPTH = 64  # coroutine chain links followed per task
_MAX_STACK = 1 << 16  # value-stack slots
_MAX_STR = 1024  # characters read of a name or file path
_MAX_BYTES = 1 << 20  # line table / bytecode bytes
_MAX_TYPE_BASES = 32
_IOV_MAX = 1024
_MAX_GATHER = 64 << 20  # bytes per system call: a torn size must not allocate gigabytes
_OBJ_READ = 512
"""Bytes read for an object whose type we do not know yet: covers the largest fixed struct
(Task, ≤ 200 bytes) and, for a 3.11+ coroutine, its embedded frame and usually the top of its
value stack, saving a round trip.  Reads past an object's end stay inside the allocator's
pool; if one faults, it is retried with the minimum size."""
_OBJ_MIN = 48
_BATCH = 256
"""Tasks walked together: large enough that a level costs one system call, small enough that
each task's chain is read within a few milliseconds of the task (measured under heavy churn:
with ~100k tasks/s living 0-5 ms, whole-pass levels tore ~70 % of the chains read, 256-task
batches 20-35 %, 64-task batches hardly fewer for three times the system calls)."""
_MAX_CODE_CACHE = 8192
_MAX_NAME_CACHE = 65536
_MAX_TYPE_CACHE = 4096

_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_HDR = struct.Struct("<qQ")  # ob_refcnt, ob_type

# Kinds of object a chain link can be.
_K_OTHER, _K_GEN, _K_FUTITER, _K_WRAPPER, _K_ASEND, _K_TASK, _K_FUTURE, _K_NONE, _K_DEFERRED = (
    range(9)
)

# Where an await chain ends, by the innermost frame: (file suffix, qualname) → awaiting label.
# Why by frame: the awaited object is a bare Future in all these cases; the frame that created
# it says what it stands for.
_AWAIT_BY_FRAME: dict[tuple[str, str], str] = {
    ("asyncio/tasks.py", "sleep"): "sleep",
    ("asyncio/tasks.py", "__sleep0"): "sleep",
    ("asyncio/tasks.py", "_wait"): "wait",
    ("asyncio/tasks.py", "wait_for"): "wait_for",
    ("asyncio/locks.py", "Event.wait"): "event",
    ("asyncio/locks.py", "Lock.acquire"): "lock",
    ("asyncio/locks.py", "Condition.wait"): "condition",
    ("asyncio/locks.py", "Condition.wait_for"): "condition",
    ("asyncio/locks.py", "Semaphore.acquire"): "semaphore",
    ("asyncio/locks.py", "BoundedSemaphore.acquire"): "semaphore",
    ("asyncio/locks.py", "Barrier.wait"): "barrier",
    ("asyncio/locks.py", "Barrier._block"): "barrier",
    ("asyncio/locks.py", "Barrier._wait"): "barrier",
    ("asyncio/queues.py", "Queue.get"): "queue",
    ("asyncio/queues.py", "Queue.put"): "queue",
    ("asyncio/queues.py", "Queue.join"): "queue",
    ("asyncio/streams.py", "StreamReader._wait_for_data"): "read",
    ("asyncio/streams.py", "StreamReader.read"): "read",
    ("asyncio/streams.py", "StreamReader.readline"): "read",
    ("asyncio/streams.py", "StreamReader.readuntil"): "read",
    ("asyncio/streams.py", "StreamReader.readexactly"): "read",
    ("asyncio/streams.py", "StreamWriter.drain"): "write",
    ("asyncio/streams.py", "FlowControlMixin._drain_helper"): "write",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_recv"): "read",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_recv_into"): "read",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_accept"): "accept",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_sendall"): "write",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_connect"): "connect",
    ("asyncio/base_events.py", "Server.serve_forever"): "serve",
    ("asyncio/base_events.py", "BaseEventLoop.sock_connect"): "connect",
}
# Labels whose frame awaits a future it created itself (never a task the caller passed in):
# for these the awaited future's type adds nothing, and reading it is skipped — a quarter of
# the reads of a pass over thousands of parked sleeps or lock waits.
_PLAIN_FUTURE_LABELS = frozenset(
    {
        "sleep",
        "event",
        "lock",
        "condition",
        "semaphore",
        "barrier",
        "queue",
        "read",
        "write",
        "accept",
        "connect",
        "serve",
    }
)


# Frames that wait for *several* tasks, and where those tasks are: the first local of the frame
# (``fs`` of ``asyncio.wait``, ``self`` of ``TaskGroup.__aexit__``, the wrapped task of 3.8-3.11
# ``wait_for``).  A ``gather`` is found from the awaited ``_GatheringFuture`` instead.
_CHILDREN_BY_FRAME: dict[tuple[str, str], str] = {
    ("asyncio/tasks.py", "_wait"): "wait",
    ("asyncio/tasks.py", "wait_for"): "wait_for",
    ("asyncio/taskgroups.py", "TaskGroup.__aexit__"): "taskgroup",
}
_MAX_PROVIDERS = 256
"""Child-task lookups per pass (each costs a few reads: an instance dict, a list or set)."""
_MAX_CHILDREN = 4096


class TasksUnavailable(Exception):
    """The task view cannot be had for this process; ``reason`` says why, ``remedy`` what to do.

    ``status`` is the probe vocabulary: ``"denied"`` (permissions), ``"gone"`` (the process
    exited) or ``"unavailable"``.  ``retry`` is True when waiting may help (asyncio not
    imported yet, interpreter starting up), so a probe can try again later.
    """

    def __init__(
        self, reason: str, remedy: str, status: str = "unavailable", retry: bool = False
    ) -> None:
        super().__init__(reason, remedy, status)
        self.reason = reason
        self.remedy = remedy
        self.status = status
        self.retry = retry

    def __str__(self) -> str:
        return f"{self.reason} ({self.remedy})" if self.remedy else self.reason


class _Torn(Exception):
    """An object did not read back as what we expected (freed, reused, mid-update)."""


# ---------------------------------------------------------------------------- line tables
def line_from_lnotab(table: bytes, firstlineno: int, addr: int) -> int:
    """3.8-3.9 ``co_lnotab``: (byte-offset increment, signed line increment) pairs; ``addr``
    is a byte offset into ``co_code``."""
    line = firstlineno
    at = 0
    for i in range(0, len(table) - 1, 2):
        at += table[i]
        if at > addr:
            break
        delta = table[i + 1]
        line += delta - 256 if delta >= 128 else delta
    return line


def line_from_linetable310(table: bytes, firstlineno: int, addr: int) -> int | None:
    """3.10 ``co_linetable``: (byte-length, signed line delta) pairs, -128 meaning "no line";
    ``addr`` is a byte offset (``f_lasti * 2``)."""
    line = firstlineno
    start = 0
    for i in range(0, len(table) - 1, 2):
        end = start + table[i]
        delta = table[i + 1]
        entry: int | None
        if delta == 128:  # -128 as an unsigned byte
            entry = None
        else:
            line += delta - 256 if delta > 128 else delta
            entry = line
        if start <= addr < end:
            return entry
        start = end
    return None


def _varint(table: bytes, i: int) -> tuple[int, int]:
    read = table[i]
    i += 1
    value = read & 63
    shift = 0
    while read & 64:
        read = table[i]
        i += 1
        shift += 6
        value |= (read & 63) << shift
    return value, i


def _svarint(table: bytes, i: int) -> tuple[int, int]:
    value, i = _varint(table, i)
    return (-(value >> 1) if value & 1 else value >> 1), i


def line_from_locations(table: bytes, firstlineno: int, index: int) -> int | None:
    """3.11+ location table (PEP 657, ``Objects/locations.md``); ``index`` counts code units.

    Each entry starts with a byte ``1CCCCLLL``: code C and length L+1 code units.  Code 15 has
    no location, 14 is the long form (signed line delta, end line, columns as varints), 13 has
    a line delta but no columns, 10-12 are one-line forms with delta C-10, 0-9 short forms on
    the same line.
    """
    line = firstlineno
    at = 0
    i = 0
    n = len(table)
    try:
        while i < n:
            first = table[i]
            i += 1
            if not first & 0x80:
                return None  # not an entry start: corrupt or torn
            code = (first >> 3) & 15
            length = (first & 7) + 1
            entry: int | None
            if code == 15:
                entry = None
            elif code == 14:
                delta, i = _svarint(table, i)
                line += delta
                entry = line
                for _ in range(3):
                    _, i = _varint(table, i)
            elif code == 13:
                delta, i = _svarint(table, i)
                line += delta
                entry = line
            elif code >= 10:
                line += code - 10
                entry = line
                i += 2
            else:
                entry = line
                i += 1
            if at <= index < at + length:
                return entry
            at += length
    except IndexError:
        return None
    return None


def _lookup_by_frame(table: dict[tuple[str, str], str], file: str, qualname: str) -> str | None:
    file = file.replace("\\", "/")
    for (suffix, name), label in table.items():
        if qualname == name and file.endswith(suffix):
            return label
    return None


def awaiting_from_frame(file: str, qualname: str) -> str | None:
    """What an await chain waits on, judged by its innermost frame (None if not a known one)."""
    return _lookup_by_frame(_AWAIT_BY_FRAME, file, qualname)


# ---------------------------------------------------------------------------- batched reads
class _IOVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


def _load_readv() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(libc, "process_vm_readv", None)
    if fn is None:  # pragma: no cover - ancient libc
        return None
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = (
        ctypes.c_int,
        ctypes.POINTER(_IOVec),
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_ulong,
    )
    return fn


_readv = _load_readv()


class _Gather:
    """Scattered reads of many small regions, up to 1024 per ``process_vm_readv``.

    Why not :class:`~lifescope.probes.memory.PreparedRead`: that builds its iovec array field
    by field, which for thousands of 64-byte regions costs more than the system call; here
    the remote iovecs are packed with one ``struct.pack``.  A region that faults (the object
    was freed and its page unmapped — rare, pools stay mapped) fails alone: the kernel stops
    at the first bad remote iovec and reports how many bytes it copied, so the regions before
    it are kept and the walk resumes after it.
    """

    __slots__ = ("pid", "regions_read", "syscalls")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.syscalls = 0
        self.regions_read = 0

    def _fail(self, err: int, address: int, size: int) -> None:
        if err == errno.ESRCH:
            raise TasksUnavailable(f"process {self.pid} exited", "", "gone")
        if err == errno.EPERM:
            raise TasksUnavailable(
                f"not allowed to read memory of process {self.pid}",
                "run as the target's user or root; with Yama ptrace_scope>=1 grant "
                "CAP_SYS_PTRACE (docker: --cap-add SYS_PTRACE)",
                "denied",
            )

    def read(self, regions: Sequence[tuple[int, int]], min_size: int = 0) -> list[bytes | None]:
        """Each region's bytes, or None where it could not be read.

        A region that faults is retried alone at ``min_size`` bytes when that is smaller (the
        caller over-reads unknown objects and can live with less).
        """
        count = len(regions)
        out: list[bytes | None] = [None] * count
        retry: list[int] = []
        start = 0
        while start < count:
            end = min(count, start + _IOV_MAX)
            chunk = regions[start:end]
            bad = next(
                (k for k, (a, n) in enumerate(chunk) if not (0 < a < _MAX_ADDRESS and n > 0)),
                -1,
            )
            if bad == 0:  # a NULL or non-canonical pointer: unreadable by definition
                start += 1
                continue
            if bad > 0:
                chunk = chunk[:bad]
                end = start + bad
            sizes = [n for _, n in chunk]
            total = sum(sizes)
            if total > _MAX_GATHER:
                raise _Torn(f"refusing to read {total} bytes at once")
            buf = ctypes.create_string_buffer(total)
            local = _IOVec(ctypes.addressof(buf), total)
            remote = struct.pack(f"<{2 * len(chunk)}Q", *itertools.chain.from_iterable(chunk))
            if _readv is None:  # pragma: no cover
                raise TasksUnavailable("process_vm_readv is not available", "use Linux ≥ 3.2")
            got = _readv(self.pid, ctypes.byref(local), 1, remote, len(chunk), 0)
            self.syscalls += 1
            if got < 0:
                self._fail(ctypes.get_errno(), *chunk[0])
                got = 0
            data = buf.raw
            if got == total:
                offsets = itertools.accumulate(sizes, initial=0)
                out[start:end] = [data[o : o + n] for o, n in zip(offsets, sizes, strict=False)]
                self.regions_read += len(chunk)
                start = end
                continue
            # The kernel stopped at a faulting region: keep the complete ones before it, and
            # resume right after it.
            offset = done = 0
            for n in sizes:
                if offset + n > got:
                    break
                out[start + done] = data[offset : offset + n]
                offset += n
                done += 1
            self.regions_read += done
            retry.append(start + done)
            start += done + 1
        for i in retry:
            addr, size = regions[i]
            for attempt in (size, min_size):
                if attempt <= 0 or (attempt == min_size and min_size >= size):
                    continue
                buf = ctypes.create_string_buffer(attempt)
                local = _IOVec(ctypes.addressof(buf), attempt)
                remote = struct.pack("<QQ", addr, attempt)
                got = _readv(self.pid, ctypes.byref(local), 1, remote, 1, 0)  # type: ignore[misc]
                self.syscalls += 1
                if got == attempt:
                    out[i] = buf.raw
                    self.regions_read += 1
                    break
                if got < 0:
                    self._fail(ctypes.get_errno(), addr, attempt)
        return out

    def one(self, address: int, size: int) -> bytes:
        """One region; raise :class:`_Torn` if it cannot be read."""
        data = self.read([(address, size)])[0]
        if data is None:
            raise _Torn(f"unreadable {size} bytes at {address:#x}")
        return data


# ---------------------------------------------------------------------------- layout
def _packed(fields: dict[str, tuple[int, str]]) -> tuple[struct.Struct, dict[str, int]]:
    """One Struct that unpacks several fields at known offsets, and each field's index.

    Why: the hot loops decode tens of thousands of objects a pass; one ``unpack_from`` of
    the fields in offset order is several times cheaper than one call per field.
    """
    ordered = sorted(fields.items(), key=lambda item: item[1][0])
    fmt = "<"
    at = 0
    index: dict[str, int] = {}
    for i, (name, (offset, code)) in enumerate(ordered):
        if offset < at:
            raise KeyError(f"field {name} at {offset} overlaps the previous one")
        if offset > at:
            fmt += f"{offset - at}x"
        fmt += code
        at = offset + struct.calcsize("<" + code)
        index[name] = i
    return struct.Struct(fmt), index


@dataclass(frozen=True, slots=True)
class _TypeInfo:
    address: int
    name: str
    basicsize: int
    flags: int
    dictoffset: int
    base: int


@dataclass(frozen=True, slots=True)
class _Code:
    qualname: str
    filename: str
    firstlineno: int
    linetable: bytes
    code: bytes
    """co_code (3.8-3.10) or co_code_adaptive (3.11/3.12): only the yield-from check reads it."""


@dataclass(slots=True)
class _Link:
    """One suspended generator/coroutine frame of a chain, decoded lazily (codes are batched)."""

    code: int
    pos: int
    """3.8-3.10: f_lasti; 3.11+: instruction pointer (absolute address)."""
    qualname_ptr: int
    yield_from: bool | None
    """True/False when known from the frame state; None: decide from the code's bytes."""
    state: str  # "suspended", "running", "created", "done"
    locals: int = 0
    """Address of the frame's first local (``localsplus[0]``), for the child-task lookups."""


@dataclass(slots=True)
class _Walk:
    """Per-task state while its chain is being read."""

    address: int
    name_ptr: int
    state: str
    loop: int
    coro: int
    links: list[_Link]
    waiter: int = 0
    """``task_fut_waiter`` when the task was read: the future its coroutine chain must end on."""
    end_kind: int = _K_NONE
    end_addr: int = 0
    end_type: str = ""
    end_name_ptr: int = 0
    broken: bool = False
    from_iter: bool = False
    """The chain ended on a ``FutureIter``'s future (comparable with ``waiter``)."""


class _Layout:
    """The numbers a pass needs, pulled out of the table once (attribute access is cheap)."""

    def __init__(self, t: AsyncioOffsets) -> None:
        self.minor = t.minor
        s = t.section
        typ = s("type")
        self.tp_name = typ["tp_name"]
        self.tp_basicsize = typ["tp_basicsize"]
        self.tp_flags = typ["tp_flags"]
        self.tp_dictoffset = typ["tp_dictoffset"]
        self.tp_base = typ["tp_base"]
        self.ht_cached_keys = typ.get("ht_cached_keys")
        self.flag_managed_dict = typ.get("flag_managed_dict", 0)
        self.flag_inline_values = typ.get("flag_inline_values", 0)
        self.type_read = max(self.tp_name, self.tp_basicsize, self.tp_flags, self.tp_base)
        self.type_read = max(self.type_read, self.tp_dictoffset) + 8
        d = s("dict")
        self.ma_used, self.ma_keys, self.ma_values = d["ma_used"], d["ma_keys"], d["ma_values"]
        self.dict_read = max(self.ma_used, self.ma_keys, self.ma_values) + 8
        self.dk = s("dictkeys")
        self.managed = s("managed") if t.has("managed") else {}
        st = s("set")
        self.set_fill, self.set_used, self.set_mask = st["fill"], st["used"], st["mask"]
        self.set_table, self.set_small = st["table"], st["smalltable"]
        self.set_entry, self.set_key, self.set_hash = (
            st["entry_size"],
            st["entry_key"],
            st["entry_hash"],
        )
        self.set_read = max(self.set_fill, self.set_used, self.set_mask, self.set_table) + 8
        self.wr_object = s("weakref")["wr_object"]
        u = s("unicode")
        self.u_length, self.u_state = u["length"], u["state"]
        self.u_ascii, self.u_compact, self.u_data = u["ascii_size"], u["compact_size"], u["data"]
        bits = s("unicode_bits")
        self.u_kind_shift, self.u_compact_bit, self.u_ascii_bit = (
            bits["kind"],
            bits["compact"],
            bits["ascii"],
        )
        self.ob_size = s("object")["ob_size"]
        self.bytes_sval = s("bytes")["ob_sval"]
        self.list_items = s("list")["ob_item"]
        self.cell_ref = s("cell")["ob_ref"]
        lg = s("long")
        self.long_digits, self.long_tag = lg["digits"], lg.get("tag")
        self.long_shift, self.long_digit = lg["shift"], lg["digit_size"]
        self.md_dict = s("module")["md_dict"]
        g = s("gen")
        self.gi_name, self.gi_qualname = g["gi_name"], g["gi_qualname"]
        # Version-specific fields are 0 where the version has no such field (never read then).
        self.gi_frame: int = g.get("gi_frame", 0)
        self.gi_code: int = g.get("gi_code", 0)
        self.gi_frame_state: int = g.get("gi_frame_state", 0)
        self.gi_iframe: int = g.get("gi_iframe", 0)
        a = s("asyncio")
        self.fut_loop, self.fut_state = a["fut_loop"], a["fut_state"]
        self.task_coro, self.task_name = a["task_coro"], a["task_name"]
        self.task_fut_waiter = a["task_fut_waiter"]
        self.state_names = {
            a["state_pending"]: "pending",
            a["state_cancelled"]: "cancelled",
            a["state_finished"]: "done",
        }
        self.futiter_future = a["futureiter_future"]
        self.wrapper_coroutine = a["wrapper_coroutine"]
        self.asend_gen = a["asend_gen"]
        self.types = s("types")
        c = s("code")
        self.co_firstlineno, self.co_filename, self.co_name = (
            c["co_firstlineno"],
            c["co_filename"],
            c["co_name"],
        )
        self.co_qualname: int = c.get("co_qualname", 0)
        self.co_linetable = c["co_linetable"]
        self.co_code: int = c.get("co_code", 0)
        self.co_code_adaptive: int = c.get("co_code_adaptive", 0)
        self.code_read = (
            self.co_code_adaptive
            if self.co_code_adaptive
            else max(v for k, v in c.items() if k != "co_code_adaptive") + 8
        )
        self.linetable_format = t.linetable_format
        self.frame_object = t.frame_model == "frame_object"
        ops = s("opcodes")
        self.yield_from_op = ops.get("yield_from")
        self.resume_ops = frozenset(ops.get("resume", ()))
        fs = s("frame_state") if t.has("frame_state") else {}
        self.fs_created = fs.get("created")
        self.fs_suspended = fs.get("suspended")
        self.fs_suspended_yf = fs.get("suspended_yield_from")
        self.fs_executing = fs.get("executing")
        if self.frame_object:
            f = s("frame")
            self.f_code, self.f_lasti = f["f_code"], f["f_lasti"]
            self.f_valuestack = f["f_valuestack"]
            # 3.8/3.9 have f_stacktop + f_executing, 3.10 f_stackdepth + f_state (-1: absent).
            self.f_stacktop: int = f.get("f_stacktop", -1)
            self.f_executing: int = f.get("f_executing", -1)
            self.f_stackdepth: int = f.get("f_stackdepth", -1)
            self.f_state: int = f.get("f_state", -1)
            self.f_localsplus = f["f_localsplus"]
            self.frame_read = _OBJ_READ
            self.lasti_unit = 1 if self.minor < 10 else 2
        else:
            i = s("iframe")
            self.if_code = self.gi_iframe + i["code"]
            self.if_instr = self.gi_iframe + i["instr"]
            self.if_stacktop = self.gi_iframe + i["stacktop"]
            self.if_localsplus = self.gi_iframe + i["localsplus"]
        head = {"rc": (0, "q"), "tp": (8, "Q")}
        self.weakref_s, self.weakref_ix = _packed({**head, "obj": (self.wr_object, "Q")})
        self.task_s, self.task_ix = _packed(
            {
                **head,
                "loop": (self.fut_loop, "Q"),
                "state": (self.fut_state, "i"),
                "coro": (self.task_coro, "Q"),
                "name": (self.task_name, "Q"),
                "waiter": (self.task_fut_waiter, "Q"),
            }
        )
        if self.frame_object:
            self.gen_s, self.gen_ix = _packed(
                {
                    **head,
                    "frame": (self.gi_frame, "Q"),
                    "code": (self.gi_code, "Q"),
                    "qual": (self.gi_qualname, "Q"),
                }
            )
        else:
            self.gen_s, self.gen_ix = _packed(
                {
                    **head,
                    "state": (self.gi_frame_state, "b"),
                    "code": (self.if_code, "Q"),
                    "instr": (self.if_instr, "Q"),
                    "stacktop": (self.if_stacktop, "i"),
                }
            )
        ip, ts, rt = s("interp"), s("tstate"), s("runtime")
        self.interp_main = rt["interpreters_main"]
        self.interp_modules = ip["modules"]
        self.interp_sysdict = ip["sysdict"]
        self.interp_threads = ip["threads_head"]
        self.interp_id = ip["id"]
        self.ts_next, self.ts_thread_id = ts["next"], ts["thread_id"]
        self.ts_native = ts.get("native_thread_id")


# ---------------------------------------------------------------------------- the reader
class AsyncioReader:
    """Reads one process's asyncio tasks.  Create with :meth:`open`; one thread owns it."""

    def __init__(
        self, pid: int, binary: PythonBinary, table: AsyncioOffsets, layout: _Layout
    ) -> None:
        self.pid = pid
        self.binary = binary
        self.table = table
        self.python_version = binary.version_string or table.python
        self._l = layout
        self._mem = RemoteMemory(pid)
        self._g = _Gather(pid)
        self._types: dict[int, _TypeInfo] = {}
        self._known: dict[str, int] = {}  # role → type address
        self._kinds: dict[int, int] = {}  # type address → chain kind
        self._codes: dict[tuple[int, ...], _Code] = {}
        self._names: dict[tuple[int, int, int], str] = {}
        self._lines: dict[tuple[tuple[int, ...], int], int | None] = {}
        self.interp = 0
        self.sets: tuple[int, ...] = ()
        """The task sets read each pass: the WeakSet's ``data`` set, then 3.12+'s eager set."""
        self.weak: tuple[bool, ...] = ()
        self.current_tasks = 0
        self.loops: dict[int, int] = {}
        """Loop object address → tasks seen on it in the last pass."""
        self.task_loops: dict[int, int] = {}
        """Task address → its loop's address, last pass (TaskInfo has no loop field)."""
        self.unsupported = 0
        """Objects in the task sets that are not ``_asyncio.Task`` (or a subclass) — e.g.
        pure-Python ``asyncio.tasks._PyTask`` — skipped in the last pass, not counted as
        errors."""
        self.running: dict[int, int] = {}
        """Loop address → address of its running task (``_current_tasks``), last pass."""
        self.last_syscalls = 0
        self._failures = 0

    # ------------------------------------------------------------------ attach
    @classmethod
    def open(cls, pid: int) -> AsyncioReader:
        """Attach (read-only) to ``pid``, find the task sets and validate every type reached.

        Raises :class:`TasksUnavailable` with a reason and remedy when anything does not
        check out.
        """
        binary = open_python_binary(
            pid, TasksUnavailable, "attach to a CPython 3.8-3.13 process running asyncio"
        )
        major, minor = binary.version
        if re.search(r"python\d\.\d+t\b", os.path.basename(binary.path)):
            raise TasksUnavailable(
                f"free-threaded CPython {major}.{minor}t: its object headers differ from the "
                "GIL build the task tables describe",
                "tasks are still visible as the running coroutine in stack samples",
            )
        table = load_asyncio_offsets(major, minor)
        if table is None:
            raise TasksUnavailable(
                f"CPython {major}.{minor} is not supported by the task reader "
                f"(tables exist for {', '.join(available_versions())})",
                "run tools/gen_asyncio_offsets.py against that interpreter; the running task "
                "is still visible in stack samples",
            )
        if binary.machine != "EM_X86_64" or table.machine != "x86_64":
            raise TasksUnavailable(
                f"{binary.machine} target; task tables were generated for {table.machine}",
                "regenerate them on this architecture with tools/gen_asyncio_offsets.py",
            )
        try:
            layout = _Layout(table)
        except KeyError as exc:
            raise TasksUnavailable(
                f"task table for {table.python} lacks {exc}", "regenerate the tables"
            ) from exc
        reader = cls(pid, binary, table, layout)
        last: TasksUnavailable | None = None
        for _ in range(5):  # ride out a module dict being resized under us
            try:
                reader._attach()
                return reader
            except _Torn as exc:
                last = TasksUnavailable(
                    f"objects changed while attaching ({exc})", "retry", retry=True
                )
            except ReadPermissionError as exc:
                raise TasksUnavailable(
                    f"not allowed to read memory of process {pid}",
                    "run as the target's user or root; with Yama ptrace_scope>=1 grant "
                    "CAP_SYS_PTRACE (docker: --cap-add SYS_PTRACE)",
                    "denied",
                ) from exc
            except ProcessGoneError as exc:
                raise TasksUnavailable(f"process {pid} exited", "check the pid", "gone") from exc
            except MemoryReadError as exc:
                last = TasksUnavailable(
                    f"reading the interpreter failed: {exc}", "retry", retry=True
                )
            time.sleep(0.01)
        assert last is not None
        raise last

    def _unavailable(self, detail: str) -> TasksUnavailable:
        return TasksUnavailable(
            f"task view unavailable for this build: {detail}",
            f"regenerate the tables with tools/gen_asyncio_offsets.py against CPython "
            f"{self.python_version}; the running task is still visible in stack samples",
        )

    def _attach(self) -> None:
        lay = self._l
        runtime = self.binary.runtime_address
        interp = self._mem.read_pointer(runtime + lay.interp_main)
        if not interp:
            raise TasksUnavailable(
                "the interpreter is not initialised (or already finalised)",
                "attach once the server is running",
                retry=True,
            )
        if self._mem.read_i64(interp + lay.interp_id) != 0:
            raise self._unavailable("interpreters.main does not have id 0")
        self.interp = interp
        modules = self._mem.read_pointer(interp + lay.interp_modules)
        if not modules:
            raise TasksUnavailable("sys.modules is not set up yet", "retry", retry=True)
        dict_type = self._expect_type(modules, "dict")
        mods = self._dict_str_items(modules, wanted=None)
        if "sys" not in mods or "builtins" not in mods:
            raise self._unavailable("interp->modules has no 'sys'/'builtins': not sys.modules")
        if "asyncio.tasks" not in mods:
            raise TasksUnavailable(
                "asyncio is not imported in the target (no tasks to show)",
                "nothing to do: the task view starts when the target imports asyncio",
                retry=True,
            )
        module_type = self._expect_type(mods["asyncio.tasks"], "module")

        def module_dict(name: str) -> dict[str, int]:
            mod = mods.get(name)
            if mod is None:
                return {}
            if self._type_of(mod) != module_type:
                raise self._unavailable(f"sys.modules[{name!r}] is not a module")
            md = self._mem.read_pointer(mod + lay.md_dict)
            if self._type_of(md) != dict_type:
                raise self._unavailable(f"{name}.__dict__ does not read back as a dict")
            return self._dict_str_items(md, wanted=None)

        tasks_ns = module_dict("asyncio.tasks")
        accel = module_dict("_asyncio")
        types_ns = module_dict("types")
        builtins_ns = module_dict("builtins")
        weakref_ns = module_dict("_weakref")
        if not accel or "Task" not in accel:
            raise TasksUnavailable(
                "the target's asyncio runs without its C accelerator (_asyncio): pure-Python "
                "tasks are not supported by the memory reader",
                "tasks are still visible as the running coroutine in stack samples",
            )
        for role, ns, key in (
            ("dict", builtins_ns, "dict"),
            ("set", builtins_ns, "set"),
            ("str", builtins_ns, "str"),
            ("bytes", builtins_ns, "bytes"),
            ("int", builtins_ns, "int"),
            ("coroutine", types_ns, "CoroutineType"),
            ("generator", types_ns, "GeneratorType"),
            ("async_generator", types_ns, "AsyncGeneratorType"),
            ("code", types_ns, "CodeType"),
            ("module", types_ns, "ModuleType"),
            ("Task", accel, "Task"),
            ("Future", accel, "Future"),
            ("weakref", weakref_ns, "ref"),
            ("list", builtins_ns, "list"),
            ("cell", types_ns, "CellType"),
        ) + ((("frame", types_ns, "FrameType"),) if lay.frame_object else ()):
            address = ns.get(key)
            if address is None:
                raise self._unavailable(f"cannot find {key} to validate the {role} type")
            self._validate_type(role, address)
        if self._known["dict"] != dict_type or self._known["module"] != module_type:
            raise self._unavailable("sys.modules' type is not builtins.dict")
        # The task sets.  Normally asyncio.tasks re-exports _asyncio's objects; if its import
        # of them failed, C tasks still register in _asyncio's set and pure-Python ones in
        # asyncio.tasks' own, so every distinct set is read.
        names = ("_all_tasks",) if lay.minor < 12 else ("_scheduled_tasks", "_eager_tasks")
        sets: list[int] = []
        weak: list[bool] = []
        for name in names:
            found = [ns[name] for ns in (accel, tasks_ns) if name in ns]
            if not found:
                raise self._unavailable(f"asyncio has no {name}")
            for obj in dict.fromkeys(found):
                tp = self._type_of(obj)
                if tp == self._known["set"]:
                    sets.append(obj)
                    weak.append(False)
                    continue
                info = self._type(tp)
                if info.name != "WeakSet":
                    raise self._unavailable(f"asyncio's {name} is a {info.name}, not a WeakSet")
                self._validate_basicsize("WeakSet", info)
                data = self._instance_attr(obj, info, "data")
                if data is None or self._type_of(data) != self._known["set"]:
                    raise self._unavailable(f"{name}.data does not read back as a set")
                sets.append(data)
                weak.append(True)
        self.sets = tuple(sets)
        self.weak = tuple(weak)
        current = tasks_ns.get("_current_tasks")
        if current is not None and self._type_of(current) == dict_type:
            self.current_tasks = current
        self._kinds = {
            self._known["coroutine"]: _K_GEN,
            self._known["generator"]: _K_GEN,
            self._known["async_generator"]: _K_GEN,
            self._known["Task"]: _K_TASK,
            self._known["Future"]: _K_FUTURE,
        }
        # A first pass validates the Task/coroutine layout on whatever tasks exist now.
        tasks, _, errors = self.read(max_tasks=64)
        if errors and not tasks:
            raise self._unavailable(
                f"{errors} task set entries did not decode as {self._known_name('Task')} objects"
            )

    def _known_name(self, role: str) -> str:
        address = self._known.get(role)
        return self._types[address].name if address in self._types else role

    def _type_of(self, obj: int) -> int:
        if not 0 < obj < _MAX_ADDRESS:
            raise _Torn(f"bad object pointer {obj:#x}")
        rc, tp = _HDR.unpack(self._g.one(obj, 16))
        if not 0 < rc < _MAX_REFCNT:
            raise _Torn(f"object at {obj:#x} has refcount {rc}")
        return int(tp)

    def _expect_type(self, obj: int, name: str) -> int:
        tp = self._type_of(obj)
        info = self._type(tp)
        if info.name != name:
            raise self._unavailable(f"expected a {name} at {obj:#x}, found {info.name!r}")
        return tp

    def _validate_type(self, role: str, address: int) -> None:
        info = self._type(address)
        expected = self._l.types[role]
        if info.name != expected["tp_name"]:
            raise self._unavailable(
                f"{role} type is named {info.name!r}, not {expected['tp_name']!r}"
            )
        self._validate_basicsize(role, info)
        self._known[role] = address

    def _validate_basicsize(self, role: str, info: _TypeInfo) -> None:
        expected = self._l.types[role]["basicsize"]
        if info.basicsize != expected:
            raise self._unavailable(
                f"{info.name} instances are {info.basicsize} bytes, the table (from "
                f"{self.table.generated_from}) says {expected}"
            )

    def _type(self, address: int) -> _TypeInfo:
        """Type object at ``address`` (cached; type objects live as long as their class)."""
        hit = self._types.get(address)
        if hit is not None:
            return hit
        lay = self._l
        raw = self._g.one(address, lay.type_read)
        name_ptr = _U64.unpack_from(raw, lay.tp_name)[0]
        try:
            name = self._mem.read_cstring(name_ptr, 128).decode("utf-8", "replace")
        except MemoryReadError as exc:
            raise _Torn(f"type name unreadable at {name_ptr:#x}") from exc
        info = _TypeInfo(
            address=address,
            name=name,
            basicsize=_I64.unpack_from(raw, lay.tp_basicsize)[0],
            flags=_U64.unpack_from(raw, lay.tp_flags)[0],
            dictoffset=_I64.unpack_from(raw, lay.tp_dictoffset)[0],
            base=_U64.unpack_from(raw, lay.tp_base)[0],
        )
        if len(self._types) >= _MAX_TYPE_CACHE:  # classes created at runtime: keep the known
            keep = {a: self._types[a] for a in self._known.values() if a in self._types}
            self._types = keep
        self._types[address] = info
        return info

    def _kind(self, tp: int) -> int:
        """Classify an object's type for the chain walk; subclasses of Task/Future count."""
        kind = self._kinds.get(tp)
        if kind is not None:
            return kind
        info = self._type(tp)
        kind = _K_OTHER
        if info.name == "_asyncio.FutureIter" or info.name == "FutureIter":
            kind = _K_FUTITER
        elif info.name == "coroutine_wrapper":
            kind = _K_WRAPPER
        elif info.name == "async_generator_asend":
            kind = _K_ASEND
        elif info.name == "NoneType":
            kind = _K_NONE
        else:
            base, hops = info.base, 0
            while base and hops < _MAX_TYPE_BASES:
                if base == self._known.get("Task"):
                    kind = _K_TASK
                    break
                if base == self._known.get("Future"):
                    kind = _K_FUTURE
                    break
                base = self._type(base).base
                hops += 1
        if len(self._kinds) < _MAX_TYPE_CACHE:
            self._kinds[tp] = kind
        return kind

    # ------------------------------------------------------------------ dicts & attributes
    def _dict_entries(self, d: int) -> list[tuple[int, int]]:
        """(key, value) pointers of a dict, in insertion order (bounded)."""
        lay = self._l
        raw = self._g.one(d, lay.dict_read)
        keys = _U64.unpack_from(raw, lay.ma_keys)[0]
        values = _U64.unpack_from(raw, lay.ma_values)[0]
        return self._keys_entries(keys, values)

    def _keys_entries(self, keys: int, values: int) -> list[tuple[int, int]]:
        lay = self._l
        dk = lay.dk
        head = self._g.one(keys, dk["indices"])
        if lay.minor < 11:
            size = _I64.unpack_from(head, dk["size"])[0]
            if size < 8 or size & (size - 1) or size > _MAX_DICT_ENTRIES * 2:
                raise _Torn(f"dict keys size {size}")
            ix = 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8
            start = keys + dk["indices"] + size * ix
            esize, ekey, evalue = dk["entry_size"], dk["entry_key"], dk["entry_value"]
        else:
            log2_index = head[dk["log2_index_bytes"]]
            kind = head[dk["kind"]]
            if log2_index > 24:
                raise _Torn(f"dict index bytes 2**{log2_index}")
            start = keys + dk["indices"] + (1 << log2_index)
            if kind == dk["kind_general"]:
                esize, ekey, evalue = dk["entry_size"], dk["entry_key"], dk["entry_value"]
            else:
                esize, ekey, evalue = dk["uentry_size"], dk["uentry_key"], dk["uentry_value"]
        n = _I64.unpack_from(head, dk["nentries"])[0]
        if not 0 <= n <= _MAX_DICT_ENTRIES:
            raise _Torn(f"dict with {n} entries")
        if n == 0:
            return []
        table = self._g.one(start, n * esize)
        vals: bytes | None = None
        if values:
            base = values + lay.managed.get("values_array", 0)
            vals = self._g.one(base, n * 8)
        out: list[tuple[int, int]] = []
        for i in range(n):
            key = _U64.unpack_from(table, i * esize + ekey)[0]
            if vals is not None:
                value = _U64.unpack_from(vals, i * 8)[0]
            else:
                value = _U64.unpack_from(table, i * esize + evalue)[0]
            if key and value:
                out.append((key, value))
        return out

    def _dict_str_items(self, d: int, wanted: set[str] | None) -> dict[str, int]:
        """str-keyed items of a dict (all, or only ``wanted`` names)."""
        entries = self._dict_entries(d)
        names = self._read_strs([k for k, _ in entries])
        out: dict[str, int] = {}
        for (_, value), name in zip(entries, names, strict=True):
            if name is not None and (wanted is None or name in wanted):
                out[name] = value
        return out

    def _instance_attr(self, obj: int, info: _TypeInfo, name: str) -> int | None:
        """An attribute from an instance's ``__dict__``, however this version stores it.

        3.8-3.10: a dict at ``tp_dictoffset``.  3.11: a materialised dict in the pre-header, or
        a values array indexed like the class's shared keys.  3.12: one pre-header word that is
        either the dict or (tagged with bit 0) the values.  3.13: values inline after the
        object while ``valid``, else the materialised dict.
        """
        lay = self._l
        wanted = {name}
        if lay.minor < 11 or not info.flags & lay.flag_managed_dict:
            if info.dictoffset <= 0:
                return None
            d = self._mem.read_pointer(obj + info.dictoffset)
            return self._dict_str_items(d, wanted).get(name) if d else None
        m = lay.managed
        word = self._mem.read_pointer(obj + m["dict"])
        values = 0
        if lay.minor == 11:
            if word:
                return self._dict_str_items(word, wanted).get(name)
            values = self._mem.read_pointer(obj + m["values_pointer"])
        elif m.get("tagged"):
            if word and not word & 1:
                return self._dict_str_items(word, wanted).get(name)
            values = word + 1 if word else 0
        else:
            if info.flags & lay.flag_inline_values:
                inline = obj + info.basicsize
                valid = self._g.one(inline + m["valid"], 1)[0]
                if valid:
                    values = inline
            if not values:
                return self._dict_str_items(word, wanted).get(name) if word else None
        if not values or lay.ht_cached_keys is None:
            return None
        keys = self._mem.read_pointer(info.address + lay.ht_cached_keys)
        if not keys:
            return None
        entries = self._keys_entries(keys, values)
        names = self._read_strs([k for k, _ in entries])
        for (_, value), key_name in zip(entries, names, strict=True):
            if key_name == name:
                return value
        return None

    # ------------------------------------------------------------------ strings & ints
    def _decode_str(self, address: int, raw: bytes) -> str | None:
        lay = self._l
        rc, tp = _HDR.unpack_from(raw, 0)
        if tp != self._known.get("str", tp) or not 0 < rc < _MAX_REFCNT:
            return None
        length = _I64.unpack_from(raw, lay.u_length)[0]
        state = _U32.unpack_from(raw, lay.u_state)[0]
        kind = (state >> lay.u_kind_shift) & 7
        if kind not in (1, 2, 4) or not 0 <= length <= _MAX_STR * 64:
            return None
        length = min(length, _MAX_STR)
        if (state >> lay.u_compact_bit) & 1:
            offset = lay.u_ascii if (state >> lay.u_ascii_bit) & 1 else lay.u_compact
            start = address + offset
            data = raw[offset : offset + length * kind]
            if len(data) < length * kind:
                try:
                    data = self._g.one(start, length * kind)
                except _Torn:
                    return None
        else:
            pointer = _U64.unpack_from(self._g.one(address + lay.u_data, 8), 0)[0]
            try:
                data = self._g.one(pointer, length * kind)
            except _Torn:
                return None
        codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            return None

    def _read_strs(self, addresses: Sequence[int]) -> list[str | None]:
        size = self._l.u_compact + 96
        raws = self._g.read([(a, size) for a in addresses], min_size=self._l.u_compact)
        return [
            None if raw is None else self._decode_str(a, raw)
            for a, raw in zip(addresses, raws, strict=True)
        ]

    def _decode_int(self, raw: bytes) -> int | None:
        lay = self._l
        if lay.long_tag is not None:
            tag = _U64.unpack_from(raw, lay.long_tag)[0]
            ndigits = tag >> 3
            negative = (tag & 3) == 2
        else:
            size = _I64.unpack_from(raw, lay.ob_size)[0]
            ndigits = abs(size)
            negative = size < 0
        if ndigits > 4 or lay.long_digits + ndigits * lay.long_digit > len(raw):
            return None
        value = 0
        for i in range(ndigits):
            digit = _U32.unpack_from(raw, lay.long_digits + i * lay.long_digit)[0]
            value |= digit << (lay.long_shift * i)
        return -value if negative else value

    # ------------------------------------------------------------------ a pass
    def read(self, max_tasks: int = 5000) -> tuple[list[TaskInfo], int, int]:
        """One pass over the live tasks: ``(tasks, total, errors)``.

        ``tasks`` holds at most ``max_tasks`` tasks; ``total`` is how many the sets held
        (cheap: the sets' ``used`` counts), so the UI can say when the view was truncated.
        ``errors`` counts objects that changed under us and were skipped.  Raises only
        :class:`TasksUnavailable` (process gone, permission lost, task sets gone).
        """
        syscalls = self._g.syscalls
        errors = 0
        try:
            entries, total, errors = self._set_entries(max_tasks)
        except _Torn as exc:
            self._failures += 1
            if self._failures >= 20:
                raise TasksUnavailable(
                    f"the asyncio task set keeps failing to read ({exc})",
                    "the interpreter may be shutting down; re-attach",
                ) from exc
            return [], 0, 1
        self._failures = 0
        # Tasks go through all levels in batches: a task's chain is read within milliseconds
        # of the task itself, so a busy loop has little time to move it on under us.
        walks: list[_Walk] = []
        for first in range(0, len(entries), _BATCH):
            batch, werr = self._read_tasks(entries[first : first + _BATCH])
            errors += werr
            self._walk(batch)
            walks.extend(batch)
        running = self._read_running()
        infos, ierr = self._build(walks, running)
        errors += ierr
        loops: dict[int, int] = {}
        for w in walks:
            loops[w.loop] = loops.get(w.loop, 0) + 1
        self.loops = loops
        self.task_loops = {w.address: w.loop for w in walks}
        self.last_syscalls = self._g.syscalls - syscalls
        return infos, total, errors

    def _set_entries(self, max_tasks: int) -> tuple[list[tuple[int, bool]], int, int]:
        """Up to ``max_tasks`` entries of the task sets: (pointer, is_weakref)."""
        lay = self._l
        out: list[tuple[int, bool]] = []
        seen: set[int] = set()
        total = 0
        errors = 0
        for s, weak in zip(self.sets, self.weak, strict=True):
            raw = self._g.one(s, lay.set_read)
            rc, tp = _HDR.unpack_from(raw, 0)
            if tp != self._known["set"] or not 0 < rc < _MAX_REFCNT:
                raise _Torn("task set no longer reads back as a set")
            used = _I64.unpack_from(raw, lay.set_used)[0]
            fill = _I64.unpack_from(raw, lay.set_fill)[0]
            mask = _I64.unpack_from(raw, lay.set_mask)[0]
            table = _U64.unpack_from(raw, lay.set_table)[0]
            slots = mask + 1
            if (
                slots < 8
                or slots & mask
                or slots > _MAX_SET_SLOTS
                or not 0 <= used <= fill <= slots
                or not table
            ):
                errors += 1
                continue
            total += used
            step = max(1, _TABLE_CHUNK // lay.set_entry)
            for first in range(0, slots, step):
                if len(out) >= max_tasks:
                    break
                count = min(step, slots - first)
                try:
                    chunk = self._g.one(table + first * lay.set_entry, count * lay.set_entry)
                except _Torn:
                    errors += 1
                    break
                words = memoryview(chunk).cast("q")
                stride = lay.set_entry // 8
                keys = words[lay.set_key // 8 :: stride]
                hashes = words[lay.set_hash // 8 :: stride]
                # Empty slots have a NULL key, dummies (deleted) a hash of -1.
                for key in [k for k, h in zip(keys, hashes, strict=True) if k and h != -1]:
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append((key, weak))
                    if len(out) >= max_tasks:
                        break
        return out, total, errors

    def _read_tasks(self, entries: list[tuple[int, bool]]) -> tuple[list[_Walk], int]:
        """Weak references → Task objects → per-task walk state (type-checked, bounded)."""
        lay = self._l
        errors = 0
        refs = [p for p, weak in entries if weak]
        tasks = [p for p, weak in entries if not weak]
        ws, wix = lay.weakref_s, lay.weakref_ix
        w_rc, w_tp, w_obj = wix["rc"], wix["tp"], wix["obj"]
        weakref_type = self._known["weakref"]
        for raw in self._g.read([(p, ws.size) for p in refs]):
            if raw is None:
                errors += 1
                continue
            v = ws.unpack_from(raw)
            if v[w_tp] != weakref_type or not 0 < v[w_rc] < _MAX_REFCNT:
                errors += 1
                continue
            if v[w_obj]:
                tasks.append(v[w_obj])
        tasks = list(dict.fromkeys(tasks))  # an eager task may sit in both sets for a moment
        ts, tix = lay.task_s, lay.task_ix
        t_rc, t_tp, t_loop, t_state = tix["rc"], tix["tp"], tix["loop"], tix["state"]
        t_coro, t_name, t_waiter = tix["coro"], tix["name"], tix["waiter"]
        states = lay.state_names
        kinds = self._kinds
        unsupported = 0
        raws = self._g.read([(t, _OBJ_READ) for t in tasks], min_size=ts.size)
        walks: list[_Walk] = []
        for address, raw in zip(tasks, raws, strict=True):
            if raw is None or len(raw) < ts.size:
                errors += 1
                continue
            v = ts.unpack_from(raw)
            if not 0 < v[t_rc] < _MAX_REFCNT:
                errors += 1
                continue
            kind = kinds.get(v[t_tp])
            if kind is None:
                kind = self._kind_safe(v[t_tp])
            if kind == _K_NONE:
                continue  # a dead weak reference: the task was collected
            if kind != _K_TASK:
                if kind == -1:
                    errors += 1  # the type itself did not read back: torn
                else:
                    unsupported += 1
                continue
            state = states.get(v[t_state])
            if state is None:
                errors += 1
                continue
            walks.append(_Walk(address, v[t_name], state, v[t_loop], v[t_coro], [], v[t_waiter]))
        self.unsupported = unsupported
        return walks, errors

    def _kind_safe(self, tp: int) -> int:
        try:
            return self._kind(tp)
        except (_Torn, MemoryReadError, struct.error):
            return -1

    # ------------------------------------------------------------------ the chain walk
    def _walk(self, walks: list[_Walk]) -> None:
        """Follow every pending task's await chain, one level per batched read.

        A failed read marks the walk ``broken``; whether that counts as an error is decided in
        :meth:`_build`, once we know the read was not a speculative one past a bare yield.
        """
        size_of = {
            "obj": _OBJ_READ,
            "ptr": 8,
            "frame": self._l.frame_read if self._l.frame_object else 0,
        }
        # (walk, address, stage): stage "obj" = an object of unknown type, "ptr" = a pointer
        # to one, "frame" = a 3.8-3.10 PyFrameObject of the last link.
        frontier: list[tuple[_Walk, int, str]] = [
            (w, w.coro, "obj") for w in walks if w.state == "pending" and w.coro
        ]
        step = self._step
        rounds = 0
        while frontier and rounds < _MAX_DEPTH * 4:
            rounds += 1
            raws = self._g.read([(a, size_of[st]) for _, a, st in frontier], min_size=_OBJ_MIN)
            nxt: list[tuple[_Walk, int, str]] = []
            for (walk, address, stage), raw in zip(frontier, raws, strict=True):
                if raw is None:
                    walk.broken = True
                    continue
                try:
                    following = step(walk, address, stage, raw)
                except (_Torn, struct.error, IndexError, MemoryReadError):
                    walk.broken = True
                    continue
                if following is not None and len(walk.links) < _MAX_DEPTH:
                    nxt.append((walk, following[0], following[1]))
            frontier = nxt

    def _step(self, walk: _Walk, address: int, stage: str, raw: bytes) -> tuple[int, str] | None:
        """Decode one object of a chain; return what to read next, or None at the end."""
        lay = self._l
        if stage == "ptr":
            pointer = _U64.unpack_from(raw, 0)[0]
            return (pointer, "obj") if pointer else None
        if stage == "frame":
            return self._frame_object(walk, address, raw)
        rc, tp = _HDR.unpack_from(raw, 0)
        if not 0 < rc < _MAX_REFCNT:
            raise _Torn("refcount")
        kind = self._kinds.get(tp)
        if kind is None:
            kind = self._kind(tp)
        if kind == _K_GEN:
            v = lay.gen_s.unpack_from(raw)
            ix = lay.gen_ix
            if lay.frame_object:
                frame, qual = v[ix["frame"]], v[ix["qual"]]
                if not frame:  # finished generator: only its code is left
                    walk.links.append(_Link(v[ix["code"]], -1, qual, False, "done"))
                    return None
                walk.links.append(_Link(0, -1, qual, None, "suspended"))
                return frame, "frame"
            return self._interpreter_frame(
                walk, address, raw, v[ix["state"]], v[ix["code"]], v[ix["instr"]], v[ix["stacktop"]]
            )
        if kind == _K_FUTITER:
            future = _U64.unpack_from(raw, lay.futiter_future)[0]
            if not future:
                walk.end_kind, walk.end_type = _K_FUTURE, "future"
                return None
            # Always a future (or task): read it later, and only if the innermost frame does
            # not already say what it is (see _PLAIN_FUTURE_LABELS).
            walk.end_kind, walk.end_addr, walk.from_iter = _K_DEFERRED, future, True
            return None
        if kind == _K_WRAPPER:
            return _U64.unpack_from(raw, lay.wrapper_coroutine)[0], "obj"
        if kind == _K_ASEND:
            return _U64.unpack_from(raw, lay.asend_gen)[0], "obj"
        self._end(walk, address, kind, tp, raw)
        return None

    def _end(self, walk: _Walk, address: int, kind: int, tp: int, raw: bytes) -> None:
        """Record the object a chain ends on (a future, a task, something else)."""
        walk.end_kind = kind
        walk.end_addr = address
        walk.end_type = self._types[tp].name if tp in self._types else "?"
        if kind == _K_TASK:
            walk.end_name_ptr = _U64.unpack_from(raw, self._l.task_name)[0]

    def _read_deferred_ends(self, walks: list[_Walk]) -> None:
        """Read the futures that ``FutureIter`` chains end on, for the walks that need them."""
        raws = self._g.read([(w.end_addr, _OBJ_READ) for w in walks], min_size=_OBJ_MIN)
        for w, raw in zip(walks, raws, strict=True):
            w.end_kind = _K_NONE
            if raw is None:
                w.broken = True
                continue
            try:
                rc, tp = _HDR.unpack_from(raw, 0)
                if not 0 < rc < _MAX_REFCNT:
                    raise _Torn("refcount")
                kind = self._kinds.get(tp)
                if kind is None:
                    kind = self._kind(tp)
                self._end(w, w.end_addr, kind, tp, raw)
            except (_Torn, struct.error, MemoryReadError):
                w.broken = True

    def _interpreter_frame(
        self,
        walk: _Walk,
        address: int,
        raw: bytes,
        state: int,
        code: int,
        instr: int,
        stacktop: int,
    ) -> tuple[int, str] | None:
        """3.11+: the frame is embedded in the generator object we just read."""
        lay = self._l
        if state == lay.fs_created:
            walk.links.append(_Link(code, -1, 0, False, "created"))
            return None
        if state == lay.fs_executing:
            walk.links.append(_Link(code, instr, 0, False, "running"))
            return None
        if state not in (lay.fs_suspended, lay.fs_suspended_yf):
            walk.links.append(_Link(code, -1, 0, False, "done"))
            return None
        # 3.13 says whether the frame is inside a yield-from; 3.11/3.12 leave it to the RESUME
        # after the yield, checked once the code object is read (None = undecided).
        yield_from = None if lay.fs_suspended_yf is None else state == lay.fs_suspended_yf
        walk.links.append(
            _Link(code, instr, 0, yield_from, "suspended", address + lay.if_localsplus)
        )
        if yield_from is False:
            return None
        if not 1 <= stacktop <= _MAX_STACK:
            if yield_from is None:
                return None  # an empty value stack: a bare yield, nothing awaited
            raise _Torn(f"stacktop {stacktop}")
        offset = lay.if_localsplus + 8 * (stacktop - 1)
        if offset + 8 <= len(raw):
            pointer = _U64.unpack_from(raw, offset)[0]
            return (pointer, "obj") if pointer else None
        return address + offset, "ptr"

    def _frame_object(self, walk: _Walk, address: int, raw: bytes) -> tuple[int, str] | None:
        """3.8-3.10: a generator's heap ``PyFrameObject``."""
        lay = self._l
        rc, tp = _HDR.unpack_from(raw, 0)
        if tp != self._known["frame"] or not 0 < rc < _MAX_REFCNT:
            raise _Torn("frame type")
        link = walk.links[-1]
        link.code = _U64.unpack_from(raw, lay.f_code)[0]
        link.locals = address + lay.f_localsplus
        lasti = _I32.unpack_from(raw, lay.f_lasti)[0]
        link.pos = lasti
        if lay.f_state >= 0:  # 3.10
            state = _I8.unpack_from(raw, lay.f_state)[0]
            if state == lay.fs_created:
                link.state, link.yield_from = "created", False
                return None
            if state == lay.fs_executing:
                link.state, link.yield_from = "running", False
                return None
            if state != lay.fs_suspended:
                link.state, link.yield_from = "done", False
                return None
            depth = _I32.unpack_from(raw, lay.f_stackdepth)[0]
            if not 1 <= depth <= _MAX_STACK:
                link.yield_from = False
                return None
            top = _U64.unpack_from(raw, lay.f_valuestack)[0] + 8 * (depth - 1)
        else:  # 3.8 / 3.9
            stacktop = _U64.unpack_from(raw, lay.f_stacktop)[0]
            if lasti < 0:
                link.state, link.yield_from = "created", False
                return None
            if not stacktop or raw[lay.f_executing]:
                link.state, link.yield_from = "running", False
                return None
            top = stacktop - 8
        offset = top - address
        if offset >= 0 and offset + 8 <= len(raw):
            pointer = _U64.unpack_from(raw, offset)[0]
            return (pointer, "obj") if pointer else None
        return top, "ptr"

    # ------------------------------------------------------------------ current tasks
    def _read_running(self) -> dict[int, int]:
        """``_current_tasks``: loop → its running task (both addresses); empty if unreadable."""
        self.running = {}
        if not self.current_tasks:
            return {}
        try:
            items = self._dict_entries(self.current_tasks)
        except (_Torn, MemoryReadError, struct.error):
            return {}
        self.running = dict(items[:256])
        return self.running

    # ------------------------------------------------------------------ building results
    def _code(self, address: int, raw: bytes) -> tuple[tuple[int, ...], _Code] | None:
        """Decode a code object, through a cache keyed by its immutable fields.

        Why a key of pointers: a code object's name, file, first line and line table never
        change, so if all those pointers are the same the decoded result is too; a freed code
        object whose address is reused gets a different key.
        """
        lay = self._l
        rc, tp = _HDR.unpack_from(raw, 0)
        if tp != self._known["code"] or not 0 < rc < _MAX_REFCNT:
            return None
        name = _U64.unpack_from(raw, lay.co_name)[0]
        qual = _U64.unpack_from(raw, lay.co_qualname)[0] if lay.co_qualname else 0
        filename = _U64.unpack_from(raw, lay.co_filename)[0]
        firstlineno = _I32.unpack_from(raw, lay.co_firstlineno)[0]
        linetable = _U64.unpack_from(raw, lay.co_linetable)[0]
        co_code = _U64.unpack_from(raw, lay.co_code)[0] if lay.co_code else 0
        n_units = _I64.unpack_from(raw, lay.ob_size)[0] if lay.co_code_adaptive else 0
        key = (address, name, qual, filename, firstlineno, linetable, co_code, n_units)
        hit = self._codes.get(key)
        if hit is not None:
            return key, hit
        names = self._read_strs([qual or name, filename])
        if names[0] is None or names[1] is None:
            return None
        table = self._read_bytes(linetable)
        if table is None:
            return None
        code_bytes = b""
        if co_code:
            code_bytes = self._read_bytes(co_code) or b""
        elif lay.co_code_adaptive and self._l.resume_ops and lay.fs_suspended_yf is None:
            if not 0 < n_units <= _MAX_BYTES // 2:
                return None
            try:
                code_bytes = self._g.one(address + lay.co_code_adaptive, n_units * 2)
            except _Torn:
                return None
        code = _Code(names[0], names[1], firstlineno, table, code_bytes)
        if len(self._codes) >= _MAX_CODE_CACHE:
            self._codes.clear()
            self._lines.clear()
        self._codes[key] = code
        return key, code

    def _read_bytes(self, address: int) -> bytes | None:
        lay = self._l
        try:
            head = self._g.one(address, lay.bytes_sval + 256)
        except _Torn:
            try:
                head = self._g.one(address, lay.bytes_sval)
            except _Torn:
                return None
        rc, tp = _HDR.unpack_from(head, 0)
        if tp != self._known["bytes"] or not 0 < rc < _MAX_REFCNT:
            return None
        size = _I64.unpack_from(head, lay.ob_size)[0]
        if not 0 <= size <= _MAX_BYTES:
            return None
        if lay.bytes_sval + size <= len(head):
            return head[lay.bytes_sval : lay.bytes_sval + size]
        try:
            return self._g.one(address + lay.bytes_sval, size)
        except _Torn:
            return None

    def _line(self, code_key: tuple[int, ...], code: _Code, code_address: int, pos: int) -> int:
        """Source line of a frame at ``pos`` (f_lasti, or an instruction pointer on 3.11+)."""
        lay = self._l
        if pos < 0:
            return code.firstlineno
        if lay.frame_object:
            addr = pos * lay.lasti_unit
        else:
            index = (pos - code_address - lay.co_code_adaptive) // 2
            if not 0 <= index < (1 << 24):
                return code.firstlineno
            addr = index
        cache_key = (code_key, addr)
        if cache_key in self._lines:
            line = self._lines[cache_key]
        else:
            if lay.linetable_format == "lnotab":
                line = line_from_lnotab(code.linetable, code.firstlineno, addr)
            elif lay.linetable_format == "linetable310":
                line = line_from_linetable310(code.linetable, code.firstlineno, addr)
            else:
                line = line_from_locations(code.linetable, code.firstlineno, addr)
            self._lines[cache_key] = line
        return line if line is not None else code.firstlineno

    def _yield_from_ok(self, code: _Code, code_address: int, link: _Link) -> bool:
        """3.8-3.12: is the frame suspended inside a yield-from (``await``)?"""
        lay = self._l
        if lay.frame_object:
            at = link.pos * lay.lasti_unit + 2
            return 0 <= at < len(code.code) and code.code[at] == lay.yield_from_op
        index = (link.pos - code_address - lay.co_code_adaptive) // 2 + 1
        at = index * 2
        if not 0 <= at < len(code.code) - 1:
            return False
        return code.code[at] in lay.resume_ops and code.code[at + 1] >= 2

    def _build(self, walks: list[_Walk], running: dict[int, int]) -> tuple[list[TaskInfo], int]:
        lay = self._l
        errors = 0
        running_tasks = set(running.values())
        # Code objects: one batched read of every distinct one, decoded through the cache.
        code_addrs = sorted({link.code for w in walks for link in w.links if link.code})
        raws = self._g.read([(a, lay.code_read) for a in code_addrs], min_size=lay.code_read)
        codes: dict[int, tuple[tuple[int, ...], _Code]] = {}
        for address, raw in zip(code_addrs, raws, strict=True):
            if raw is None:
                errors += 1
                continue
            try:
                found = self._code(address, raw)
            except (_Torn, struct.error, MemoryReadError):
                found = None
            if found is None:
                errors += 1
            else:
                codes[address] = found
        quals = sorted({link.qualname_ptr for w in walks for link in w.links if link.qualname_ptr})
        qual_names = dict(zip(quals, self._read_strs(quals), strict=True))
        # Thousands of tasks parked at the same await share one chain: decode it once.
        memo: dict[
            tuple[object, ...], tuple[tuple[TaskAwait, ...], str | None, int, int, str | None]
        ] = {}
        decoded = []
        deferred: list[_Walk] = []
        for w in walks:
            signature = tuple((k.code, k.pos, k.qualname_ptr, k.yield_from) for k in w.links)
            hit = memo.get(signature)
            if hit is None:
                hit = self._chain(w.links, codes, qual_names)
                memo[signature] = hit
            decoded.append(hit)
            if w.end_kind == _K_DEFERRED:
                if hit[2] == len(w.links) and hit[1] not in _PLAIN_FUTURE_LABELS:
                    deferred.append(w)
                else:
                    w.end_kind, w.end_type = _K_FUTURE, "Future"
        if deferred:
            self._read_deferred_ends(deferred)
        # Names: task names (cached per task and name object), and those of awaited tasks.
        name_ptrs: dict[int, tuple[int, int, int]] = {}
        for w in walks:
            name_ptrs[w.name_ptr] = (w.address, w.name_ptr, w.coro)
            if w.end_kind == _K_TASK and w.end_name_ptr:
                name_ptrs.setdefault(w.end_name_ptr, (w.end_addr, w.end_name_ptr, 0))
        missing = [p for p, key in name_ptrs.items() if key not in self._names]
        if missing:
            self._resolve_names(missing, name_ptrs)
        by_address: dict[int, int] = {}
        infos: list[TaskInfo] = []
        awaited: list[tuple[int, int]] = []  # (inner task, outer task)
        providers: list[tuple[int, str, int]] = []  # (outer task, lookup kind, address)
        for w, hit in zip(walks, decoded, strict=True):
            name = self._names.get(name_ptrs[w.name_ptr], "?")
            chain, by_frame, confirmed, innermost_index, provider = hit
            end_valid = bool(w.links) and confirmed == len(w.links)
            if end_valid and w.from_iter and w.end_addr != w.waiter:
                # A suspended task's chain ends on the very future the task waits on
                # (task_fut_waiter).  If not, the task moved on while we walked its chain and
                # freed objects were reused under us: keep only the task's own frame.
                errors += 1
                chain, by_frame, end_valid, provider = chain[:1], None, False, None
            if w.broken:
                # Count a failed read only where the chain was proven to lead (not past a bare
                # yield, where we read ahead speculatively); a failed frame read leaves its
                # link without a code object.
                pending_frame = 1 if w.links and not w.links[-1].code else 0
                if confirmed >= len(w.links) - pending_frame:
                    # Objects were freed under us: what was read past the task's own frame
                    # may mix two moments of the task (reused memory), so it is not shown.
                    errors += 1
                    chain, by_frame, end_valid, provider = chain[:1], None, False, None
            state = "running" if w.address in running_tasks and w.state == "pending" else w.state
            awaiting = by_frame if state == "pending" else None
            end_kind = w.end_kind if end_valid else _K_NONE
            if awaiting is None and state == "pending":
                if end_kind == _K_TASK:
                    inner_name = self._names.get(name_ptrs.get(w.end_name_ptr, (0, 0, 0)), "?")
                    awaiting = f"task:{inner_name}"
                elif end_kind == _K_FUTURE:
                    awaiting = "gather" if w.end_type == "_GatheringFuture" else "future"
                elif end_kind == _K_OTHER and w.end_type:
                    awaiting = w.end_type
            if end_kind == _K_TASK and w.end_addr:
                awaited.append((w.end_addr, w.address))
            elif state == "pending":
                if end_kind == _K_FUTURE and w.end_type == "_GatheringFuture":
                    providers.append((w.address, "gather", w.end_addr))
                elif provider is not None and w.links[innermost_index].locals:
                    providers.append((w.address, provider, w.links[innermost_index].locals))
            by_address[w.address] = len(infos)
            infos.append(TaskInfo(w.address, name, state, chain, awaiting))
        linked = {inner for inner, _ in awaited}
        for child, outer in self._children(providers):
            if child not in linked and child != outer:
                awaited.append((child, outer))
                linked.add(child)
        for inner, outer in awaited:
            index = by_address.get(inner)
            if index is not None:
                t = infos[index]
                infos[index] = TaskInfo(t.address, t.name, t.state, t.chain, t.awaiting, outer)
        if len(self._names) > _MAX_NAME_CACHE:
            live = set(name_ptrs.values())
            self._names = {k: v for k, v in self._names.items() if k in live}
        return infos, errors

    def _chain(
        self,
        links: list[_Link],
        codes: dict[int, tuple[tuple[int, ...], _Code]],
        qual_names: dict[int, str | None],
    ) -> tuple[tuple[TaskAwait, ...], str | None, int, int, str | None]:
        """A task's frames (outermost first), what its innermost frame says it awaits, how
        many leading links are proven to be inside an ``await``, the innermost link's index,
        and which child-task lookup that frame allows (see ``_CHILDREN_BY_FRAME``).

        The object read past the last frame counts only if every link is proven: links past a
        bare ``yield`` were read speculatively and are dropped here.
        """
        lay = self._l
        chain: list[TaskAwait] = []
        innermost: tuple[str, str] | None = None
        innermost_index = -1
        confirmed = 0
        for index, link in enumerate(links):
            entry = codes.get(link.code)
            if entry is None:
                qual = qual_names.get(link.qualname_ptr) if link.qualname_ptr else None
                if qual:
                    chain.append(TaskAwait(qual, "", 0))
                break
            key, code = entry
            qualname = code.qualname
            if lay.frame_object and link.qualname_ptr:
                qualname = qual_names.get(link.qualname_ptr) or qualname
            chain.append(
                TaskAwait(qualname, code.filename, self._line(key, code, link.code, link.pos))
            )
            innermost = (code.filename, qualname)
            innermost_index = index
            yield_from = link.yield_from
            if yield_from is None:
                yield_from = self._yield_from_ok(code, link.code, link)
            if not yield_from:
                break
            confirmed += 1
        by_frame = provider = None
        if innermost is not None:
            by_frame = awaiting_from_frame(*innermost)
            provider = _lookup_by_frame(_CHILDREN_BY_FRAME, *innermost)
        return tuple(chain), by_frame, confirmed, innermost_index, provider

    def _children(self, providers: list[tuple[int, str, int]]) -> list[tuple[int, int]]:
        """(child, parent) pairs for tasks waiting on several tasks at once (gather, wait,
        TaskGroup, 3.8-3.11 wait_for): bounded, and silent when anything does not validate."""
        out: list[tuple[int, int]] = []
        for outer, kind, address in providers[:_MAX_PROVIDERS]:
            try:
                members = self._provider_members(kind, address)
            except (_Torn, MemoryReadError, struct.error, IndexError):
                continue
            out.extend((member, outer) for member in members[:_MAX_CHILDREN])
        return out

    def _provider_members(self, kind: str, address: int) -> list[int]:
        if kind == "gather":
            info = self._type(self._type_of(address))
            items = self._instance_attr(address, info, "_children")
            return self._list_items(items) if items else []
        local = self._mem.read_pointer(address)
        if local and self._type_of(local) == self._known["cell"]:
            local = self._mem.read_pointer(local + self._l.cell_ref)
        if not local:
            return []
        if kind == "wait_for":
            return [local]
        if kind == "wait":
            return self._set_members(local)
        info = self._type(self._type_of(local))
        if info.name != "TaskGroup":
            return []
        tasks = self._instance_attr(local, info, "_tasks")
        return self._set_members(tasks) if tasks else []

    def _list_items(self, address: int) -> list[int]:
        lay = self._l
        if self._type_of(address) != self._known["list"]:
            return []
        raw = self._g.one(address, lay.list_items + 8)
        size = _I64.unpack_from(raw, lay.ob_size)[0]
        items = _U64.unpack_from(raw, lay.list_items)[0]
        if not 0 < size <= _MAX_CHILDREN or not items:
            return []
        data = self._g.one(items, size * 8)
        return [p for p in struct.unpack(f"<{size}Q", data) if p]

    def _set_members(self, address: int) -> list[int]:
        lay = self._l
        if self._type_of(address) != self._known["set"]:
            return []
        raw = self._g.one(address, lay.set_read)
        mask = _I64.unpack_from(raw, lay.set_mask)[0]
        table = _U64.unpack_from(raw, lay.set_table)[0]
        slots = mask + 1
        if slots < 8 or slots & mask or slots > 4 * _MAX_CHILDREN or not table:
            return []
        data = self._g.one(table, slots * lay.set_entry)
        out = []
        for i in range(slots):
            key = _U64.unpack_from(data, i * lay.set_entry + lay.set_key)[0]
            if key and _I64.unpack_from(data, i * lay.set_entry + lay.set_hash)[0] != -1:
                out.append(key)
        return out

    def _resolve_names(self, pointers: list[int], keys: dict[int, tuple[int, int, int]]) -> None:
        """Task names: a str, or (3.13 lazy names) an int n meaning "Task-n"."""
        raws = self._g.read(
            [(p, self._l.u_compact + 96) for p in pointers], min_size=self._l.u_compact
        )
        str_type = self._known["str"]
        int_type = self._known["int"]
        for pointer, raw in zip(pointers, raws, strict=True):
            if raw is None:
                continue
            tp = _HDR.unpack_from(raw, 0)[1]
            name: str | None = None
            if tp == str_type:
                name = self._decode_str(pointer, raw)
            elif tp == int_type:
                number = self._decode_int(raw)
                name = None if number is None else f"Task-{number}"
            if name is not None:
                self._names[keys[pointer]] = name

    # ------------------------------------------------------------------ loop threads
    def loop_thread_ident(self, loop: int) -> int | None:
        """The ``threading.get_ident()`` of the thread running ``loop`` (its ``_thread_id``),
        or None when the loop is not a Python event loop running now."""
        with contextlib.suppress(_Torn, MemoryReadError, struct.error, TasksUnavailable):
            info = self._type(self._type_of(loop))
            value = self._instance_attr(loop, info, "_thread_id")
            if value is None:
                return None
            raw = self._g.one(value, 64)
            if _HDR.unpack_from(raw, 0)[1] != self._known["int"]:
                return None
            return self._decode_int(raw)
        return None

    def thread_states(self) -> dict[int, tuple[int, int | None]]:
        """Main-interpreter thread states: address → (thread ident, native TID or None).

        The native TID is stored from 3.11; on 3.8-3.10 use the GIL reader's pthread mapping.
        """
        lay = self._l
        out: dict[int, tuple[int, int | None]] = {}
        with contextlib.suppress(MemoryReadError, _Torn):
            ts = self._mem.read_pointer(self.interp + lay.interp_threads)
            while ts and ts not in out and len(out) < 4096:
                span = max(lay.ts_next, lay.ts_thread_id, lay.ts_native or 0) + 8
                raw = self._g.one(ts, span)
                ident = _U64.unpack_from(raw, lay.ts_thread_id)[0]
                native = (
                    _U64.unpack_from(raw, lay.ts_native)[0] if lay.ts_native is not None else None
                )
                out[ts] = (ident, native)
                ts = _U64.unpack_from(raw, lay.ts_next)[0]
        return out

    def close(self) -> None:
        """Nothing is held open in the target; provided for symmetry with other readers."""

    def __enter__(self) -> AsyncioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AsyncioReader(pid={self.pid}, python={self.python_version})"
