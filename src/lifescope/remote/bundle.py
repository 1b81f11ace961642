"""The self-contained collector shipped to a host that has no lifescope of this version.

One zip, built from this installation: lifescope's collector-side modules (everything but
the UI and the demo) with their data files, pyelftools when the host's Python can run it
(3.10+; older ones lose only the symbol readers, see `probes.elf`), and the py-spy binary
unless the host already has the same py-spy on its PATH. No psutil or scapy: the collector
imports neither (sockets come from netlink or /proc, packets from its own BPF and parser).

Built in memory once per process and kind of host, so a reconnection ships the same bytes
without building them again.
"""

from __future__ import annotations

import functools
import io
import os
import platform
import subprocess
import zipfile
from dataclasses import dataclass

import lifescope
from lifescope.probes.pyspy import find_pyspy

_EXCLUDED = ("ui", "demo")
"""Subpackages the collector never imports (Textual, the demo server)."""
_DATA = (".py", ".json", ".toml")


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the host said in its `SEND` line (`boot.py`)."""

    python: tuple[int, int]
    machine: str
    lzma: bool
    pyspy: str
    """The version of py-spy on the host's PATH, or "-"."""

    @classmethod
    def parse(cls, words: list[str]) -> HostFacts:
        fields = dict(word.split("=", 1) for word in words if "=" in word)
        major, minor = (int(x) for x in fields.get("python", "0.0").split(".")[:2])
        return cls(
            python=(major, minor),
            machine=fields.get("machine", ""),
            lzma=fields.get("lzma") == "1",
            pyspy=fields.get("pyspy", "-"),
        )


@dataclass(frozen=True, slots=True)
class Bundle:
    data: bytes
    files: int
    pyspy: bool
    """The py-spy binary is inside (the host had none of our version)."""
    elftools: bool
    note: str
    """What the host gets and what it does without, in one line."""


def _local_pyspy_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = out.decode(errors="replace").split()
    return words[-1] if words else ""


def _add_tree(
    archive: zipfile.ZipFile, root: str, arcroot: str, exclude: tuple[str, ...] = ()
) -> int:
    count = 0
    for directory, subdirs, names in os.walk(root):
        rel = os.path.relpath(directory, root)
        top = rel.split(os.sep)[0]
        if top in exclude:
            subdirs[:] = []
            continue
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(_DATA):
                path = os.path.join(directory, name)
                archive.write(path, os.path.normpath(os.path.join(arcroot, rel, name)))
                count += 1
    return count


@functools.lru_cache(maxsize=4)
def build(host: HostFacts, lean: bool = False) -> Bundle:
    """The bundle for this host. `lean` (a thin link) compresses with LZMA where the host can
    unpack it: 2.4 MB instead of 3.2 MB, but ~5 s of CPU to build instead of ~0.6 s
    (measured here), which only a thin link repays."""
    method = zipfile.ZIP_LZMA if (lean and host.lzma) else zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    notes: list[str] = []
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        files = _add_tree(archive, os.path.dirname(lifescope.__file__), "lifescope", _EXCLUDED)
        elftools = host.python >= (3, 10)
        if elftools:
            import elftools as elftools_package

            files += _add_tree(archive, os.path.dirname(elftools_package.__file__), "elftools")
        else:
            notes.append(f"host Python {host.python[0]}.{host.python[1]} < 3.10: no GIL or "
                         "asyncio memory readers (GIL from py-spy dumps)")  # fmt: skip
        binary = find_pyspy()
        ours = _local_pyspy_version(binary) if binary else ""
        ship = bool(binary) and host.pyspy != ours and host.machine == platform.machine()
        if ship:
            archive.write(binary, "bin/py-spy")  # type: ignore[arg-type]
            files += 1
        elif host.pyspy == ours:
            notes.append(f"using the host's py-spy {ours}")
        else:
            notes.append(f"no py-spy for a {host.machine} host: no stacks (install py-spy there)")
    return Bundle(buffer.getvalue(), files, ship, elftools, "; ".join(notes))
