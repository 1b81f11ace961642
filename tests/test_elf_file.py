"""lifescope's own ELF reader against pyelftools, on the real interpreters of this machine.

pyelftools was what `probes.elf` used until its cost at attach (issue 17); it stays as the
oracle here: for every CPython image found (pyenv's shared libpythons and executables,
Debian's static 3.14/3.15 when unpacked, the system's python3), both readers must agree on
the loadable segments, the symbols lifescope looks up, and the sections it reads. Broken
files must fail with `ElfFormatError`, which `elf.py` turns into its one-line lookup error.
"""

from __future__ import annotations

import glob
import os
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from lifescope.probes import elf
from lifescope.probes.elf_file import PT_LOAD, ElfFile, ElfFormatError

WANTED = ("_PyRuntime", "Py_Version", "PyEval_SaveThread", "_PyEval_EvalFrameDefault")
SECTIONS = (".rodata", ".PyRuntime", ".dynsym", ".bss")


def _images() -> list[str]:
    found = glob.glob("/root/.pyenv/versions/3.*/lib/libpython3*.so.1.0")
    found += glob.glob("/root/.pyenv/versions/3.*/bin/python3.[0-9]*")
    found += glob.glob(
        os.path.expanduser("~/.cache/lifescope/debian-cpython/*/root/usr/bin/python3.*")
    )
    found += glob.glob("/usr/bin/python3.[0-9]*")
    elves = []
    for path in sorted(set(found)):
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    elves.append(path)
    return elves


IMAGES = _images()


def _oracle_symbols(image: ELFFile, names: tuple[str, ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    for name_of_table in (".dynsym", ".symtab"):
        table = image.get_section_by_name(name_of_table)
        if not isinstance(table, SymbolTableSection):
            continue
        for name in names:
            for symbol in table.get_symbol_by_name(name) or () if name not in found else ():
                if symbol["st_shndx"] != "SHN_UNDEF" and symbol["st_value"]:
                    found[name] = symbol["st_value"]
                    break
    return found


def test_this_machine_has_interpreters_to_compare() -> None:
    assert len(IMAGES) >= 2, IMAGES


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.replace("/", "_")[-48:])
def test_agrees_with_pyelftools(path: str) -> None:
    with open(path, "rb") as a, open(path, "rb") as b:
        ours, oracle = ElfFile(a), ELFFile(b)
        assert ours.e_type == oracle["e_type"]
        assert ours.machine == oracle["e_machine"]
        assert [(s.offset, s.vaddr, s.filesz) for s in ours.segments if s.type == PT_LOAD] == [
            (s["p_offset"], s["p_vaddr"], s["p_filesz"])
            for s in oracle.iter_segments()
            if s["p_type"] == "PT_LOAD"
        ]
        expected = _oracle_symbols(oracle, WANTED)
        got: dict[str, int] = {}
        for table in (".dynsym", ".symtab"):
            section = ours.section(table)
            missing = tuple(n for n in WANTED if n not in got)
            if section is not None:
                got.update(ours.symbols(section, missing))
        assert got == expected
        for name in SECTIONS:
            section, theirs = ours.section(name), oracle.get_section_by_name(name)
            assert (section is None) == (theirs is None), name
            if section is not None and theirs["sh_type"] != "SHT_NOBITS":
                assert ours.data(section) == theirs.data(), name
    if "_PyRuntime" in expected:
        # What elf.py makes of it: the runtime's address, and a version from the file.
        image = elf._parse_image(path, path)
        assert image.symbols["_PyRuntime"] == expected["_PyRuntime"]
        assert image.py_version_hex is not None or image.rodata_version is not None


def _header(cls: int = 2, order: int = 1, phnum: int = 0) -> bytes:
    """An ELF64 header; with `phnum`, program headers are promised right after it."""
    ident = b"\x7fELF" + bytes([cls, order, 1]) + bytes(9)
    return ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'#!/bin/sh\nexec python3 "$@"\n', "bad magic"),
        (_header(cls=1), "32-bit"),
        (_header(order=7), "byte order"),
        (_header()[:40], "truncated"),
        (_header(phnum=1), "truncated"),  # a program header promised where the file ends
    ],
)
def test_a_broken_file_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "libpython3.11.so.1.0"
    path.write_bytes(content)
    with open(path, "rb") as handle, pytest.raises(ElfFormatError, match=message):
        ElfFile(handle)
    with pytest.raises(elf.ElfLookupError, match=f"cannot parse ELF file {path}: .*{message}"):
        elf._parse_image(str(path), str(path))
