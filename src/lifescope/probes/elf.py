"""Find CPython's symbols in a running process: which ELF file holds the interpreter, where it
is loaded, and which Python version it is.

Why not ask the process: lifescope never runs code in the target, so everything comes from
``/proc/PID/maps`` (what is mapped where) and the ELF file itself (the symbol table says where
``_PyRuntime`` is relative to the file's link-time addresses).  The interpreter lives either in a
shared ``libpython3.X.so*`` (pyenv, most distributions' ``--enable-shared`` builds, embedders
such as uwsgi) or statically inside the ``python3.X`` executable (Debian/Ubuntu's
``/usr/bin/python3.X``, the official Docker images' ``python`` on some tags); both are handled by
looking for the symbol rather than by trusting names.

Load address: a PIE executable or shared library is mapped at a random base.  Each ``PT_LOAD``
segment is mapped so that ``map_start - page_down(p_vaddr) == map_offset - page_down(p_offset)
== 0`` shifted by the *load bias*; we compute ``bias = map_start - page_down(p_vaddr)`` for the
mapping whose file offset equals ``page_down(p_offset)`` and check every mapping agrees.  A
non-PIE (``ET_EXEC``) file comes out with bias 0, as it should.

Results are cached by ``(path, device, inode, mtime, size)``, and probes attaching at once wait
for one parse instead of each doing it (`elf_file.py` says what a parse costs); a second attach
to another worker of the same server is free.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
from dataclasses import dataclass

from lifescope.probes.elf_file import PT_LOAD, SHF_ALLOC, SHT_NOBITS, ElfFile, ElfFormatError
from lifescope.probes.errors import PERMISSION_REMEDY, ReaderUnavailable
from lifescope.target import undeleted

__all__ = [
    "ElfImage",
    "ElfLookupError",
    "Mapping",
    "PythonBinary",
    "find_python_binary",
    "find_section",
    "parse_maps",
]

# Symbols resolved once per file: everything lifescope reads hangs off _PyRuntime, and the
# 3.11+ Py_Version constant tells 3.11.2 from 3.11.7 without trusting the file name.
_WANTED = ("_PyRuntime", "Py_Version")

_LIBPYTHON_RE = re.compile(r"libpython(\d)\.(\d+)[a-z]*\.so")
_EXE_RE = re.compile(r"python(\d)\.(\d+)[a-z]*$")
# The PY_VERSION literal passed to snprintf in Py_GetVersion() ("3.10.13", "3.9.0rc1", "3.8.18+").
# The linker merges string tails, so the literal may only exist as the end of a longer string
# such as ".../versions/3.8.18"; hence no NUL is required before it.
_RODATA_VERSION_RE = re.compile(
    rb"(?<![\d.])(3\.(\d{1,2})\.(\d{1,2})(?:(?:a|b|rc)\d{1,2})?\+?)\x00"
)


class ElfLookupError(Exception):
    """The process has no usable CPython image (not Python, unreadable, stripped, deleted...)."""


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str


@dataclass(frozen=True, slots=True)
class ElfImage:
    """What we need from one ELF file, independent of where a process loaded it."""

    path: str
    elf_type: str  # "ET_DYN" (PIE / shared object) or "ET_EXEC"
    machine: str
    loads: tuple[tuple[int, int], ...]  # (page_down(p_offset), page_down(p_vaddr)) per PT_LOAD
    symbols: dict[str, int]  # link-time st_value of the wanted symbols that exist
    py_version_hex: int | None  # value of the Py_Version constant (3.11+), read from the file
    rodata_version: str | None  # the PY_VERSION literal found in .rodata, if unambiguous


@dataclass(frozen=True, slots=True)
class PythonBinary:
    """The CPython image inside one process, with absolute (runtime) addresses."""

    pid: int
    path: str  # the path as the target sees it (from /proc/PID/maps)
    shared: bool  # True: libpython3.X.so; False: interpreter linked into the executable
    load_bias: int
    runtime_address: int  # &_PyRuntime in the target
    version: tuple[int, int]  # (major, minor)
    version_string: str | None  # full "3.11.7" when known
    version_source: str  # how the version was learnt: "Py_Version", "filename", "rodata"
    machine: str


_PAGE = os.sysconf("SC_PAGE_SIZE")
_cache: dict[tuple[str, int, int, int, int], ElfImage] = {}
_cache_lock = threading.Lock()
_parsing: dict[tuple[str, int, int, int, int], threading.Lock] = {}


def _page_down(x: int) -> int:
    return x & ~(_PAGE - 1)


def parse_maps(pid: int) -> list[Mapping]:
    """Parse ``/proc/PID/maps``; raise ``ProcessLookupError``/``PermissionError`` as the OS does."""
    out: list[Mapping] = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) < 5:
                continue
            start_s, end_s = parts[0].split("-")
            out.append(
                Mapping(
                    start=int(start_s, 16),
                    end=int(end_s, 16),
                    perms=parts[1],
                    offset=int(parts[2], 16),
                    dev=parts[3],
                    inode=int(parts[4]),
                    path=parts[5].rstrip("\n") if len(parts) > 5 else "",
                )
            )
    return out


def _open_target_file(pid: int, maps: list[Mapping]) -> tuple[str, os.stat_result]:
    """Open the very file the target mapped, even from another mount namespace or if replaced.

    Tries ``/proc/PID/map_files/START-END`` (same inode by construction; needs CAP_SYS_ADMIN),
    then ``/proc/PID/root/PATH`` (the target's filesystem view, e.g. inside a container), then
    ``PATH``; accepts the first whose inode matches the mapping, because parsing a *different*
    build of the library (upgraded on disk since the target started) would give wrong addresses.
    """
    first = maps[0]
    path = undeleted(first.path)
    candidates = [
        f"/proc/{pid}/map_files/{first.start:x}-{first.end:x}",
        f"/proc/{pid}/root{path}",
        path,
    ]
    for cand in candidates:
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if st.st_ino == first.inode:
            return cand, st
    raise ElfLookupError(
        f"{path} on disk is not the file the process mapped (replaced or deleted since it "
        "started); restart the target or run lifescope with CAP_SYS_ADMIN"
    )


def _load_image(open_path: str, display_path: str, st: os.stat_result) -> ElfImage:
    key = (display_path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        parsing = _parsing.setdefault(key, threading.Lock())
    with parsing:  # the GIL, tasks and stacks probes attach at the same moment: parse once
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
        image = _parse_image(open_path, display_path)
        with _cache_lock:
            _cache[key] = image
            _parsing.pop(key, None)
        return image


def _parse_image(open_path: str, display_path: str) -> ElfImage:
    try:
        with open(open_path, "rb") as f:
            elf = ElfFile(f)
            loads = tuple(
                (_page_down(seg.offset), _page_down(seg.vaddr))
                for seg in elf.segments
                if seg.type == PT_LOAD
            )
            symbols = _find_symbols(elf, _WANTED)
            py_version_hex: int | None = None
            if "Py_Version" in symbols:
                raw = elf.read_vaddr(symbols["Py_Version"], 8)
                if raw is not None:
                    py_version_hex = struct.unpack("<Q", raw)[0]
            rodata_version = None
            if "_PyRuntime" in symbols and py_version_hex is None:
                rodata_version = _rodata_version(elf)
            return ElfImage(
                path=display_path,
                elf_type=elf.e_type,
                machine=elf.machine,
                loads=loads,
                symbols=symbols,
                py_version_hex=py_version_hex,
                rodata_version=rodata_version,
            )
    except (ElfFormatError, OSError, struct.error) as exc:
        raise ElfLookupError(f"cannot parse ELF file {display_path}: {exc}") from exc


def _find_symbols(elf: ElfFile, names: tuple[str, ...]) -> dict[str, int]:
    """Look names up in .dynsym first (small, always present), then .symtab (may be stripped)."""
    found: dict[str, int] = {}
    for sec_name in (".dynsym", ".symtab"):
        sec = elf.section(sec_name)
        missing = tuple(name for name in names if name not in found)
        if sec is None or not missing:
            continue
        found.update(elf.symbols(sec, missing))
    return found


def _rodata_version(elf: ElfFile) -> str | None:
    """The PY_VERSION literal in read-only data, if exactly one distinct candidate exists.

    Why: 3.8-3.10 have no ``Py_Version`` constant and a static interpreter may be called just
    ``python``; ``Py_GetVersion()`` formats ``PY_VERSION`` from a string literal, which sits in
    .rodata as ``"3.10.13\\0"`` (possibly as the tail of a longer string).  If several
    different versions appear we refuse to choose.
    """
    sec = elf.section(".rodata")
    if sec is None or not sec.flags & SHF_ALLOC:
        return None
    data = elf.data(sec)
    found = {m.group(1).decode() for m in _RODATA_VERSION_RE.finditer(data)}
    return found.pop() if len(found) == 1 else None


def _load_bias(image: ElfImage, maps: list[Mapping]) -> int:
    """Compute where the file is loaded; every mapping of a PT_LOAD must agree."""
    biases: set[int] = set()
    for m in maps:
        for off, vaddr in image.loads:
            if m.offset == off:
                biases.add(m.start - vaddr)
                break
    if not biases:
        raise ElfLookupError(f"no mapping of {image.path} matches its PT_LOAD segments")
    if len(biases) > 1:
        # The file may be mapped twice (e.g. dlopen'd under another name); take the bias of the
        # lowest mapping, which is the one that holds the first PT_LOAD.
        lowest = min(maps, key=lambda m: m.start)
        for off, vaddr in image.loads:
            if lowest.offset == off:
                return lowest.start - vaddr
        raise ElfLookupError(f"inconsistent load addresses for {image.path}")
    return biases.pop()


def _version_from_name(path: str) -> tuple[int, int] | None:
    base = os.path.basename(undeleted(path))
    m = _LIBPYTHON_RE.search(base) or _EXE_RE.search(base)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _group_by_file(maps: list[Mapping]) -> dict[tuple[str, int], list[Mapping]]:
    groups: dict[tuple[str, int], list[Mapping]] = {}
    for m in maps:
        if m.inode and m.path.startswith("/"):
            groups.setdefault((m.path, m.inode), []).append(m)
    return groups


def _exe_path(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        return undeleted(os.readlink(f"/proc/{pid}/exe"))
    return None


def find_python_binary(pid: int) -> PythonBinary:
    """Locate CPython in process ``pid`` and return where ``_PyRuntime`` is.

    Order: a mapped ``libpython*.so`` (the interpreter runs from the shared library even if
    the executable also exports a few symbols), then the main executable (static builds, and
    embedders such as Blender), then any other mapped file with "python" in its name.

    Raises ``ProcessLookupError`` (no such process), ``PermissionError`` (maps unreadable) or
    :class:`ElfLookupError` (no CPython here).
    """
    try:
        maps = parse_maps(pid)
    except FileNotFoundError as exc:
        raise ProcessLookupError(f"no process {pid}") from exc
    groups = _group_by_file(maps)
    if not groups:
        raise ElfLookupError(f"process {pid} has no file mappings (kernel thread or exited)")
    exe = _exe_path(pid)

    def rank(key: tuple[str, int]) -> int:
        path = key[0]
        if _LIBPYTHON_RE.search(os.path.basename(path)):
            return 0
        if exe is not None and undeleted(path) == exe:
            return 1
        return 2

    ordered = sorted(groups, key=rank)
    errors: list[str] = []
    for key in ordered:
        r = rank(key)
        # Beyond libpython and the executable, only consider files named like Python (not
        # extension modules, "*.cpython-311-*.so"): parsing every mapped library of a large
        # process would be slow for nothing.
        if r == 2 and not re.match(r"(lib)?python", os.path.basename(key[0]), re.IGNORECASE):
            continue
        group = groups[key]
        try:
            open_path, st = _open_target_file(pid, group)
            image = _load_image(open_path, key[0], st)
        except ElfLookupError as exc:
            if r < 2:
                errors.append(str(exc))
            continue
        if "_PyRuntime" not in image.symbols:
            if r == 0:
                errors.append(f"{key[0]} has no _PyRuntime symbol (stripped, or Python < 3.7)")
            continue
        bias = _load_bias(image, group)
        version, version_string, source = _version(image, key[0])
        if version is None:
            errors.append(f"cannot tell which Python version {key[0]} is")
            continue
        return PythonBinary(
            pid=pid,
            path=key[0],
            shared=r != 1,
            load_bias=bias,
            runtime_address=bias + image.symbols["_PyRuntime"],
            version=version,
            version_string=version_string,
            version_source=source,
            machine=image.machine,
        )
    detail = "; ".join(errors) if errors else "no libpython and the executable is not CPython"
    raise ElfLookupError(f"process {pid} does not look like CPython 3.x: {detail}")


def _version(image: ElfImage, path: str) -> tuple[tuple[int, int] | None, str | None, str]:
    """Best-founded version: Py_Version (3.11+) > file name > .rodata PY_VERSION literal.

    When two sources exist they must agree on the minor version, else we report "unknown"
    rather than pick one.
    """
    by_name = _version_from_name(path)
    if image.py_version_hex is not None:
        h = image.py_version_hex
        major, minor, micro = (h >> 24) & 0xFF, (h >> 16) & 0xFF, (h >> 8) & 0xFF
        level = {0xA: "a", 0xB: "b", 0xC: "rc"}.get((h >> 4) & 0xF, "")
        serial = str(h & 0xF) if level else ""
        if by_name is not None and by_name != (major, minor):
            return None, None, "conflict"
        return (major, minor), f"{major}.{minor}.{micro}{level}{serial}", "Py_Version"
    ro = image.rodata_version
    ro_minor = (3, int(ro.split(".")[1])) if ro else None
    if by_name is not None:
        if ro_minor is not None and ro_minor != by_name:
            return None, None, "conflict"
        return by_name, ro, "filename"
    if ro_minor is not None:
        return ro_minor, ro, "rodata"
    return None, None, "unknown"


_section_cache: dict[tuple[str, int, int, int, str], bytes | None] = {}


def find_section(pid: int, section: str, file_pattern: str) -> tuple[str, bytes] | None:
    """The initialised contents of ELF section ``section`` in the first file mapped by ``pid``
    whose name matches ``file_pattern`` and has that section: (its path, the bytes).

    Why sections: CPython 3.14+ publishes layouts in sections of their own (``.PyRuntime``,
    and ``.AsyncioDebug`` in ``_asyncio``, built into the executable or an extension module),
    found by name even in a stripped build.  The file is opened as the target sees it
    (:func:`_open_target_file`: map_files or /proc/PID/root, never the host's file of the
    same name).  Raises ``ProcessLookupError``/``PermissionError`` like :func:`parse_maps`.
    """
    try:
        maps = parse_maps(pid)
    except FileNotFoundError as exc:
        raise ProcessLookupError(f"no process {pid}") from exc
    pattern = re.compile(file_pattern)
    for (path, _), group in _group_by_file(maps).items():
        if not pattern.search(os.path.basename(undeleted(path))):
            continue
        try:
            open_path, st = _open_target_file(pid, group)
        except ElfLookupError:
            continue
        key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, section)
        with _cache_lock:
            known = key in _section_cache
            data = _section_cache.get(key)
        if not known:
            data = None
            try:
                with open(open_path, "rb") as handle:
                    elf = ElfFile(handle)
                    found = elf.section(section)
                    if found is not None and found.type != SHT_NOBITS:
                        data = elf.data(found)
            except (ElfFormatError, OSError):
                data = None
            with _cache_lock:
                _section_cache[key] = data
        if data is not None:
            return path, data
    return None


def open_python_binary(
    pid: object, fail: type[ReaderUnavailable], not_python_remedy: str
) -> PythonBinary:
    """`find_python_binary` for a memory reader's attach: a bad pid, a dead process, no
    permission or no CPython each become `fail(reason, remedy, status)` — the reader's own
    exception, in the probe vocabulary ("unavailable", "gone", "denied")."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise fail(f"invalid pid {pid!r}", "pass the pid of a running process", "unavailable")
    if not os.path.isdir(f"/proc/{pid}"):
        raise fail(f"no process with pid {pid}", "check the pid", "gone")
    try:
        return find_python_binary(pid)
    except ProcessLookupError as exc:
        raise fail.gone(pid) from exc
    except PermissionError as exc:
        raise fail(f"not allowed to read /proc/{pid}/maps", PERMISSION_REMEDY, "denied") from exc
    except ElfLookupError as exc:
        raise fail(str(exc), not_python_remedy, "unavailable") from exc
