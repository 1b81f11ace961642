"""CPython struct offsets per minor version, generated from each version's own headers.

The ``cpython-3.X.json`` files next to this module are written by ``tools/gen_offsets.py``,
which compiles ``offsetof`` expressions against ``include/python3.X/internal`` of an installed
interpreter and then checks the result against that interpreter's live GIL.  Nothing here is
typed in by hand: a wrong offset would make lifescope report a plausible but false GIL state, so
a version without a generated table is simply unsupported (the reader says so) rather than
approximated from a neighbouring version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "CPythonOffsets",
    "available_versions",
    "load_offsets",
    "newest_table",
    "support",
    "supported_range",
]

OLDEST = (3, 8)


@dataclass(frozen=True, slots=True)
class CPythonOffsets:
    """The offsets lifescope needs for one CPython minor version (x86-64, GIL build).

    ``gil_location`` is ``"runtime"`` when the GIL struct is embedded in ``_PyRuntime``
    (3.8-3.11: ``_PyRuntime.ceval.gil``) or ``"main_interp"`` when each interpreter points to
    its GIL (3.12+: ``_PyRuntime.interpreters.main->ceval.gil``).  ``tstate_tid`` is
    ``"native_thread_id"`` (3.11+ store the kernel TID) or ``"pthread"`` (3.8-3.10 store only the
    ``pthread_t``; the TID has to be read from the C library's thread descriptor).
    """

    python: str
    generated_from: str
    machine: str
    gil_location: str
    tstate_tid: str
    runtime: dict[str, int]
    interp: dict[str, int]
    tstate: dict[str, int]
    gil: dict[str, int]
    sizes: dict[str, int]
    debug_offsets_layout: dict[str, int] | None


def _resource_name(minor_key: str) -> str:
    return f"cpython-{minor_key}.json"


@cache
def load_offsets(major: int, minor: int) -> CPythonOffsets | None:
    """The table for ``major.minor``, or None when no generated table exists."""
    name = _resource_name(f"{major}.{minor}")
    try:
        text = resources.files(__name__).joinpath(name).read_text()
    except (FileNotFoundError, OSError):
        return None
    raw = json.loads(text)
    return CPythonOffsets(
        python=raw["python"],
        generated_from=raw["generated_from"],
        machine=raw["machine"],
        gil_location=raw["gil_location"],
        tstate_tid=raw["tstate_tid"],
        runtime=dict(raw["runtime"]),
        interp=dict(raw["interp"]),
        tstate=dict(raw["tstate"]),
        gil=dict(raw["gil"]),
        sizes=dict(raw["sizes"]),
        debug_offsets_layout=dict(raw["debug_offsets_layout"])
        if "debug_offsets_layout" in raw
        else None,
    )


@cache
def _versions() -> tuple[str, ...]:
    names = [
        p.name
        for p in resources.files(__name__).iterdir()
        if p.name.startswith("cpython-") and p.name.endswith(".json")
    ]
    keys = [n[len("cpython-") : -len(".json")] for n in names]
    return tuple(sorted(keys, key=lambda k: tuple(int(x) for x in k.split("."))))


def available_versions() -> list[str]:
    """Minor versions with a table, e.g. ``["3.8", ..., "3.15"]`` (sorted numerically).

    Listed once per process: a collector that later drops privileges (or a test that does)
    must still be able to name them."""
    return list(_versions())


def _key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def newest_table() -> CPythonOffsets:
    """The table of the newest minor version lifescope was generated and tested against."""
    major, minor = _key(available_versions()[-1])
    table = load_offsets(major, minor)
    assert table is not None
    return table


def support(major: int, minor: int) -> str:
    """``"tested"`` (a table generated from that version's headers), ``"untested"`` (a newer
    3.x than any table: attempted through the offsets the interpreter publishes about itself,
    and trusted only once they validate on attach) or ``"unsupported"``.

    Why newer versions are attempted rather than refused: since 3.13 every CPython publishes
    where its runtime, interpreter and thread states keep what lifescope reads
    (``_Py_DebugOffsets``), so a new minor release usually works unchanged, and the
    validation on attach tells when it does not.
    """
    if (major, minor) < OLDEST or major != 3:
        return "unsupported"
    if load_offsets(major, minor) is not None:
        return "tested"
    newest = _key(available_versions()[-1])
    return "untested" if (major, minor) > newest else "unsupported"


def supported_range() -> str:
    """``"3.8–3.15"``: the versions with a generated table, for messages and help."""
    versions = available_versions()
    return f"{versions[0]}–{versions[-1]}"


_versions()  # listed at import, while the package's files are certainly readable
