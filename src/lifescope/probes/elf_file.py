"""Just enough of an ELF reader for `elf.py`: the header, the loadable segments, sections by
name, and a few symbols by name.

Why our own instead of pyelftools (issue 17): attaching looked up two symbols in libpython
with pyelftools, which parses every symbol of the table through Construct to find one —
~60 ms of CPU per lookup, done by two probes at once, half of ``lifescope record``'s start-up.
Here a symbol is found by searching the string table for its name first and then scanning
the fixed-size symbol entries with ``struct.iter_unpack``, a few milliseconds even for a
15,000-symbol ``.symtab``. It also runs on the 3.8 and 3.9 hosts a remote collector may find,
where pyelftools 0.32+ does not.

Only ELF64 (both byte orders) is read: every interpreter lifescope's offset tables describe
is a 64-bit build. The file is untrusted input (a replaced or truncated library): every
offset is bounds-checked and anything that does not hold together raises `ElfFormatError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

PT_LOAD = 1
SHT_SYMTAB = 2
SHT_NOBITS = 8
SHT_DYNSYM = 11
SHF_ALLOC = 0x2
SHN_UNDEF = 0

_TYPES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_MACHINES = {3: "EM_386", 40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}
_MAX_TABLE = 1 << 16
"""More program or section headers than this is not a file a linker made."""


class ElfFormatError(Exception):
    """The file is not an ELF64 image this reader can follow."""


@dataclass(frozen=True)
class Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    entsize: int


class ElfFile:
    """One open ELF64 file; the caller owns (and closes) the stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        stream.seek(0)
        ident = stream.read(64)
        if ident[:4] != b"\x7fELF":
            raise ElfFormatError("not an ELF file (bad magic)")
        if len(ident) < 64:
            raise ElfFormatError(f"truncated: the file ends at byte {len(ident)}, in its header")
        if ident[4] != 2:
            raise ElfFormatError("a 32-bit ELF file (only 64-bit interpreters are read)")
        if ident[5] not in (1, 2):
            raise ElfFormatError(f"unknown ELF byte order {ident[5]}")
        self._order = "<" if ident[5] == 1 else ">"
        header = struct.unpack(self._order + "HHIQQQIHHHHHH", ident[16:64])
        e_type, e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum = header[:10]
        e_shentsize, e_shnum, e_shstrndx = header[10:]
        self.e_type = _TYPES.get(e_type, f"ET_{e_type}")
        self.machine = _MACHINES.get(e_machine, f"EM_{e_machine}")
        self.segments = self._segments(e_phoff, e_phentsize, e_phnum)
        self._shoff, self._shentsize, self._shnum = e_shoff, e_shentsize, e_shnum
        self._shstrndx = e_shstrndx
        self._sections: tuple[Section, ...] | None = None

    def _read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ElfFormatError("negative offset or size")
        self.stream.seek(offset)
        data = self.stream.read(size)
        if len(data) != size:
            raise ElfFormatError(f"truncated: {size} bytes at {offset:#x} are past the end")
        return data

    def _table(self, offset: int, entsize: int, count: int, fmt: str) -> list[tuple[int, ...]]:
        """`count` fixed-size headers at `offset`, each unpacked with `fmt` (its prefix)."""
        need = struct.calcsize(self._order + fmt)
        if count > _MAX_TABLE or (count and entsize < need):
            raise ElfFormatError(f"implausible header table ({count} entries of {entsize} bytes)")
        raw = self._read(offset, entsize * count)
        return [struct.unpack_from(self._order + fmt, raw, i * entsize) for i in range(count)]

    def _segments(self, offset: int, entsize: int, count: int) -> tuple[Segment, ...]:
        rows = self._table(offset, entsize, count, "IIQQQQ")
        return tuple(Segment(p_type, p_offset, p_vaddr, p_filesz)
                     for p_type, _, p_offset, p_vaddr, _, p_filesz in rows)  # fmt: skip

    @property
    def sections(self) -> tuple[Section, ...]:
        if self._sections is None:
            rows = self._table(self._shoff, self._shentsize, self._shnum, "IIQQQQIIQQ")
            names = b""
            if 0 < self._shstrndx < len(rows):
                strtab = rows[self._shstrndx]
                names = self._read(strtab[4], strtab[5])
            self._sections = tuple(
                Section(_name(names, sh_name), sh_type, sh_flags, sh_offset, sh_size, sh_link,
                        sh_entsize)
                for sh_name, sh_type, sh_flags, _, sh_offset, sh_size, sh_link, _, _, sh_entsize
                in rows
            )  # fmt: skip
        return self._sections

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def data(self, section: Section) -> bytes:
        """The section's bytes in the file (empty for a NOBITS section such as .bss)."""
        if section.type == SHT_NOBITS:
            return b""
        return self._read(section.offset, section.size)

    def symbols(self, section: Section, names: tuple[str, ...]) -> dict[str, int]:
        """Link-time values of the `names` that `section` (a symbol table) defines.

        The string table is searched for each name first; only entries whose name offset is
        one of those places are looked at (names may share a tail with a longer name, so
        every occurrence counts, not just those after a NUL)."""
        if section.type not in (SHT_SYMTAB, SHT_DYNSYM) or not 0 < section.link < len(
            self.sections
        ):
            return {}
        strings = self.data(self.sections[section.link])
        wanted: dict[int, str] = {}
        for wanted_name in names:
            needle = wanted_name.encode() + b"\0"
            at = strings.find(needle)
            while at >= 0:
                wanted[at] = wanted_name
                at = strings.find(needle, at + 1)
        if not wanted:
            return {}
        entsize = section.entsize or 24
        if entsize < 24:
            raise ElfFormatError(f"symbol entries of {entsize} bytes")
        table = self.data(section)
        table = table[: len(table) - len(table) % entsize]
        fmt = self._order + "IBBHQQ" + (f"{entsize - 24}x" if entsize > 24 else "")
        found: dict[str, int] = {}
        for st_name, _, _, st_shndx, st_value, _ in struct.iter_unpack(fmt, table):
            name = wanted.get(st_name)
            if name is not None and name not in found and st_shndx != SHN_UNDEF and st_value:
                found[name] = st_value
        return found

    def read_vaddr(self, vaddr: int, size: int) -> bytes | None:
        """Initialised bytes at a link-time address (None if they are not in the file, e.g. in
        .bss)."""
        for seg in self.segments:
            if (
                seg.type == PT_LOAD
                and seg.vaddr <= vaddr
                and vaddr + size <= seg.vaddr + seg.filesz
            ):
                return self._read(seg.offset + (vaddr - seg.vaddr), size)
        return None


def _name(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode(errors="replace")
