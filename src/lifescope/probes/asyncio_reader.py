"""Read every asyncio task of a running CPython 3.8-3.15 from outside, with ``process_vm_readv``.

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

3.14 moved native tasks out of the WeakSet: each thread state keeps a circular list of the
tasks it created (linked through the Task's ``task_node``), the interpreter one for tasks of
threads that exited, and each thread state its running loop and task.  ``_asyncio`` publishes
those offsets in an ELF section of its own (``.AsyncioDebug``); the reader checks them against
the table generated from the headers and follows the lists (``_scheduled_tasks`` and
``_eager_tasks`` now hold only other task types).  3.14 also tags references on a frame's value
stack (low bits masked off), keeps flags in the top 16 bits of the reference-count word, and
3.15 suspends an ``await`` with a NULL above the awaited object: all in the table.

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

Where the code is (issue 14 split it from one 1,950-line file): this module attaches and finds
the task sets; :mod:`~lifescope.probes.asyncio_walk` is the pass, built on the generic object
decoding of :mod:`~lifescope.probes.asyncio_objects`; :mod:`~lifescope.probes.asyncio_layout`
holds the per-version layouts and bounds, :mod:`~lifescope.probes.asyncio_frames` the line
tables and what frames mean.  Memory is read through :mod:`~lifescope.probes.memory` only.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import time

from lifescope.probes.asyncio_frames import (
    awaiting_from_frame,
    line_from_linetable310,
    line_from_lnotab,
    line_from_locations,
)
from lifescope.probes.asyncio_layout import (
    _HDR,
    _K_FUTURE,
    _K_GEN,
    _K_TASK,
    _U64,
    _Code,
    _Layout,
    _TypeInfo,
)
from lifescope.probes.asyncio_offsets import (
    AsyncioOffsets,
    available_versions,
    load_asyncio_offsets,
)
from lifescope.probes.asyncio_walk import TaskWalk
from lifescope.probes.elf import (
    PythonBinary,
    find_section,
    open_python_binary,
)
from lifescope.probes.errors import TasksUnavailable
from lifescope.probes.memory import (
    Gather,
    MemoryReadError,
    ProcessGoneError,
    ReadPermissionError,
    RemoteMemory,
)
from lifescope.probes.memory import TornRead as _Torn
from lifescope.probes.nspid import TidMap

_ASYNCIO_DEBUG = struct.Struct("<13Q")
"""``_Py_AsyncioModuleDebugOffsets`` (3.14, 3.15): the Task's size, task_name, task_awaited_by,
task_is_task, task_awaited_by_is_set, task_coro, task_node; the interpreter state's size and
asyncio_tasks_head; the thread state's size, asyncio_running_loop, asyncio_running_task and
asyncio_tasks_head."""

__all__ = [
    "AsyncioReader",
    "TasksUnavailable",
    "awaiting_from_frame",
    "line_from_linetable310",
    "line_from_lnotab",
    "line_from_locations",
]


class AsyncioReader(TaskWalk):
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
        self._g = Gather(pid, TasksUnavailable)
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
        self._tids = TidMap(pid)
        self.task_node = 0
        """3.14+: offset of a Task's link in its thread's task list (0: no lists)."""

    # ------------------------------------------------------------------ attach
    @classmethod
    def open(cls, pid: int) -> AsyncioReader:
        """Attach (read-only) to ``pid``, find the task sets and validate every type reached.

        Raises :class:`TasksUnavailable` with a reason and remedy when anything does not
        check out.
        """
        binary = open_python_binary(
            pid,
            TasksUnavailable,
            f"attach to a CPython {available_versions()[0]}-{available_versions()[-1]} "
            "process running asyncio",
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
                raise TasksUnavailable.denied(pid) from exc
            except ProcessGoneError as exc:
                raise TasksUnavailable.gone(pid) from exc
            except MemoryReadError as exc:
                last = TasksUnavailable(
                    f"reading the interpreter failed: {exc}", "retry", retry=True
                )
            time.sleep(0.01)
        assert last is not None
        raise last

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
        if lay.task_lists is not None:
            self._attach_task_lists()
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

    def _attach_task_lists(self) -> None:
        """3.14+: native tasks are kept in circular lists, one per thread state (the tasks
        it created) and one per interpreter (those of threads that exited), linked through
        each task's ``task_node``.  ``_asyncio`` publishes where, in a section of its own
        (``.AsyncioDebug``, in the executable or the extension module); the offsets the
        table took from the headers must agree with it, and ``task_node`` (a field of the
        C-only ``TaskObj``) is taken from it."""
        try:
            found = find_section(self.pid, ".AsyncioDebug", r"^(_asyncio\.|(lib)?python)")
        except ProcessLookupError as exc:
            raise TasksUnavailable.gone(self.pid) from exc
        except PermissionError as exc:
            raise TasksUnavailable.denied(self.pid) from exc
        if found is None or len(found[1]) < _ASYNCIO_DEBUG.size:
            raise self._unavailable("_asyncio publishes no .AsyncioDebug section")
        path, data = found
        (
            task_size,
            task_name,
            _awaited_by,
            _is_task,
            _awaited_by_is_set,
            task_coro,
            task_node,
            _interp_size,
            interp_head,
            _tstate_size,
            running_loop,
            running_task,
            tstate_head,
        ) = _ASYNCIO_DEBUG.unpack_from(data)
        lists = self._l.task_lists
        assert lists is not None
        ours = self.table.section("asyncio")
        pairs = {
            "task_name": (task_name, ours["task_name"]),
            "task_coro": (task_coro, ours["task_coro"]),
            "interpreter tasks head": (interp_head, lists["interp_tasks_head"]),
            "thread running loop": (running_loop, lists["tstate_running_loop"]),
            "thread running task": (running_task, lists["tstate_running_task"]),
            "thread tasks head": (tstate_head, lists["tstate_tasks_head"]),
        }
        differ = [f"{k} +{a} vs +{b}" for k, (a, b) in pairs.items() if a != b]
        if differ:
            raise self._unavailable(
                f"{os.path.basename(path)} publishes offsets the table (from "
                f"{self.table.generated_from}) does not have: {', '.join(differ)}"
            )
        if not 0 < task_node <= task_size - 16:
            raise self._unavailable(f"task_node +{task_node} outside a {task_size}-byte Task")
        self.task_node = task_node

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

        The native TID is stored from 3.11 (as the target sees it: mapped to ours for a target
        in another pid namespace); on 3.8-3.10 use the GIL reader's pthread mapping.
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
                out[ts] = (ident, None if native is None else self._tids.host(native))
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
