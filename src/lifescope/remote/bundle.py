"""The self-contained collector shipped to a host that has no lifescope of this version.

One zip, built from this installation: lifescope's collector-side modules (everything but
the UI and the demo) with their data files, and the py-spy binary unless the host already has
the same py-spy on its PATH. Nothing else: the collector imports no psutil or scapy (sockets
come from netlink or /proc, packets from its own BPF and parser) and no pyelftools (symbols
come from its own ELF reader, `probes.elf_file`, which also runs on a host's 3.8 or 3.9).

Built once per kind of host and kept in the user's cache (`cache_dir`), so a reconnection or
the next session ships the same bytes without building them again.
"""

from __future__ import annotations

import functools
import hashlib
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
KEEP = 4
"""Bundles kept in the cache (each ~3 MB): the newest, for the kinds of host seen lately."""


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
    note: str
    """What the host gets and what it does without, in one line."""


def _local_pyspy_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = out.decode(errors="replace").split()
    return words[-1] if words else ""


def _tree(root: str, arcroot: str, exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(path, name in the zip) of every module and data file under `root`."""
    entries = []
    for directory, subdirs, names in os.walk(root):
        rel = os.path.relpath(directory, root)
        if rel.split(os.sep)[0] in exclude:
            subdirs[:] = []
            continue
        subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(_DATA):
                arcname = os.path.normpath(os.path.join(arcroot, rel, name))
                entries.append((os.path.join(directory, name), arcname))
    return entries


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lifescope", "bundles")


def _cached(key: str) -> bytes | None:
    try:
        with open(os.path.join(cache_dir(), f"{key}.zip"), "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _store(key: str, data: bytes) -> None:
    """Keep a built bundle for the next session (an LZMA build takes seconds). Best effort:
    a cache that cannot be written costs only time. Written beside and renamed, so a reader
    never sees half a file."""
    directory = cache_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = os.path.join(directory, f".{key}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.rename(tmp, os.path.join(directory, f"{key}.zip"))
        kept = sorted(
            (os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".zip")),
            key=os.path.getmtime,
        )
        for old in kept[:-KEEP]:  # bundles of older versions and other kinds of host
            os.unlink(old)
    except OSError:
        return


@functools.lru_cache(maxsize=4)
def build(host: HostFacts, lean: bool = False) -> Bundle:
    """The bundle for this host. `lean` (a thin link) compresses with LZMA where the host can
    unpack it: 2.3 MB instead of 3.1 MB, but ~5 s of CPU to build instead of ~0.6 s
    (measured here) — once: a built bundle is kept in the user's cache, keyed by the
    sha256 of everything in it, so the next session sends it at once."""
    method = zipfile.ZIP_LZMA if (lean and host.lzma) else zipfile.ZIP_DEFLATED
    notes: list[str] = []
    entries = _tree(os.path.dirname(lifescope.__file__), "lifescope", _EXCLUDED)
    binary = find_pyspy()
    ours = _local_pyspy_version(binary) if binary else ""
    ship = bool(binary) and host.pyspy != ours and host.machine == platform.machine()
    if ship:
        entries.append((binary, "bin/py-spy"))  # type: ignore[arg-type]
    elif host.pyspy == ours:
        notes.append(f"using the host's py-spy {ours}")
    else:
        notes.append(f"no py-spy for a {host.machine} host: no stacks (install py-spy there)")
    digest = hashlib.sha256(f"{lifescope.__version__} {method}".encode())
    for path, arcname in entries:
        digest.update(arcname.encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    key = digest.hexdigest()[:32]
    data = _cached(key)
    if data is None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=method) as archive:
            for path, arcname in entries:
                archive.write(path, arcname)
        data = buffer.getvalue()
        _store(key, data)
    return Bundle(data, len(entries), ship, "; ".join(notes))
