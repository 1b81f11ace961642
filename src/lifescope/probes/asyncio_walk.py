"""One pass over a process's asyncio tasks: task sets → tasks → await chains → frames → lines.

Split from the task reader (issue 14): the walk, batched level by level (see the reader's
module docstring for how and why).  :class:`TaskWalk` assumes an attached
:class:`~lifescope.probes.asyncio_reader.AsyncioReader` (it is its base class).

Why this file is ~800 lines: it is one algorithm — every level of a pass reads the objects of
all tasks of a batch with one system call, and the decoding of each kind of link, the
speculative reads past a bare ``yield`` and their cut, and the building of results depend on
each other's state; spread over files they would be harder to follow, not easier.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

from lifescope.probes.asyncio_frames import (
    _CHILDREN_BY_FRAME,
    _PLAIN_FUTURE_LABELS,
    _lookup_by_frame,
    awaiting_from_frame,
    line_from_linetable310,
    line_from_lnotab,
    line_from_locations,
)
from lifescope.probes.asyncio_layout import (
    _BATCH,
    _HDR,
    _I8,
    _I32,
    _I64,
    _K_ASEND,
    _K_DEFERRED,
    _K_FUTITER,
    _K_FUTURE,
    _K_GEN,
    _K_NONE,
    _K_OTHER,
    _K_TASK,
    _K_WRAPPER,
    _MAX_BYTES,
    _MAX_CODE_CACHE,
    _MAX_DEPTH,
    _MAX_NAME_CACHE,
    _MAX_REFCNT,
    _MAX_SET_SLOTS,
    _MAX_STACK,
    _OBJ_MIN,
    _OBJ_READ,
    _TABLE_CHUNK,
    _U64,
    _Code,
)
from lifescope.probes.asyncio_objects import ObjectReader
from lifescope.probes.errors import TasksUnavailable
from lifescope.probes.memory import MemoryReadError
from lifescope.probes.memory import TornRead as _Torn
from lifescope.samples import TaskAwait, TaskInfo

_MAX_LIST = 1 << 20
"""Nodes followed in one task list: a million tasks on one thread is not a real server, a
cycle through freed memory is."""
_MAX_THREADS = 4096
_MAX_PROVIDERS = 256
"""Child-task lookups per pass (each costs a few reads: an instance dict, a list or set)."""
_MAX_CHILDREN = 4096


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


class TaskWalk(ObjectReader):
    """The pass; attributes are set up by the reader's attach."""

    interp: int
    sets: tuple[int, ...]
    weak: tuple[bool, ...]
    current_tasks: int
    task_node: int
    _failures: int
    """Passes in a row whose task set could not be read."""
    _codes: dict[tuple[int, ...], _Code]
    _names: dict[tuple[int, int, int], str]
    _lines: dict[tuple[tuple[int, ...], int], int | None]

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
        if self.task_node:
            total, errors = self._list_entries(max_tasks, out, seen)
        for s, weak in zip(self.sets, self.weak, strict=True):
            raw = self._g.one(s, lay.set_read)
            rc, tp = _HDR.unpack_from(raw, 0)
            if tp != self._known["set"] or not 0 < rc & self._l.rc_mask < _MAX_REFCNT:
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

    def _thread_state_addresses(self) -> list[int]:
        """The main interpreter's thread states (bounded; a torn list ends early)."""
        lay = self._l
        out: list[int] = []
        with contextlib.suppress(_Torn):
            ts = _U64.unpack_from(self._g.one(self.interp + lay.interp_threads, 8))[0]
            while ts and ts not in out and len(out) < _MAX_THREADS:
                out.append(ts)
                ts = _U64.unpack_from(self._g.one(ts + lay.ts_next, 8))[0]
        return out

    def _list_entries(
        self, max_tasks: int, out: list[tuple[int, bool]], seen: set[int]
    ) -> tuple[int, int]:
        """3.14+: native tasks from the interpreter's and every thread's task list, appended
        to ``out`` (up to ``max_tasks``); returns (tasks in the lists, torn lists).

        A list is followed node by node (one small read each: a linked list cannot be
        gathered); a node that does not read back, or a list longer than any real one,
        ends that list and counts as an error.  Every task is counted, shown or not."""
        lay = self._l
        lists = lay.task_lists
        assert lists is not None
        heads = [self.interp + lists["interp_tasks_head"]]
        heads += [ts + lists["tstate_tasks_head"] for ts in self._thread_state_addresses()]
        next_off = lists["node_next"]
        total = errors = 0
        for head in heads:
            try:
                node = _U64.unpack_from(self._g.one(head + next_off, 8))[0]
                hops = 0
                while node != head:
                    if not node or node % 8 or hops >= _MAX_LIST:
                        errors += 1
                        break
                    task = node - self.task_node
                    total += 1
                    hops += 1
                    if len(out) < max_tasks and task not in seen:
                        seen.add(task)
                        out.append((task, False))
                    node = _U64.unpack_from(self._g.one(node + next_off, 8))[0]
            except _Torn:
                errors += 1
        return total, errors

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
            if v[w_tp] != weakref_type or not 0 < v[w_rc] & lay.rc_mask < _MAX_REFCNT:
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
            if not 0 < v[t_rc] & lay.rc_mask < _MAX_REFCNT:
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
            pointer = _U64.unpack_from(raw, 0)[0] & lay.untag
            return (pointer, "obj") if pointer else None
        if stage == "frame":
            return self._frame_object(walk, address, raw)
        tp, kind = self._object_kind(raw)
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

    def _object_kind(self, raw: bytes) -> tuple[int, int]:
        """(type, chain kind) of an object read at the start of ``raw``; torn if its
        reference count is not sane."""
        rc, tp = _HDR.unpack_from(raw, 0)
        if not 0 < rc & self._l.rc_mask < _MAX_REFCNT:
            raise _Torn("refcount")
        kind = self._kinds.get(tp)
        return tp, (self._kind(tp) if kind is None else kind)

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
                tp, kind = self._object_kind(raw)
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
        code &= lay.untag
        if lay.stack_pointer:  # 3.14+: a pointer past the top, not a count
            stacktop = (stacktop - address - lay.if_localsplus) // 8 if stacktop else 0
        if state == lay.fs_suspended_yf_locked and lay.fs_suspended_yf is not None:
            state = lay.fs_suspended_yf  # 3.15, which has both
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
        depth = lay.awaited_depth
        if not depth <= stacktop <= _MAX_STACK:
            if yield_from is None:
                return None  # an empty value stack: a bare yield, nothing awaited
            raise _Torn(f"stacktop {stacktop}")
        offset = lay.if_localsplus + 8 * (stacktop - depth)
        if offset + 8 <= len(raw):
            pointer = _U64.unpack_from(raw, offset)[0] & lay.untag
            return (pointer, "obj") if pointer else None
        return address + offset, "ptr"

    def _frame_object(self, walk: _Walk, address: int, raw: bytes) -> tuple[int, str] | None:
        """3.8-3.10: a generator's heap ``PyFrameObject``."""
        lay = self._l
        rc, tp = _HDR.unpack_from(raw, 0)
        if tp != self._known["frame"] or not 0 < rc & self._l.rc_mask < _MAX_REFCNT:
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
        """``_current_tasks`` (3.14+: each thread state's running loop and task): loop → its
        running task (both addresses); empty if unreadable."""
        self.running = {}
        lists = self._l.task_lists
        if lists is not None:
            loop_off, task_off = lists["tstate_running_loop"], lists["tstate_running_task"]
            span = max(loop_off, task_off) + 8 - min(loop_off, task_off)
            base = min(loop_off, task_off)
            states = self._thread_state_addresses()
            raws = self._g.read([(ts + base, span) for ts in states])
            for raw in raws:
                if raw is None:
                    continue
                loop = _U64.unpack_from(raw, loop_off - base)[0]
                task = _U64.unpack_from(raw, task_off - base)[0]
                if loop and task:
                    self.running[loop] = task
            return self.running
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
        if tp != self._known["code"] or not 0 < rc & self._l.rc_mask < _MAX_REFCNT:
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
        if tp != self._known["bytes"] or not 0 < rc & self._l.rc_mask < _MAX_REFCNT:
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
