"""What both table generators need from an interpreter: run it, ask it where its headers are,
compile an ``offsetof`` program against them.

An interpreter may live in a root filesystem of its own (``tools/debian-cpython`` unpacks
Debian's 3.14/3.15 that way, with ``DEV=1`` for ``libpython3.X-dev``): it is then run with
``chroot ROOT`` and its headers are read from under ROOT, while the C program is compiled with
the host's compiler and C library headers.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

INFO_SOURCE = (
    "import sys, sysconfig, json, platform; print(json.dumps({'version': "
    "sys.version.split()[0], 'include': sysconfig.get_paths()['include'], "
    "'hexversion': sys.hexversion, 'machine': platform.machine(), "
    "'gil_disabled': bool(sysconfig.get_config_var('Py_GIL_DISABLED'))}))"
)


def python_command(python: Path, root: Path | None = None) -> list[str]:
    """The command that runs ``python`` (inside ``root`` through chroot when given)."""
    return ["chroot", str(root), str(python)] if root else [str(python)]


def interpreter_info(python: Path, root: Path | None = None) -> dict[str, object]:
    """Version, include directory (a host path), machine and build flags of ``python``."""
    out = subprocess.run(
        [*python_command(python, root), "-c", INFO_SOURCE],
        capture_output=True,
        text=True,
        check=True,
    )
    info: dict[str, object] = json.loads(out.stdout)
    if root:
        info["include"] = f"{root}{info['include']}"
        info["extra_include"] = str(root / "usr" / "include")
    return info


def compile_and_run(source: str, info: dict[str, object], cc: str) -> dict[str, object]:
    """Compile ``source`` against the interpreter's headers, run it, parse its JSON output."""
    include = str(info["include"])
    extra = info.get("extra_include")
    with tempfile.TemporaryDirectory(prefix="lifescope-offsets-") as tmp:
        src = Path(tmp) / "offsets.c"
        exe = Path(tmp) / "offsets"
        src.write_text(source)
        argv = [cc, "-O0", "-w", f"-I{include}", f"-I{include}/internal"]
        if extra:
            # Debian's pyconfig.h includes <x86_64-linux-gnu/python3.X/pyconfig.h>; searched
            # after the system directories, so libc's headers stay the host's own.
            argv.append(f"-idirafter{extra}")
        proc = subprocess.run([*argv, str(src), "-o", str(exe)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"compiling against {include} failed:\n{proc.stderr[-4000:]}")
        out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    result: dict[str, object] = json.loads(out)
    return result
