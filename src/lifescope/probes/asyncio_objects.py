"""Reading CPython objects of another process: types, dicts, instance attributes, strings, ints.

Split from the task reader (issue 14): the generic object decoding the task walk builds on.
Every read is bounded and checked (type pointer, reference count); an object that does not read
back as expected raises :class:`~lifescope.probes.memory.TornRead`.
"""

from __future__ import annotations

from collections.abc import Sequence

from lifescope.probes.asyncio_layout import (
    _HDR,
    _I64,
    _K_ASEND,
    _K_FUTITER,
    _K_FUTURE,
    _K_NONE,
    _K_OTHER,
    _K_TASK,
    _K_WRAPPER,
    _MAX_ADDRESS,
    _MAX_DICT_ENTRIES,
    _MAX_REFCNT,
    _MAX_STR,
    _MAX_TYPE_BASES,
    _MAX_TYPE_CACHE,
    _U32,
    _U64,
    _Layout,
    _TypeInfo,
)
from lifescope.probes.asyncio_offsets import AsyncioOffsets
from lifescope.probes.errors import TasksUnavailable
from lifescope.probes.memory import Gather, MemoryReadError, RemoteMemory
from lifescope.probes.memory import TornRead as _Torn


class ObjectReader:
    """Object decoding over one attached process; the task reader subclasses it."""

    python_version: str
    table: AsyncioOffsets
    _l: _Layout
    _g: Gather
    _mem: RemoteMemory
    _types: dict[int, _TypeInfo]
    _known: dict[str, int]
    _kinds: dict[int, int]

    def _unavailable(self, detail: str) -> TasksUnavailable:
        return TasksUnavailable(
            f"task view unavailable for this build: {detail}",
            f"regenerate the tables with tools/gen_asyncio_offsets.py against CPython "
            f"{self.python_version}; the running task is still visible in stack samples",
        )

    def _known_name(self, role: str) -> str:
        address = self._known.get(role)
        return self._types[address].name if address in self._types else role

    def _type_of(self, obj: int) -> int:
        if not 0 < obj < _MAX_ADDRESS:
            raise _Torn(f"bad object pointer {obj:#x}")
        rc, tp = _HDR.unpack(self._g.one(obj, 16))
        if not 0 < rc & self._l.rc_mask < _MAX_REFCNT:
            raise _Torn(f"object at {obj:#x} has refcount {rc}")
        return int(tp)

    def _expect_type(self, obj: int, name: str) -> int:
        tp = self._type_of(obj)
        info = self._type(tp)
        if info.name != name:
            raise self._unavailable(f"expected a {name} at {obj:#x}, found {info.name!r}")
        return tp

    def _validate_type(self, role: str, address: int) -> None:
        info = self._type(address)
        expected = self._l.types[role]
        if info.name != expected["tp_name"]:
            raise self._unavailable(
                f"{role} type is named {info.name!r}, not {expected['tp_name']!r}"
            )
        self._validate_basicsize(role, info)
        self._known[role] = address

    def _validate_basicsize(self, role: str, info: _TypeInfo) -> None:
        expected = self._l.types[role]["basicsize"]
        if info.basicsize != expected:
            raise self._unavailable(
                f"{info.name} instances are {info.basicsize} bytes, the table (from "
                f"{self.table.generated_from}) says {expected}"
            )

    def _type(self, address: int) -> _TypeInfo:
        """Type object at ``address`` (cached; type objects live as long as their class)."""
        hit = self._types.get(address)
        if hit is not None:
            return hit
        lay = self._l
        raw = self._g.one(address, lay.type_read)
        name_ptr = _U64.unpack_from(raw, lay.tp_name)[0]
        try:
            name = self._mem.read_cstring(name_ptr, 128).decode("utf-8", "replace")
        except MemoryReadError as exc:
            raise _Torn(f"type name unreadable at {name_ptr:#x}") from exc
        info = _TypeInfo(
            address=address,
            name=name,
            basicsize=_I64.unpack_from(raw, lay.tp_basicsize)[0],
            flags=_U64.unpack_from(raw, lay.tp_flags)[0],
            dictoffset=_I64.unpack_from(raw, lay.tp_dictoffset)[0],
            base=_U64.unpack_from(raw, lay.tp_base)[0],
        )
        if len(self._types) >= _MAX_TYPE_CACHE:  # classes created at runtime: keep the known
            keep = {a: self._types[a] for a in self._known.values() if a in self._types}
            self._types = keep
        self._types[address] = info
        return info

    def _kind(self, tp: int) -> int:
        """Classify an object's type for the chain walk; subclasses of Task/Future count."""
        kind = self._kinds.get(tp)
        if kind is not None:
            return kind
        info = self._type(tp)
        kind = _K_OTHER
        if info.name == "_asyncio.FutureIter" or info.name == "FutureIter":
            kind = _K_FUTITER
        elif info.name == "coroutine_wrapper":
            kind = _K_WRAPPER
        elif info.name == "async_generator_asend":
            kind = _K_ASEND
        elif info.name == "NoneType":
            kind = _K_NONE
        else:
            base, hops = info.base, 0
            while base and hops < _MAX_TYPE_BASES:
                if base == self._known.get("Task"):
                    kind = _K_TASK
                    break
                if base == self._known.get("Future"):
                    kind = _K_FUTURE
                    break
                base = self._type(base).base
                hops += 1
        if len(self._kinds) < _MAX_TYPE_CACHE:
            self._kinds[tp] = kind
        return kind

    # ------------------------------------------------------------------ dicts & attributes
    def _dict_entries(self, d: int) -> list[tuple[int, int]]:
        """(key, value) pointers of a dict, in insertion order (bounded)."""
        lay = self._l
        raw = self._g.one(d, lay.dict_read)
        keys = _U64.unpack_from(raw, lay.ma_keys)[0]
        values = _U64.unpack_from(raw, lay.ma_values)[0]
        return self._keys_entries(keys, values)

    def _keys_entries(self, keys: int, values: int) -> list[tuple[int, int]]:
        lay = self._l
        dk = lay.dk
        head = self._g.one(keys, dk["indices"])
        if lay.minor < 11:
            size = _I64.unpack_from(head, dk["size"])[0]
            if size < 8 or size & (size - 1) or size > _MAX_DICT_ENTRIES * 2:
                raise _Torn(f"dict keys size {size}")
            ix = 1 if size <= 0xFF else 2 if size <= 0xFFFF else 4 if size <= 0xFFFFFFFF else 8
            start = keys + dk["indices"] + size * ix
            esize, ekey, evalue = dk["entry_size"], dk["entry_key"], dk["entry_value"]
        else:
            log2_index = head[dk["log2_index_bytes"]]
            kind = head[dk["kind"]]
            if log2_index > 24:
                raise _Torn(f"dict index bytes 2**{log2_index}")
            start = keys + dk["indices"] + (1 << log2_index)
            if kind == dk["kind_general"]:
                esize, ekey, evalue = dk["entry_size"], dk["entry_key"], dk["entry_value"]
            else:
                esize, ekey, evalue = dk["uentry_size"], dk["uentry_key"], dk["uentry_value"]
        n = _I64.unpack_from(head, dk["nentries"])[0]
        if not 0 <= n <= _MAX_DICT_ENTRIES:
            raise _Torn(f"dict with {n} entries")
        if n == 0:
            return []
        table = self._g.one(start, n * esize)
        vals: bytes | None = None
        if values:
            base = values + lay.managed.get("values_array", 0)
            vals = self._g.one(base, n * 8)
        out: list[tuple[int, int]] = []
        for i in range(n):
            key = _U64.unpack_from(table, i * esize + ekey)[0]
            if vals is not None:
                value = _U64.unpack_from(vals, i * 8)[0]
            else:
                value = _U64.unpack_from(table, i * esize + evalue)[0]
            if key and value:
                out.append((key, value))
        return out

    def _dict_str_items(self, d: int, wanted: set[str] | None) -> dict[str, int]:
        """str-keyed items of a dict (all, or only ``wanted`` names)."""
        entries = self._dict_entries(d)
        names = self._read_strs([k for k, _ in entries])
        out: dict[str, int] = {}
        for (_, value), name in zip(entries, names, strict=True):
            if name is not None and (wanted is None or name in wanted):
                out[name] = value
        return out

    def _instance_attr(self, obj: int, info: _TypeInfo, name: str) -> int | None:
        """An attribute from an instance's ``__dict__``, however this version stores it.

        3.8-3.10: a dict at ``tp_dictoffset``.  3.11: a materialised dict in the pre-header, or
        a values array indexed like the class's shared keys.  3.12: one pre-header word that is
        either the dict or (tagged with bit 0) the values.  3.13: values inline after the
        object while ``valid``, else the materialised dict.
        """
        lay = self._l
        wanted = {name}
        if lay.minor < 11 or not info.flags & lay.flag_managed_dict:
            if info.dictoffset <= 0:
                return None
            d = self._mem.read_pointer(obj + info.dictoffset)
            return self._dict_str_items(d, wanted).get(name) if d else None
        m = lay.managed
        word = self._mem.read_pointer(obj + m["dict"])
        values = 0
        if lay.minor == 11:
            if word:
                return self._dict_str_items(word, wanted).get(name)
            values = self._mem.read_pointer(obj + m["values_pointer"])
        elif m.get("tagged"):
            if word and not word & 1:
                return self._dict_str_items(word, wanted).get(name)
            values = word + 1 if word else 0
        else:
            if info.flags & lay.flag_inline_values:
                inline = obj + info.basicsize
                valid = self._g.one(inline + m["valid"], 1)[0]
                if valid:
                    values = inline
            if not values:
                return self._dict_str_items(word, wanted).get(name) if word else None
        if not values or lay.ht_cached_keys is None:
            return None
        keys = self._mem.read_pointer(info.address + lay.ht_cached_keys)
        if not keys:
            return None
        entries = self._keys_entries(keys, values)
        names = self._read_strs([k for k, _ in entries])
        for (_, value), key_name in zip(entries, names, strict=True):
            if key_name == name:
                return value
        return None

    # ------------------------------------------------------------------ strings & ints
    def _decode_str(self, address: int, raw: bytes) -> str | None:
        lay = self._l
        rc, tp = _HDR.unpack_from(raw, 0)
        if tp != self._known.get("str", tp) or not 0 < rc & self._l.rc_mask < _MAX_REFCNT:
            return None
        length = _I64.unpack_from(raw, lay.u_length)[0]
        state = _U32.unpack_from(raw, lay.u_state)[0]
        kind = (state >> lay.u_kind_shift) & 7
        if kind not in (1, 2, 4) or not 0 <= length <= _MAX_STR * 64:
            return None
        length = min(length, _MAX_STR)
        if (state >> lay.u_compact_bit) & 1:
            offset = lay.u_ascii if (state >> lay.u_ascii_bit) & 1 else lay.u_compact
            start = address + offset
            data = raw[offset : offset + length * kind]
            if len(data) < length * kind:
                try:
                    data = self._g.one(start, length * kind)
                except _Torn:
                    return None
        else:
            pointer = _U64.unpack_from(self._g.one(address + lay.u_data, 8), 0)[0]
            try:
                data = self._g.one(pointer, length * kind)
            except _Torn:
                return None
        codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            return None

    def _read_strs(self, addresses: Sequence[int]) -> list[str | None]:
        size = self._l.u_compact + 96
        raws = self._g.read([(a, size) for a in addresses], min_size=self._l.u_compact)
        return [
            None if raw is None else self._decode_str(a, raw)
            for a, raw in zip(addresses, raws, strict=True)
        ]

    def _decode_int(self, raw: bytes) -> int | None:
        lay = self._l
        if lay.long_tag is not None:
            tag = _U64.unpack_from(raw, lay.long_tag)[0]
            ndigits = tag >> 3
            negative = (tag & 3) == 2
        else:
            size = _I64.unpack_from(raw, lay.ob_size)[0]
            ndigits = abs(size)
            negative = size < 0
        if ndigits > 4 or lay.long_digits + ndigits * lay.long_digit > len(raw):
            return None
        value = 0
        for i in range(ndigits):
            digit = _U32.unpack_from(raw, lay.long_digits + i * lay.long_digit)[0]
            value |= digit << (lay.long_shift * i)
        return -value if negative else value
