#!/usr/bin/env python3
"""Record ``_Py_DebugOffsets`` blocks for the tests of free-threaded detection.

Why: no free-threaded CPython can be had on this machine (Debian ships none), yet lifescope
must recognise one from the block it publishes at the start of ``_PyRuntime``.  So the
blocks are recorded two ways, for each interpreter given:

* ``cpython-3.X-live.bin``: read from a live interpreter of that version (a GIL build) with
  lifescope's own memory reader — the bytes lifescope sees in production;
* ``cpython-3.X-headers.bin`` and ``cpython-3.X-ft-headers.bin``: the struct as that
  version's own headers initialise it (``_Py_DebugOffsets_INIT``), compiled for the GIL build
  and with ``Py_GIL_DISABLED`` (the free-threaded build).  The GIL one must equal the live one
  byte for byte, which is what makes the free-threaded one credible.

Usage::

    python tools/record_debug_offsets.py --root ROOT /usr/bin/python3.14   # Debian's, chrooted
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _cpython import compile_and_run, interpreter_info, python_command

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "tests" / "fixtures" / "debug_offsets"

C_SOURCE = r"""
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stdio.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_debug_offsets.h"
int main(void) {
    static const _Py_DebugOffsets d = _Py_DebugOffsets_INIT(_Py_Debug_Cookie);
    const unsigned char *p = (const unsigned char *)&d;
    printf("{\"hex\": \"");
    for (size_t i = 0; i < sizeof d; i++) printf("%02x", p[i]);
    printf("\"}\n");
    return 0;
}
"""


def live_block(python: Path, root: Path | None, size: int) -> bytes:
    sys.path.insert(0, str(REPO / "src"))
    from lifescope.probes.elf import find_python_binary
    from lifescope.probes.memory import RemoteMemory

    proc = subprocess.Popen(
        [
            *python_command(python, root),
            "-c",
            "import time; print('up', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(0.1)
        binary = find_python_binary(proc.pid)
        return RemoteMemory(proc.pid).read(binary.runtime_address, size)
    finally:
        proc.kill()
        proc.wait()


def _differ(live: bytes, headers: bytes, key: str) -> list[int]:
    """Offsets where the live block and the headers' disagree, other than struct sizes: a
    distribution's build flags may add a field at the end of a struct (seen: Debian's 3.15
    runtime and interpreter states are 8 bytes larger than its installed headers say), which
    moves no offset lifescope reads."""
    table = json.loads((REPO / "src/lifescope/probes/offsets" / f"cpython-{key}.json").read_text())
    sizes = {at for name, at in table["debug_offsets_layout"].items() if name.endswith(".size")}
    return [
        at
        for at in range(0, len(live), 8)
        if live[at : at + 8] != headers[at : at + 8] and at not in sizes
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("pythons", nargs="+", type=Path)
    ap.add_argument("--root", type=Path)
    ap.add_argument("--cc", default="cc")
    args = ap.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for python in args.pythons:
        info = interpreter_info(python, args.root)
        key = ".".join(str(info["version"]).split(".")[:2])
        blocks = {}
        for name, define in (("headers", ""), ("ft-headers", "#define Py_GIL_DISABLED 1\n")):
            out = compile_and_run(define + C_SOURCE, info, args.cc)
            blocks[name] = bytes.fromhex(str(out["hex"]))
        blocks["live"] = live_block(python, args.root, len(blocks["headers"]))
        differ = _differ(blocks["live"], blocks["headers"], key)
        if differ:
            raise SystemExit(f"{python}: the live block differs from the headers' at {differ}")
        for name, data in blocks.items():
            path = OUT_DIR / f"cpython-{key}-{name}.bin"
            path.write_bytes(data)
            print(f"{key}: wrote {path.relative_to(REPO)} ({len(data)} bytes)")
        print(json.dumps({"version": info["version"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
