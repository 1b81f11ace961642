"""Object layouts for the asyncio task reader, one generated table per CPython minor version.

The ``cpython-3.X.json`` files next to this module are written by
``tools/gen_asyncio_offsets.py``: header structs (dicts, sets, weak references, strings,
generators, frames, code objects, interpreter state) come from ``offsetof`` compiled against that
version's own headers, and the structs that exist only in C sources (the ``_asyncio`` Task,
Future and FutureIter objects, the 3.8-3.10 dict-keys object) are measured inside that
interpreter with ``ctypes``.  Nothing is typed in by hand, and a version without a table is
unsupported (the reader says so) rather than approximated from a neighbour: a wrong offset
would not crash, it would show plausible but false tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["AsyncioOffsets", "available_versions", "load_asyncio_offsets"]


@dataclass(frozen=True, slots=True)
class AsyncioOffsets:
    """One version's table: ``section(name)[key]`` → an offset/size/constant (x86-64, GIL build).

    Kept as the generated sections rather than hundreds of named fields: the reader pulls the
    numbers it needs into locals once at attach time, and a missing key is a KeyError at
    attach (reported as "unavailable"), never a silent default.
    """

    python: str
    generated_from: str
    machine: str
    linetable_format: str
    """``lnotab`` (3.8-3.9), ``linetable310`` (3.10) or ``locations`` (3.11+, PEP 657)."""
    frame_model: str
    """``frame_object`` (3.8-3.10: generators own a heap ``PyFrameObject``) or
    ``interpreter_frame`` (3.11+: a ``_PyInterpreterFrame`` embedded in the generator)."""
    sections: dict[str, dict[str, Any]]

    @property
    def minor(self) -> int:
        return int(self.python.split(".")[1])

    def section(self, name: str) -> dict[str, Any]:
        return self.sections[name]

    def has(self, name: str) -> bool:
        return name in self.sections


def _resource_name(minor_key: str) -> str:
    return f"cpython-{minor_key}.json"


@cache
def load_asyncio_offsets(major: int, minor: int) -> AsyncioOffsets | None:
    """The table for ``major.minor``, or None when no generated table exists."""
    try:
        text = resources.files(__name__).joinpath(_resource_name(f"{major}.{minor}")).read_text()
    except (FileNotFoundError, OSError):
        return None
    raw = json.loads(text)
    sections = {k: v for k, v in raw.items() if isinstance(v, dict)}
    return AsyncioOffsets(
        python=raw["python"],
        generated_from=raw["generated_from"],
        machine=raw["machine"],
        linetable_format=raw["linetable_format"],
        frame_model=raw["frame_model"],
        sections=sections,
    )


def available_versions() -> list[str]:
    """Minor versions with a table, e.g. ``["3.8", ..., "3.13"]`` (sorted numerically)."""
    names = [
        p.name
        for p in resources.files(__name__).iterdir()
        if p.name.startswith("cpython-") and p.name.endswith(".json")
    ]
    keys = [n[len("cpython-") : -len(".json")] for n in names]
    return sorted(keys, key=lambda k: tuple(int(x) for x in k.split(".")))
