#!/usr/bin/env python3
"""Generate the object-layout tables lifescope's asyncio task reader needs, per CPython version.

Why: the task reader (``lifescope.probes.asyncio_reader``) walks a live interpreter's objects
from outside with ``process_vm_readv`` — ``sys.modules`` (a dict) → ``asyncio.tasks`` (a module)
→ its ``WeakSet`` of tasks (an instance dict, a set, weak references) → each ``_asyncio.Task``
→ its coroutine → the coroutine's frame → the awaited object — and reads code objects and
strings on the way.  Every one of those layouts changes between minor versions, and a wrong
offset yields plausible nonsense rather than a crash, so nothing is typed in by hand.

Two sources, like ``tools/gen_offsets.py``:

* **Headers** (``offsetof``/``sizeof``, compiled against ``include/python3.X`` and its
  ``internal/`` directory with ``Py_BUILD_CORE``): interpreter state, type objects, dicts
  (3.11+), sets, weak references, strings, bytes, ints, generators/coroutines, frames (the
  3.8-3.10 ``PyFrameObject`` and the 3.11+ ``_PyInterpreterFrame``), code objects, modules
  (3.10+), frame-state enum values.
* **Measurement** (in the interpreter itself, through ``ctypes.string_at(id(obj), size)``) for
  what lives only in C sources: the ``_asyncio`` ``TaskObj``/``FutureObj``/``FutureIter``
  structs (find ``id()`` of a task's coroutine, name, loop and awaited future inside its
  memory; find the ``fut_state`` word from futures in known states), the 3.8-3.10 dict-keys
  object, ``PyModuleObject`` on 3.8/3.9, the string ``state`` bit positions, and opcode numbers.
  Each measurement must find exactly one candidate, else the script stops.

The measuring script also checks the header offsets against live objects of that interpreter
(a suspended coroutine's frame state, code pointer, resume instruction and stack top must be
what the interpreter itself reports).  With ``--verify`` (the default) the table is then
checked end-to-end: a child process of that version is started with known tasks and read
from outside with lifescope's own reader.

Usage::

    python tools/gen_asyncio_offsets.py                      # every pyenv 3.8-3.13
    python tools/gen_asyncio_offsets.py /path/to/python3.12  # specific interpreters
    python tools/gen_asyncio_offsets.py --check              # compare with the committed files
    python tools/gen_asyncio_offsets.py --no-verify          # skip the live end-to-end read
    python tools/gen_asyncio_offsets.py --root ROOT /usr/bin/python3.14   # chrooted (Debian's)

Tables describe the default (GIL) build on the architecture the script runs on (x86-64 here).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _cpython import compile_and_run, interpreter_info, python_command

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "src" / "lifescope" / "probes" / "asyncio_offsets"
SUPPORTED_MINORS = range(8, 16)  # 3.8 .. 3.15

C_SOURCE = r"""
#define Py_BUILD_CORE 1
#ifndef NDEBUG
#  define NDEBUG 1
#endif
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <frameobject.h>
#if PY_VERSION_HEX < 0x03090000
#  include "internal/pycore_pystate.h"
#else
#  include "internal/pycore_runtime.h"
#  include "internal/pycore_interp.h"
#endif
#if PY_VERSION_HEX >= 0x030A0000
#  include "internal/pycore_moduleobject.h"
#endif
#if PY_VERSION_HEX >= 0x030E0000
#  include "internal/pycore_tstate.h"
#  include "internal/pycore_llist.h"
#  include "internal/pycore_stackref.h"
#endif
#if PY_VERSION_HEX >= 0x030B0000
#  include "internal/pycore_frame.h"
#  include "internal/pycore_dict.h"
#  include "internal/pycore_object.h"
#  include "cpython/longintrepr.h"
#else
#  include "longintrepr.h"
#endif

#define F(name, expr) \
    printf("%s\"%s\": %ld", first ? "" : ", ", name, (long)(expr)); first = 0
#define O(type, member) F(#member, offsetof(type, member))
#define OPEN(name) printf("%s\"%s\": {", top ? "" : ", ", name); top = 0; first = 1
#define CLOSE() printf("}")

int main(void) {
    int top = 1, first = 1;
    printf("{");

    OPEN("runtime");
    F("interpreters_head", offsetof(_PyRuntimeState, interpreters.head));
    F("interpreters_main", offsetof(_PyRuntimeState, interpreters.main));
    CLOSE();

    OPEN("interp");
    F("next", offsetof(PyInterpreterState, next));
    F("id", offsetof(PyInterpreterState, id));
#if PY_VERSION_HEX < 0x030B0000
    F("threads_head", offsetof(PyInterpreterState, tstate_head));
#else
    F("threads_head", offsetof(PyInterpreterState, threads.head));
#endif
#if PY_VERSION_HEX < 0x030C0000
    F("modules", offsetof(PyInterpreterState, modules));
#else
    F("modules", offsetof(PyInterpreterState, imports.modules));
#endif
    F("sysdict", offsetof(PyInterpreterState, sysdict));
    CLOSE();

    OPEN("tstate");
    O(PyThreadState, next);
    O(PyThreadState, interp);
    O(PyThreadState, thread_id);
#if PY_VERSION_HEX >= 0x030B0000
    O(PyThreadState, native_thread_id);
#endif
    CLOSE();

    OPEN("object");
    O(PyObject, ob_refcnt);
    O(PyObject, ob_type);
    O(PyVarObject, ob_size);
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14: the top 16 bits of the reference-count word are flags (immortal, static). */
    O(PyObject, ob_flags);
#endif
    CLOSE();

    OPEN("type");
    O(PyTypeObject, tp_name);
    O(PyTypeObject, tp_basicsize);
    O(PyTypeObject, tp_itemsize);
    O(PyTypeObject, tp_flags);
    O(PyTypeObject, tp_dictoffset);
    O(PyTypeObject, tp_base);
    F("tp_flags_size", sizeof(((PyTypeObject *)0)->tp_flags));
#if PY_VERSION_HEX >= 0x030B0000
    O(PyHeapTypeObject, ht_cached_keys);
#endif
    F("heaptype_size", sizeof(PyHeapTypeObject));
    F("flag_heaptype", Py_TPFLAGS_HEAPTYPE);
#if PY_VERSION_HEX >= 0x030B0000
    F("flag_managed_dict", Py_TPFLAGS_MANAGED_DICT);
#endif
#if PY_VERSION_HEX >= 0x030D0000
    F("flag_inline_values", Py_TPFLAGS_INLINE_VALUES);
#endif
    CLOSE();

#if PY_VERSION_HEX >= 0x030B0000
    /* Where a managed instance dict (or its values array) hangs off an object: offsets are
       relative to the object's address (negative: the pre-header). */
    OPEN("managed");
    {
        PyObject *o = (PyObject *)(uintptr_t)0x100000;
#  if PY_VERSION_HEX < 0x030C0000
        F("dict", (char *)_PyObject_ManagedDictPointer(o) - (char *)o);
        F("values_pointer", (char *)_PyObject_ValuesPointer(o) - (char *)o);
        F("tagged", 0);
#  elif PY_VERSION_HEX < 0x030D0000
        F("dict", (char *)_PyObject_DictOrValuesPointer(o) - (char *)o);
        F("tagged", 1);
#  else
        F("dict", MANAGED_DICT_OFFSET);
        F("tagged", 0);
        O(PyDictValues, valid);
#  endif
        F("values_array", offsetof(PyDictValues, values));
    }
    CLOSE();
#endif

    OPEN("dict");
    O(PyDictObject, ma_used);
    O(PyDictObject, ma_keys);
    O(PyDictObject, ma_values);
    F("size", sizeof(PyDictObject));
    CLOSE();

#if PY_VERSION_HEX >= 0x030B0000
    OPEN("dictkeys");
    F("log2_size", offsetof(PyDictKeysObject, dk_log2_size));
    F("log2_index_bytes", offsetof(PyDictKeysObject, dk_log2_index_bytes));
    F("kind", offsetof(PyDictKeysObject, dk_kind));
    F("nentries", offsetof(PyDictKeysObject, dk_nentries));
    F("indices", offsetof(PyDictKeysObject, dk_indices));
    F("entry_size", sizeof(PyDictKeyEntry));
    F("entry_key", offsetof(PyDictKeyEntry, me_key));
    F("entry_value", offsetof(PyDictKeyEntry, me_value));
    F("uentry_size", sizeof(PyDictUnicodeEntry));
    F("uentry_key", offsetof(PyDictUnicodeEntry, me_key));
    F("uentry_value", offsetof(PyDictUnicodeEntry, me_value));
    F("kind_general", DICT_KEYS_GENERAL);
    CLOSE();
#endif

    OPEN("set");
    O(PySetObject, fill);
    O(PySetObject, used);
    O(PySetObject, mask);
    O(PySetObject, table);
    O(PySetObject, smalltable);
    F("entry_size", sizeof(setentry));
    F("entry_key", offsetof(setentry, key));
    F("entry_hash", offsetof(setentry, hash));
    F("size", sizeof(PySetObject));
    CLOSE();

    OPEN("weakref");
    O(PyWeakReference, wr_object);
    F("size", sizeof(PyWeakReference));
    CLOSE();

    OPEN("unicode");
    O(PyASCIIObject, length);
    O(PyASCIIObject, state);
    F("ascii_size", sizeof(PyASCIIObject));
    F("compact_size", sizeof(PyCompactUnicodeObject));
    O(PyUnicodeObject, data);
    CLOSE();

    OPEN("bytes");
    O(PyBytesObject, ob_sval);
    CLOSE();

    OPEN("list");
    O(PyListObject, ob_item);
    CLOSE();

    OPEN("long");
#if PY_VERSION_HEX >= 0x030C0000
    F("tag", offsetof(PyLongObject, long_value.lv_tag));
    F("digits", offsetof(PyLongObject, long_value.ob_digit));
#else
    F("digits", offsetof(PyLongObject, ob_digit));
#endif
    F("shift", PyLong_SHIFT);
    F("digit_size", sizeof(digit));
    CLOSE();

    OPEN("gen");
#if PY_VERSION_HEX < 0x030B0000
    O(PyGenObject, gi_frame);
    O(PyGenObject, gi_code);
#else
    O(PyGenObject, gi_frame_state);
    O(PyGenObject, gi_iframe);
#endif
    O(PyGenObject, gi_name);
    O(PyGenObject, gi_qualname);
    F("gen_size", sizeof(PyGenObject));
    F("coro_size", sizeof(PyCoroObject));
    CLOSE();

#if PY_VERSION_HEX < 0x030B0000
    OPEN("frame");
    O(PyFrameObject, f_back);
    O(PyFrameObject, f_code);
    O(PyFrameObject, f_valuestack);
#  if PY_VERSION_HEX < 0x030A0000
    O(PyFrameObject, f_stacktop);
    O(PyFrameObject, f_executing);
#  else
    O(PyFrameObject, f_stackdepth);
    O(PyFrameObject, f_state);
    F("f_state_size", sizeof(((PyFrameObject *)0)->f_state));
#  endif
    O(PyFrameObject, f_lasti);
    O(PyFrameObject, f_localsplus);
    F("size", sizeof(PyFrameObject));
    CLOSE();
#else
    OPEN("iframe");
#  if PY_VERSION_HEX < 0x030D0000
    F("code", offsetof(_PyInterpreterFrame, f_code));
    F("instr", offsetof(_PyInterpreterFrame, prev_instr));
#  else
    F("code", offsetof(_PyInterpreterFrame, f_executable));
    F("instr", offsetof(_PyInterpreterFrame, instr_ptr));
#  endif
#  if PY_VERSION_HEX >= 0x030E0000
    /* 3.14: a pointer past the top of the value stack, whose entries are tagged
       _PyStackRefs (as is f_executable): mask Py_TAG_BITS to get an object pointer. */
    O(_PyInterpreterFrame, stackpointer);
    F("tag_bits", Py_TAG_BITS);
#  else
    O(_PyInterpreterFrame, stacktop);
#  endif
    O(_PyInterpreterFrame, owner);
    O(_PyInterpreterFrame, localsplus);
    F("size", sizeof(_PyInterpreterFrame));
    F("owned_by_generator", FRAME_OWNED_BY_GENERATOR);
    CLOSE();
#endif

#if PY_VERSION_HEX >= 0x030A0000
    OPEN("frame_state");
    F("created", FRAME_CREATED);
    F("suspended", FRAME_SUSPENDED);
#  if PY_VERSION_HEX >= 0x030D0000
    F("suspended_yield_from", FRAME_SUSPENDED_YIELD_FROM);
#  endif
#  if PY_VERSION_HEX >= 0x030F0000
    F("suspended_yield_from_locked", FRAME_SUSPENDED_YIELD_FROM_LOCKED);
#  endif
    F("executing", FRAME_EXECUTING);
    F("cleared", FRAME_CLEARED);
    CLOSE();
#endif

    OPEN("code");
    O(PyCodeObject, co_firstlineno);
    O(PyCodeObject, co_filename);
    O(PyCodeObject, co_name);
#if PY_VERSION_HEX >= 0x030B0000
    O(PyCodeObject, co_qualname);
    O(PyCodeObject, co_code_adaptive);
#else
    O(PyCodeObject, co_code);
#endif
#if PY_VERSION_HEX >= 0x030A0000
    O(PyCodeObject, co_linetable);
#else
    F("co_linetable", offsetof(PyCodeObject, co_lnotab));
#endif
    CLOSE();

#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14 keeps native tasks in per-thread circular lists (and the interpreter's, for
       tasks of threads that exited) instead of a WeakSet; the running loop and task of a
       thread are in its thread state.  _asyncio publishes these offsets too (its
       .AsyncioDebug section): the reader checks one against the other on attach. */
    OPEN("task_lists");
    F("tstate_running_loop", offsetof(_PyThreadStateImpl, asyncio_running_loop));
    F("tstate_running_task", offsetof(_PyThreadStateImpl, asyncio_running_task));
    F("tstate_tasks_head", offsetof(_PyThreadStateImpl, asyncio_tasks_head));
    F("interp_tasks_head", offsetof(PyInterpreterState, asyncio_tasks_head));
    F("node_next", offsetof(struct llist_node, next));
    CLOSE();
#endif

#if PY_VERSION_HEX >= 0x030A0000
    OPEN("module");
    O(PyModuleObject, md_dict);
    CLOSE();
#endif

    printf(", \"py_version_hex\": %lu}\n", (unsigned long)PY_VERSION_HEX);
    return 0;
}
"""

# Runs inside the interpreter the table is for, with the header table as argv[1]: measures the
# C-only structs and cross-checks header offsets against live objects.  It must run on 3.8, so
# it is plain old Python; it prints one JSON object.
MEASURE_SOURCE = r"""
import asyncio, ctypes, dis, json, opcode, struct, sys, types, weakref
T = json.loads(sys.argv[1])
P = ctypes.sizeof(ctypes.c_void_p)
MINOR = sys.version_info[1]

def raw(obj, size=None):
    return ctypes.string_at(id(obj), size or type(obj).__basicsize__)

def u64(b, off):
    return struct.unpack_from("<Q", b, off)[0]

def i32(b, off):
    return struct.unpack_from("<i", b, off)[0]

def ptr_at(address):
    return ctypes.c_void_p.from_address(address).value or 0

def only(cands, what):
    if len(cands) != 1:
        raise SystemExit("measure: %s: expected one candidate, found %r" % (what, cands))
    return cands[0]

def find_ptr(obj, target, size=None, exclude=()):
    b = raw(obj, size)
    return [o for o in range(0, len(b) - 7, P) if u64(b, o) == id(target) and o not in exclude]

out = {"types": {}, "asyncio": {}}

# ---- type sizes: the reader compares them with the target's type objects on attach ----
import _asyncio
loop = asyncio.new_event_loop()
fut = loop.create_future()
fi = fut.__await__()

async def _c():
    return 1

def _g():
    yield 1

async def _ag():
    yield 1

co, ge, ag = _c(), _g(), _ag()
named = {
    "dict": dict, "set": set, "str": str, "bytes": bytes, "int": int, "code": types.CodeType,
    "module": types.ModuleType, "weakref": weakref.ref, "coroutine": types.CoroutineType,
    "generator": types.GeneratorType, "async_generator": types.AsyncGeneratorType,
    "Task": _asyncio.Task, "Future": _asyncio.Future, "FutureIter": type(fi),
    "WeakSet": weakref.WeakSet, "list": list, "cell": types.CellType,
}
if MINOR < 11:
    named["frame"] = types.FrameType
tp_name_off = T["type"]["tp_name"]
for key, tp in named.items():
    # tp_name exactly as the C string the target holds: "dict", "_asyncio.Task", "WeakSet"
    c_name = ctypes.string_at(ptr_at(id(tp) + tp_name_off)).decode()
    out["types"][key] = {"tp_name": c_name, "basicsize": tp.__basicsize__,
                         "itemsize": tp.__itemsize__}
co.close(); ge.close()

# ---- _asyncio Task / Future / FutureIter ----
A = out["asyncio"]
fp = loop.create_future()
fd = loop.create_future(); fd.set_result(None)
fc = loop.create_future(); fc.cancel()
rs = [raw(f) for f in (fp, fc, fd)]
cands = [o for o in range(0, len(rs[0]) - 3, 4)
         if len({i32(r, o) for r in rs}) == 3 and all(0 <= i32(r, o) < 8 for r in rs)]
A["fut_state"] = only(cands, "fut_state")
A["state_pending"], A["state_cancelled"], A["state_finished"] = (i32(r, A["fut_state"]) for r in rs)
A["fut_loop"] = only(find_ptr(fp, loop), "fut_loop")

waited = loop.create_future()
async def inner():
    await waited
coro = inner()
name = "lifescope-measure-" + str(id(loop))
task = loop.create_task(coro, name=name)
loop.run_until_complete(asyncio.sleep(0))
assert task.get_name() == name
A["task_coro"] = only(find_ptr(task, coro), "task_coro")
A["task_name"] = only(find_ptr(task, name), "task_name")
A["task_fut_waiter"] = only(find_ptr(task, waited), "task_fut_waiter")
assert only(find_ptr(task, loop), "task loop") == A["fut_loop"]
assert i32(raw(task), A["fut_state"]) == A["state_pending"]
A["futureiter_future"] = only(find_ptr(fi, fut), "futureiter_future")
cr_await = coro.cr_await
assert type(cr_await) is type(fi), type(cr_await)
assert ptr_at(id(cr_await) + A["futureiter_future"]) == id(waited)

# coroutine_wrapper (coro.__await__()) and async_generator_asend point at their generator
c2 = inner()
wrapper = c2.__await__()
A["wrapper_coroutine"] = only(find_ptr(wrapper, c2), "cw_coroutine")
c2.close()
agen = _ag()
asend = agen.__anext__()
A["asend_gen"] = only(find_ptr(asend, agen), "ags_gen")
asend.close()
waited.set_result(None)
loop.run_until_complete(task)
loop.close()

# ---- cells: a frame local captured by a closure holds one instead of the value ----
def _make_cell():
    value = object()
    return (lambda: value).__closure__[0], value
cell, cell_value = _make_cell()
out["cell"] = {"ob_ref": only(find_ptr(cell, cell_value), "cell ob_ref")}

# ---- module object (header on 3.10+, measured everywhere) ----
mod = types.ModuleType("lifescope_measure")
out["module_md_dict"] = only(find_ptr(mod, mod.__dict__), "md_dict")

# ---- strings: kind / compact / ascii bits of the state word ----
st_off = T["unicode"]["state"]
samples = {"abc": (1, 1, 1), "\u00e9t\u00e9": (1, 1, 0), "\u20ac": (2, 1, 0),
           "\U0001f600": (4, 1, 0)}
states = {s: struct.unpack_from("<I", raw(s, st_off + 4), st_off)[0] for s in samples}
def fits(shift, width, idx):
    return all((states[s] >> shift) & ((1 << width) - 1) == v[idx] for s, v in samples.items())
# The bitfield order (interned:2, kind:3, compact:1, ascii:1) is the same in 3.8-3.13 headers;
# check it on strings of every kind rather than trust it.
bits = {"kind": 2, "compact": 5, "ascii": 6}
assert fits(bits["kind"], 3, 0), states
assert fits(bits["compact"], 1, 1) and fits(bits["ascii"], 1, 2), states
out["unicode_bits"] = bits

# ---- 3.8-3.10 dict keys object (Objects/dict-common.h, not installed) ----
if MINOR < 11:
    ma_keys = T["dict"]["ma_keys"]
    probes = []
    for n in (3, 8, 20):
        keys = ["lifescope%d_%d" % (n, i) for i in range(n)]
        vals = [object() for _ in range(n)]
        d = dict(zip(keys, vals))
        kobj = ptr_at(id(d) + ma_keys)
        blob = ctypes.string_at(kobj, 4096)
        koffs = [o for o in range(0, len(blob) - 7, 8) if u64(blob, o) in {id(k) for k in keys}]
        voffs = [o for o in range(0, len(blob) - 7, 8) if u64(blob, o) in {id(v) for v in vals}]
        assert len(koffs) == n and len(voffs) == n, (n, koffs, voffs)
        probes.append((n, blob, koffs, voffs))
    stride = probes[2][2][1] - probes[2][2][0]
    key_in_entry = 8  # (hash, key, value): checked below against the value positions
    assert all(v - k == 8 for _, _, ks, vs in probes for k, v in zip(sorted(ks), sorted(vs)))
    size_cands = []
    for off in range(0, 64, 8):
        starts = set()
        ok = True
        for n, blob, ks, _ in probes:
            size = u64(blob, off)
            if size < 8 or size & (size - 1) or size > 1 << 16:
                ok = False
                break
            starts.add(min(ks) - key_in_entry - size)  # index bytes are 1 for size <= 128
        if ok and len(starts) == 1:
            size_cands.append((off, starts.pop()))
    dk_size, indices = only(size_cands, "dk_size")
    nent = only([o for o in range(0, 64, 8) if o != dk_size
                 and all(u64(b, o) == n for n, b, _, _ in probes)], "dk_nentries")
    out["dictkeys"] = {"size": dk_size, "nentries": nent, "indices": indices,
                       "entry_size": stride, "entry_key": key_in_entry, "entry_value": 16}

# ---- opcodes and frame checks against a suspended coroutine ----
gate = None
async def parked():
    await gate
lp = asyncio.new_event_loop()
gate = lp.create_future()
pc = parked()
pt = lp.create_task(pc)
lp.run_until_complete(asyncio.sleep(0))
G = T["gen"]
if MINOR < 11:
    out["opcodes"] = {"yield_from": opcode.opmap["YIELD_FROM"]}
    frame = ptr_at(id(pc) + G["gi_frame"])
    assert frame == id(pc.cr_frame)
    F_ = T["frame"]
    assert ptr_at(frame + F_["f_code"]) == id(pc.cr_code)
    lasti = ctypes.c_int.from_address(frame + F_["f_lasti"]).value
    unit = 1 if MINOR < 10 else 2
    code = pc.cr_code.co_code
    assert code[lasti * unit + 2] == out["opcodes"]["yield_from"], "not at YIELD_FROM"
    if MINOR < 10:
        top = ptr_at(ptr_at(frame + F_["f_stacktop"]) - P)
    else:
        depth = ctypes.c_int.from_address(frame + F_["f_stackdepth"]).value
        top = ptr_at(ptr_at(frame + F_["f_valuestack"]) + P * (depth - 1))
        f_state = ctypes.c_byte.from_address(frame + F_["f_state"]).value
        assert f_state == T["frame_state"]["suspended"], f_state
    assert top == id(pc.cr_await), "stack top is not cr_await"
else:
    names = ("RESUME", "RESUME_QUICK", "RESUME_CHECK", "INSTRUMENTED_RESUME")
    maps = [opcode.opmap, getattr(dis, "_all_opmap", {}), getattr(opcode, "_specialized_opmap", {})]
    resume = sorted({m[n] for m in maps for n in names if n in m})
    out["opcodes"] = {"resume": resume}
    I = T["iframe"]
    iframe = id(pc) + G["gi_iframe"]
    state = ctypes.c_int8.from_address(id(pc) + G["gi_frame_state"]).value
    fs = T["frame_state"]
    assert state == fs.get("suspended_yield_from", fs["suspended"]), state
    untag = ~I.get("tag_bits", 0)  # 3.14+: f_executable and stack entries are tagged
    assert ptr_at(iframe + I["code"]) & untag == id(pc.cr_code)
    if "stackpointer" in I:
        # 3.15 suspends a yield-from with a NULL above the awaited object: find its depth.
        sp = ptr_at(iframe + I["stackpointer"])
        depth = only([d for d in (1, 2, 3) if ptr_at(sp - P * d) & untag == id(pc.cr_await)],
                     "depth of the awaited object on the value stack")
        out["stack"] = {"awaited_depth": depth}
        top = ptr_at(sp - P * depth) & untag
    else:
        stacktop = ctypes.c_int.from_address(iframe + I["stacktop"]).value
        top = ptr_at(iframe + I["localsplus"] + P * (stacktop - 1))
    assert top == id(pc.cr_await), "stack top is not cr_await"
    instr = ptr_at(iframe + I["instr"])
    base = id(pc.cr_code) + T["code"]["co_code_adaptive"]
    nxt = instr + 2 if MINOR < 13 else instr
    op, arg = ctypes.string_at(nxt, 2)
    if MINOR < 13:
        assert op in resume and arg >= 2, (op, arg, resume)
    assert 0 <= (instr - base) // 2 < len(pc.cr_code.co_code) // 2, "instruction pointer"
gate.set_result(None)
lp.run_until_complete(pt)
lp.close()
print(json.dumps(out))
"""


def find_interpreters() -> list[Path]:
    """Every pyenv CPython 3.8-3.13 on this machine."""
    root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
    found: list[Path] = []
    for d in sorted(root.glob("3.*")) if root.is_dir() else []:
        m = re.fullmatch(r"3\.(\d+)\.\d+", d.name)
        if m and int(m.group(1)) in SUPPORTED_MINORS:
            exe = d / "bin" / f"python3.{m.group(1)}"
            if exe.exists():
                found.append(exe)
    return found


def _version_key(python: Path) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)", python.name) or re.search(r"(\d+)\.(\d+)", str(python))
    return (int(m.group(1)), int(m.group(2))) if m else (0,)


def measure(python: Path, header: dict[str, object], root: Path | None) -> dict[str, object]:
    proc = subprocess.run(
        [*python_command(python, root), "-c", MEASURE_SOURCE, json.dumps(header)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"measuring {python} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def build_table(python: Path, cc: str, root: Path | None = None) -> tuple[str, dict[str, object]]:
    info = interpreter_info(python, root)
    if info["gil_disabled"]:
        raise SystemExit(f"{python}: free-threaded build; these tables describe GIL builds")
    header = compile_and_run(C_SOURCE, info, cc)
    header.pop("py_version_hex", None)
    measured = measure(python, header, root)
    major, minor = (int(x) for x in str(info["version"]).split(".")[:2])
    key = f"{major}.{minor}"
    module = header.pop("module", None)
    md_dict = measured.pop("module_md_dict")
    if isinstance(module, dict) and module["md_dict"] != md_dict:
        raise SystemExit(f"{python}: md_dict header {module['md_dict']} != measured {md_dict}")
    if minor < 10:
        linetable = "lnotab"
    elif minor == 10:
        linetable = "linetable310"
    else:
        linetable = "locations"
    table: dict[str, object] = {
        "python": key,
        "generated_from": str(info["version"]),
        "machine": info["machine"],
        "linetable_format": linetable,
        "frame_model": "frame_object" if minor < 11 else "interpreter_frame",
        "instr_points_at": "previous" if minor < 13 else "current",
        "module": {"md_dict": md_dict},
        **header,
        **measured,
    }
    return key, table


VERIFY_TARGET = r"""
import asyncio, json, sys
N = int(sys.argv[1])

async def parked(ev):
    await ev.wait()

async def inner_sleep():
    await asyncio.sleep(3600)

async def outer(t):
    await t

async def main():
    ev = asyncio.Event()
    tasks = [asyncio.ensure_future(parked(ev)) for _ in range(N)]
    b = asyncio.ensure_future(inner_sleep())
    a = asyncio.ensure_future(outer(b))
    await asyncio.sleep(0.05)
    line = tasks[0].get_coro().cr_frame.f_lineno
    print(json.dumps({"ready": True, "line": line, "a": id(a), "b": id(b),
                      "total": len(asyncio.all_tasks())}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def verify_live(python: Path, n: int = 200, root: Path | None = None) -> str:
    """Start a child of this version with known tasks and read it with lifescope's reader."""
    sys.path.insert(0, str(REPO / "src"))
    from lifescope.probes.asyncio_reader import AsyncioReader

    proc = subprocess.Popen(
        [*python_command(python, root), "-c", VERIFY_TARGET, str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        truth = json.loads(proc.stdout.readline())
        time.sleep(0.05)
        reader = AsyncioReader.open(proc.pid)
        tasks, total, errors = reader.read()
        parked = [t for t in tasks if t.chain and t.chain[0].name == "parked"]
        if len(parked) != n or total != truth["total"]:
            raise SystemExit(f"{python}: read {len(parked)}/{n} parked, total {total}/{truth}")
        if {t.awaiting for t in parked} != {"event"}:
            raise SystemExit(f"{python}: awaiting { ({t.awaiting for t in parked}) }")
        if {t.chain[0].line for t in parked} != {truth["line"]}:
            raise SystemExit(f"{python}: lines { ({t.chain[0].line for t in parked}) } != {truth}")
        by_addr = {t.address: t for t in tasks}
        if by_addr[truth["b"]].awaited_by != truth["a"]:
            raise SystemExit(f"{python}: awaited_by link missing")
        return f"live read ok: {total} tasks, {errors} errors"
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("pythons", nargs="*", type=Path, help="interpreters (default: pyenv 3.8-3.13)")
    ap.add_argument("--check", action="store_true", help="compare with committed files only")
    ap.add_argument("--no-verify", action="store_true", help="skip the live end-to-end read")
    ap.add_argument("--cc", default=os.environ.get("CC") or shutil.which("cc") or "cc")
    ap.add_argument("--root", type=Path, help="run the interpreters chrooted into ROOT")
    args = ap.parse_args(argv)
    pythons = args.pythons or find_interpreters()
    if not pythons:
        print("no interpreters found", file=sys.stderr)
        return 1
    status = 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for py in sorted(pythons, key=_version_key):
        key, table = build_table(py, args.cc, args.root)
        path = OUT_DIR / f"cpython-{key}.json"
        text = json.dumps(table, indent=2, sort_keys=True) + "\n"
        if args.check:
            same = path.exists() and path.read_text() == text
            print(f"{key}: {'unchanged' if same else 'DIFFERS'}")
            status |= 0 if same else 1
            continue
        path.write_text(text)
        note = "" if args.no_verify else "; " + verify_live(py, root=args.root)
        print(f"{key}: wrote {path.relative_to(REPO)} ({table['generated_from']}{note})")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
