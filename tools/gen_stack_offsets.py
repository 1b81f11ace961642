#!/usr/bin/env python3
"""Generate the few offsets the native stack walker needs (``probes/stack_offsets.json``).

Why a table of its own: the GIL table (``probes/offsets``) has the thread-state list, the
asyncio table (``probes/asyncio_offsets``) the frame's code and instruction pointer as seen
from a generator; the walker also needs where a thread state keeps its current frame (3.11/3.12
through ``tstate->cframe->current_frame``, 3.13 ``tstate->current_frame`` directly), the
frame's ``previous`` link and its ``owner`` (3.12+ pushes a C-stack shim frame at every entry
into the eval loop, which is not Python code and must be skipped). All from ``offsetof`` over
the interpreter's own internal headers, like ``gen_offsets.py``; nothing typed in by hand.
3.8-3.10 keep heap ``PyFrameObject``s instead (``tstate->frame``, ``f_back``, an int
``f_lasti``): ``instr_is_lasti`` tells the walker which.

3.14 and 3.15 come from Debian's builds, which ship no headers: their entries were read off
the ``_Py_DebugOffsets`` block each interpreter publishes at the start of ``_PyRuntime``
(``thread_state.current_frame``, ``interpreter_frame.previous/executable/instr_ptr/owner``;
shim frames are owned by ``FRAME_OWNED_BY_INTERPRETER`` = 3, and 3.14 adds ``_CSTACK`` = 4,
both skipped). They agree with the asyncio table's frame fields, generated separately, and
``tests/test_native_stacks.py`` checks the walks against py-spy on both. This script keeps
them when it rewrites the file.

Usage::

    python tools/gen_stack_offsets.py                      # pyenv 3.8-3.13
    python tools/gen_stack_offsets.py /path/to/python3.12  # given interpreters
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from _cpython import compile_and_run, interpreter_info

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "src" / "lifescope" / "probes" / "stack_offsets.json"

C_SOURCE = r"""
#define Py_BUILD_CORE 1
#ifndef NDEBUG
#  define NDEBUG 1
#endif
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#if PY_VERSION_HEX >= 0x030B0000
#  include "internal/pycore_frame.h"
#else
#  include <frameobject.h>
#endif
#if PY_VERSION_HEX >= 0x030D0000
#  include "internal/pycore_tstate.h"
#endif

int main(void) {
#if PY_VERSION_HEX < 0x030B0000
    /* 3.8-3.10: heap PyFrameObjects linked by f_back; f_lasti an int (bytes before 3.10,
       code units in 3.10). No shim frames. */
    printf("{\"tstate_frame\": [%zu], ", offsetof(PyThreadState, frame));
    printf("\"frame_code\": %zu, ", offsetof(PyFrameObject, f_code));
    printf("\"frame_instr\": %zu, ", offsetof(PyFrameObject, f_lasti));
    printf("\"frame_previous\": %zu, ", offsetof(PyFrameObject, f_back));
    printf("\"frame_owner\": 0, \"owner_cstack\": -1, \"instr_is_lasti\": 1, ");
    printf("\"frame_size\": %zu}\n", sizeof(PyFrameObject));
    return 0;
#else
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13: the thread state points at its innermost frame; f_executable may be a code
       object or not (shim frames own none). */
    printf("{\"tstate_frame\": [%zu], ", offsetof(PyThreadState, current_frame));
    printf("\"frame_code\": %zu, ", offsetof(struct _PyInterpreterFrame, f_executable));
    printf("\"frame_instr\": %zu, ", offsetof(struct _PyInterpreterFrame, instr_ptr));
#else
    /* 3.11/3.12: tstate->cframe (a _PyCFrame on the C stack) ->current_frame. */
    printf("{\"tstate_frame\": [%zu, %zu], ", offsetof(PyThreadState, cframe),
           offsetof(_PyCFrame, current_frame));
    printf("\"frame_code\": %zu, ", offsetof(struct _PyInterpreterFrame, f_code));
    printf("\"frame_instr\": %zu, ", offsetof(struct _PyInterpreterFrame, prev_instr));
#endif
    printf("\"frame_previous\": %zu, ", offsetof(struct _PyInterpreterFrame, previous));
    printf("\"frame_owner\": %zu, ", offsetof(struct _PyInterpreterFrame, owner));
#if PY_VERSION_HEX >= 0x030C0000
    printf("\"owner_cstack\": %d, ", (int)FRAME_OWNED_BY_CSTACK);
#else
    printf("\"owner_cstack\": -1, ");
#endif
    printf("\"instr_is_lasti\": 0, ");
    printf("\"frame_size\": %zu}\n", sizeof(struct _PyInterpreterFrame));
    return 0;
#endif
}
"""


def pyenv_pythons() -> list[Path]:
    """pyenv's CPython 3.8-3.13."""
    root = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
    found = []
    for minor in range(8, 14):
        for d in sorted(root.glob(f"3.{minor}.*")):
            exe = d / "bin" / f"python3.{minor}"
            if exe.exists():
                found.append(exe)
                break
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("pythons", nargs="*", type=Path)
    args = ap.parse_args(argv)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler")
    table: dict[str, object] = json.loads(OUT.read_text()) if OUT.exists() else {}
    for python in args.pythons or pyenv_pythons():
        info = interpreter_info(python)
        version = str(info["version"])
        minor = ".".join(version.split(".")[:2])
        entry = compile_and_run(C_SOURCE, info, cc)
        entry["generated_from"] = version
        table[minor] = entry
        print(f"{minor}: {entry}", file=sys.stderr)
    OUT.write_text(json.dumps(dict(sorted(table.items())), indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
