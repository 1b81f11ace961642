#!/usr/bin/env python3
"""Generate lifescope's CPython struct-offset tables from each interpreter's own headers.

Why this exists: lifescope reads the GIL of a running interpreter from outside with
``process_vm_readv``.  The structs involved (``_PyRuntimeState``, ``PyInterpreterState``,
``PyThreadState``, ``struct _gil_runtime_state``) are private and change between minor
versions, so the offsets must not be typed in by hand.  This script compiles a tiny C program
with ``offsetof`` against the *internal* headers shipped with every installed interpreter
(``include/python3.X/internal``, compiled with ``Py_BUILD_CORE``), writes one JSON file per
minor version into ``src/lifescope/probes/offsets/``, and then *verifies* the table by running
that interpreter and reading its own GIL through ``ctypes`` at the computed addresses (the
interval must equal ``sys.getswitchinterval()``, ``locked`` must be 1 and ``last_holder`` must be
the calling thread's ``PyThreadState``).

Usage::

    python tools/gen_offsets.py                      # every /root/.pyenv/versions/3.X.Y
    python tools/gen_offsets.py /path/to/python3.12  # specific interpreters
    python tools/gen_offsets.py --check              # regenerate in memory, diff against files
    python tools/gen_offsets.py --root ROOT /usr/bin/python3.14   # a chrooted interpreter

``--root``: the interpreter lives in a root filesystem of its own (``tools/debian-cpython``
unpacks Debian's 3.14/3.15 with ``libpython3.X-dev`` that way); it is run with ``chroot`` and
its headers are taken from under ROOT.

The tables describe the default (GIL) build on the architecture the script runs on (x86-64
here); a free-threaded or other-architecture build needs its own run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _cpython import compile_and_run, interpreter_info, python_command

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "src" / "lifescope" / "probes" / "offsets"
SUPPORTED_MINORS = range(8, 16)  # 3.8 .. 3.15

# The C program.  Everything version-dependent is selected with PY_VERSION_HEX so a single
# source works for all supported versions; each emitted number is an offsetof()/sizeof().
C_SOURCE = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <pthread.h>
#if PY_VERSION_HEX < 0x03090000
#  include "internal/pycore_pystate.h"
#else
#  include "internal/pycore_runtime.h"
#  include "internal/pycore_interp.h"
#endif
#include "internal/pycore_gil.h"

#define F(name, expr) \
    printf("%s\"%s\": %lu", first ? "" : ", ", name, (unsigned long)(expr)); first = 0
#define D(member) F(#member, offsetof(_Py_DebugOffsets, member))
#define OPEN(name) printf("%s\"%s\": {", top ? "" : ", ", name); top = 0; first = 1
#define CLOSE() printf("}")

int main(void) {
    int top = 1, first = 1;
    printf("{");

    OPEN("sizes");
    F("runtime", sizeof(_PyRuntimeState));
    F("interp", sizeof(PyInterpreterState));
    F("tstate", sizeof(PyThreadState));
    F("gil", sizeof(struct _gil_runtime_state));
    F("pthread_cond", sizeof(pthread_cond_t));
    F("pthread_mutex", sizeof(pthread_mutex_t));
    F("pointer", sizeof(void *));
    CLOSE();

    OPEN("runtime");
    F("interpreters_head", offsetof(_PyRuntimeState, interpreters.head));
    F("interpreters_main", offsetof(_PyRuntimeState, interpreters.main));
#if PY_VERSION_HEX < 0x030C0000
    F("ceval_gil", offsetof(_PyRuntimeState, ceval.gil));
    F("gilstate_tstate_current", offsetof(_PyRuntimeState, gilstate.tstate_current));
#endif
#if PY_VERSION_HEX >= 0x030D0000
    F("debug_offsets", offsetof(_PyRuntimeState, debug_offsets));
#endif
    CLOSE();

    OPEN("interp");
    F("next", offsetof(PyInterpreterState, next));
    F("id", offsetof(PyInterpreterState, id));
#if PY_VERSION_HEX < 0x030B0000
    F("threads_head", offsetof(PyInterpreterState, tstate_head));
    F("next_unique_id", offsetof(PyInterpreterState, tstate_next_unique_id));
#else
    F("threads_head", offsetof(PyInterpreterState, threads.head));
    F("next_unique_id", offsetof(PyInterpreterState, threads.next_unique_id));
#endif
#if PY_VERSION_HEX >= 0x030C0000
    F("ceval_gil", offsetof(PyInterpreterState, ceval.gil));
    F("gil_struct", offsetof(PyInterpreterState, _gil));
#endif
    CLOSE();

    OPEN("tstate");
    F("prev", offsetof(PyThreadState, prev));
    F("next", offsetof(PyThreadState, next));
    F("interp", offsetof(PyThreadState, interp));
    F("thread_id", offsetof(PyThreadState, thread_id));
    F("id", offsetof(PyThreadState, id));
#if PY_VERSION_HEX >= 0x030B0000
    F("native_thread_id", offsetof(PyThreadState, native_thread_id));
#endif
    CLOSE();

    OPEN("gil");
    F("interval", offsetof(struct _gil_runtime_state, interval));
    F("last_holder", offsetof(struct _gil_runtime_state, last_holder));
    F("locked", offsetof(struct _gil_runtime_state, locked));
    F("switch_number", offsetof(struct _gil_runtime_state, switch_number));
    F("cond", offsetof(struct _gil_runtime_state, cond));
    F("mutex", offsetof(struct _gil_runtime_state, mutex));
    F("locked_size", sizeof(((struct _gil_runtime_state *)0)->locked));
    CLOSE();

#if PY_VERSION_HEX >= 0x030D0000
    /* Where each published value sits inside _Py_DebugOffsets itself: lifescope reads the
       struct from the target at attach time and needs its layout for this minor version. */
    OPEN("debug_offsets_layout");
    D(cookie);
    D(version);
    D(free_threaded);
    D(runtime_state.size);
    D(runtime_state.interpreters_head);
    D(interpreter_state.size);
    D(interpreter_state.id);
    D(interpreter_state.next);
    D(interpreter_state.threads_head);
    D(interpreter_state.ceval_gil);
    D(interpreter_state.gil_runtime_state);
    D(interpreter_state.gil_runtime_state_enabled);
    D(interpreter_state.gil_runtime_state_locked);
    D(interpreter_state.gil_runtime_state_holder);
    D(thread_state.size);
    D(thread_state.prev);
    D(thread_state.next);
    D(thread_state.interp);
    D(thread_state.thread_id);
    D(thread_state.native_thread_id);
    F("size", sizeof(_Py_DebugOffsets));
    CLOSE();
#endif

    printf(", \"py_version_hex\": %lu", (unsigned long)PY_VERSION_HEX);
    printf("}\n");
    return 0;
}
"""

# Run inside the interpreter the table is for: locate its own GIL with the freshly computed
# offsets and check it against facts the interpreter itself knows.  ctypes.pythonapi exports
# _PyRuntime for shared and (export-dynamic) static builds alike.
VERIFY_SOURCE = r"""
import ctypes, json, sys
t = json.loads(sys.argv[1])
api = ctypes.pythonapi
runtime = ctypes.addressof(ctypes.c_char.in_dll(api, "_PyRuntime"))
def ptr(a): return ctypes.c_void_p.from_address(a).value or 0
def ulong(a): return ctypes.c_ulong.from_address(a).value
def i32(a): return ctypes.c_int.from_address(a).value
main = ptr(runtime + t["runtime"]["interpreters_main"])
if "ceval_gil" in t["runtime"]:
    gil = runtime + t["runtime"]["ceval_gil"]
else:
    gil = ptr(main + t["interp"]["ceval_gil"])
    assert gil == main + t["interp"]["gil_struct"], "interp->ceval.gil != &interp->_gil"
api.PyThreadState_Get.restype = ctypes.c_void_p
me = api.PyThreadState_Get()
g = t["gil"]
interval = ulong(gil + g["interval"])
assert interval == round(sys.getswitchinterval() * 1e6), ("interval", interval)
assert i32(gil + g["locked"]) == 1, "locked != 1 while this thread runs Python"
assert ptr(gil + g["last_holder"]) == me, "last_holder != PyThreadState_Get()"
assert ptr(me + t["tstate"]["interp"]) == main, "tstate->interp != main interpreter"
seen, ts = [], ptr(main + t["interp"]["threads_head"])
while ts and len(seen) < 1000:
    seen.append(ts)
    ts = ptr(ts + t["tstate"]["next"])
assert me in seen, "own tstate not in interp thread list"
import threading
counter = ctypes.c_uint64.from_address(main + t["interp"]["next_unique_id"]).value
ids = [ctypes.c_uint64.from_address(ts + t["tstate"]["id"]).value for ts in seen]
assert len(set(ids)) == len(ids) and max(ids) <= counter < 1 << 32, ("unique ids", ids, counter)
before = counter
th = threading.Thread(target=lambda: None); th.start(); th.join()
counter = ctypes.c_uint64.from_address(main + t["interp"]["next_unique_id"]).value
assert counter == before + 1, ("a new thread state must bump next_unique_id", before, counter)
assert ulong(me + t["tstate"]["thread_id"]) == threading.get_ident(), "thread_id"
if "native_thread_id" in t["tstate"]:
    assert ulong(me + t["tstate"]["native_thread_id"]) == threading.get_native_id(), "native tid"
if "debug_offsets_layout" in t:
    do = runtime + t["runtime"]["debug_offsets"]
    assert ctypes.string_at(do, 8) == b"xdebugpy", "cookie"
    L = t["debug_offsets_layout"]
    def pub(k): return ctypes.c_uint64.from_address(do + L[k]).value
    assert pub("version") == sys.hexversion, "debug version"
    ip = "interpreter_state."
    assert pub(ip + "gil_runtime_state") == t["interp"]["gil_struct"]
    assert pub(ip + "gil_runtime_state_locked") == t["interp"]["gil_struct"] + g["locked"]
    assert pub(ip + "gil_runtime_state_holder") == t["interp"]["gil_struct"] + g["last_holder"]
    assert pub(ip + "ceval_gil") == t["interp"]["ceval_gil"]
    assert pub("thread_state.native_thread_id") == t["tstate"]["native_thread_id"]
print("ok", sys.version.split()[0])
"""


def find_interpreters() -> list[Path]:
    """Every pyenv CPython 3.8-3.13 on this machine (the ones lifescope supports)."""
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


def build_table(python: Path, cc: str, root: Path | None = None) -> tuple[str, dict[str, object]]:
    info = interpreter_info(python, root)
    if info["gil_disabled"]:
        raise SystemExit(f"{python}: free-threaded build; these tables describe GIL builds")
    raw = compile_and_run(C_SOURCE, info, cc)
    major, minor = (int(x) for x in str(info["version"]).split(".")[:2])
    minor_key = f"{major}.{minor}"
    table: dict[str, object] = {
        "python": minor_key,
        "generated_from": str(info["version"]),
        "machine": info["machine"],
        "gil_location": "runtime" if "ceval_gil" in raw["runtime"] else "main_interp",  # type: ignore[operator]
        "tstate_tid": "native_thread_id" if "native_thread_id" in raw["tstate"] else "pthread",  # type: ignore[operator]
        **{k: v for k, v in raw.items() if k != "py_version_hex"},
    }
    return minor_key, table


def verify(python: Path, table: dict[str, object], root: Path | None = None) -> str:
    """Run the interpreter and check the table against its own live GIL."""
    proc = subprocess.run(
        [*python_command(python, root), "-c", VERIFY_SOURCE, json.dumps(table)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"verification failed for {python}:\n{proc.stderr}")
    return proc.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pythons", nargs="*", type=Path, help="interpreters (default: pyenv 3.8-3.13)")
    ap.add_argument("--check", action="store_true", help="compare with committed files only")
    ap.add_argument("--cc", default=os.environ.get("CC") or shutil.which("cc") or "cc")
    ap.add_argument("--root", type=Path, help="run the interpreters chrooted into ROOT")
    args = ap.parse_args(argv)
    pythons = args.pythons or find_interpreters()
    if not pythons:
        print("no interpreters found", file=sys.stderr)
        return 1
    if platform.machine() != "x86_64":
        print(f"note: generating for {platform.machine()}", file=sys.stderr)
    status = 0
    for py in sorted(pythons, key=_version_key):
        key, table = build_table(py, args.cc, args.root)
        result = verify(py, table, args.root)
        path = OUT_DIR / f"cpython-{key}.json"
        text = json.dumps(table, indent=2, sort_keys=True) + "\n"
        if args.check:
            same = path.exists() and path.read_text() == text
            print(f"{key}: {'unchanged' if same else 'DIFFERS'} ({result})")
            status |= 0 if same else 1
        else:
            path.write_text(text)
            print(f"{key}: wrote {path.relative_to(REPO)} ({result})")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
