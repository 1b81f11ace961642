"""Per-version object layouts for the asyncio task reader, and the bounds every read obeys.

Split from the task reader (issue 14): :class:`_Layout` pulls what a pass needs out of one
version's generated table (:mod:`lifescope.probes.asyncio_offsets`) once, so the hot loops use
attributes and precompiled ``struct`` formats; a new CPython changes this file and its table,
not the walk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lifescope.probes.asyncio_offsets import AsyncioOffsets

# ---------------------------------------------------------------------------- bounds
_MAX_REFCNT = 1 << 40  # 3.12+ immortal objects read 0xFFFFFFFF; freed pymalloc blocks hold a
# free-list pointer (~0x7f...) where the refcount was, which this rejects.
_MAX_ADDRESS = 1 << 47  # x86-64 user space
_MAX_DICT_ENTRIES = 1 << 17  # sys.modules of a huge app is ~5k
_MAX_SET_SLOTS = 1 << 24  # 16M slots = 256 MB of table: refuse beyond
_TABLE_CHUNK = 1 << 16  # set table read in 64 KB pieces, stopping once max_tasks are found
_MAX_DEPTH = 64  # coroutine chain links followed per task
_MAX_STACK = 1 << 16  # value-stack slots
_MAX_STR = 1024  # characters read of a name or file path
_MAX_BYTES = 1 << 20  # line table / bytecode bytes
_MAX_TYPE_BASES = 32
_OBJ_READ = 512
"""Bytes read for an object whose type we do not know yet: covers the largest fixed struct
(Task, ≤ 200 bytes) and, for a 3.11+ coroutine, its embedded frame and usually the top of its
value stack, saving a round trip.  Reads past an object's end stay inside the allocator's
pool; if one faults, it is retried with the minimum size."""
_OBJ_MIN = 48
_BATCH = 256
"""Tasks walked together: large enough that a level costs one system call, small enough that
each task's chain is read within a few milliseconds of the task (measured under heavy churn:
with ~100k tasks/s living 0-5 ms, whole-pass levels tore ~70 % of the chains read, 256-task
batches 20-35 %, 64-task batches hardly fewer for three times the system calls)."""
_MAX_CODE_CACHE = 8192
_MAX_NAME_CACHE = 65536
_MAX_TYPE_CACHE = 4096

_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_HDR = struct.Struct("<qQ")  # ob_refcnt, ob_type

# Kinds of object a chain link can be.
_K_OTHER, _K_GEN, _K_FUTITER, _K_WRAPPER, _K_ASEND, _K_TASK, _K_FUTURE, _K_NONE, _K_DEFERRED = (
    range(9)
)


def _packed(fields: dict[str, tuple[int, str]]) -> tuple[struct.Struct, dict[str, int]]:
    """One Struct that unpacks several fields at known offsets, and each field's index.

    Why: the hot loops decode tens of thousands of objects a pass; one ``unpack_from`` of
    the fields in offset order is several times cheaper than one call per field.
    """
    ordered = sorted(fields.items(), key=lambda item: item[1][0])
    fmt = "<"
    at = 0
    index: dict[str, int] = {}
    for i, (name, (offset, code)) in enumerate(ordered):
        if offset < at:
            raise KeyError(f"field {name} at {offset} overlaps the previous one")
        if offset > at:
            fmt += f"{offset - at}x"
        fmt += code
        at = offset + struct.calcsize("<" + code)
        index[name] = i
    return struct.Struct(fmt), index


@dataclass(frozen=True, slots=True)
class _TypeInfo:
    address: int
    name: str
    basicsize: int
    flags: int
    dictoffset: int
    base: int


@dataclass(frozen=True, slots=True)
class _Code:
    qualname: str
    filename: str
    firstlineno: int
    linetable: bytes
    code: bytes
    """co_code (3.8-3.10) or co_code_adaptive (3.11/3.12): only the yield-from check reads it."""


class _Layout:
    """The numbers a pass needs, pulled out of the table once (attribute access is cheap)."""

    def __init__(self, t: AsyncioOffsets) -> None:
        self.minor = t.minor
        s = t.section
        typ = s("type")
        self.tp_name = typ["tp_name"]
        self.tp_basicsize = typ["tp_basicsize"]
        self.tp_flags = typ["tp_flags"]
        self.tp_dictoffset = typ["tp_dictoffset"]
        self.tp_base = typ["tp_base"]
        self.ht_cached_keys = typ.get("ht_cached_keys")
        self.flag_managed_dict = typ.get("flag_managed_dict", 0)
        self.flag_inline_values = typ.get("flag_inline_values", 0)
        self.type_read = max(self.tp_name, self.tp_basicsize, self.tp_flags, self.tp_base)
        self.type_read = max(self.type_read, self.tp_dictoffset) + 8
        d = s("dict")
        self.ma_used, self.ma_keys, self.ma_values = d["ma_used"], d["ma_keys"], d["ma_values"]
        self.dict_read = max(self.ma_used, self.ma_keys, self.ma_values) + 8
        self.dk = s("dictkeys")
        self.managed = s("managed") if t.has("managed") else {}
        st = s("set")
        self.set_fill, self.set_used, self.set_mask = st["fill"], st["used"], st["mask"]
        self.set_table, self.set_small = st["table"], st["smalltable"]
        self.set_entry, self.set_key, self.set_hash = (
            st["entry_size"],
            st["entry_key"],
            st["entry_hash"],
        )
        self.set_read = max(self.set_fill, self.set_used, self.set_mask, self.set_table) + 8
        self.wr_object = s("weakref")["wr_object"]
        u = s("unicode")
        self.u_length, self.u_state = u["length"], u["state"]
        self.u_ascii, self.u_compact, self.u_data = u["ascii_size"], u["compact_size"], u["data"]
        bits = s("unicode_bits")
        self.u_kind_shift, self.u_compact_bit, self.u_ascii_bit = (
            bits["kind"],
            bits["compact"],
            bits["ascii"],
        )
        self.ob_size = s("object")["ob_size"]
        flags = s("object").get("ob_flags")
        self.rc_mask = (1 << (8 * flags)) - 1 if flags else -1
        """The reference count within the first word of an object: 3.14 keeps flags in its
        top 16 bits (immortal, statically allocated), which the sanity bound must ignore."""
        self.bytes_sval = s("bytes")["ob_sval"]
        self.list_items = s("list")["ob_item"]
        self.cell_ref = s("cell")["ob_ref"]
        lg = s("long")
        self.long_digits, self.long_tag = lg["digits"], lg.get("tag")
        self.long_shift, self.long_digit = lg["shift"], lg["digit_size"]
        self.md_dict = s("module")["md_dict"]
        g = s("gen")
        self.gi_name, self.gi_qualname = g["gi_name"], g["gi_qualname"]
        # Version-specific fields are 0 where the version has no such field (never read then).
        self.gi_frame: int = g.get("gi_frame", 0)
        self.gi_code: int = g.get("gi_code", 0)
        self.gi_frame_state: int = g.get("gi_frame_state", 0)
        self.gi_iframe: int = g.get("gi_iframe", 0)
        a = s("asyncio")
        self.fut_loop, self.fut_state = a["fut_loop"], a["fut_state"]
        self.task_coro, self.task_name = a["task_coro"], a["task_name"]
        self.task_fut_waiter = a["task_fut_waiter"]
        self.state_names = {
            a["state_pending"]: "pending",
            a["state_cancelled"]: "cancelled",
            a["state_finished"]: "done",
        }
        self.futiter_future = a["futureiter_future"]
        self.wrapper_coroutine = a["wrapper_coroutine"]
        self.asend_gen = a["asend_gen"]
        self.types = s("types")
        c = s("code")
        self.co_firstlineno, self.co_filename, self.co_name = (
            c["co_firstlineno"],
            c["co_filename"],
            c["co_name"],
        )
        self.co_qualname: int = c.get("co_qualname", 0)
        self.co_linetable = c["co_linetable"]
        self.co_code: int = c.get("co_code", 0)
        self.co_code_adaptive: int = c.get("co_code_adaptive", 0)
        self.code_read = (
            self.co_code_adaptive
            if self.co_code_adaptive
            else max(v for k, v in c.items() if k != "co_code_adaptive") + 8
        )
        self.linetable_format = t.linetable_format
        self.frame_object = t.frame_model == "frame_object"
        ops = s("opcodes")
        self.yield_from_op = ops.get("yield_from")
        self.resume_ops = frozenset(ops.get("resume", ()))
        fs = s("frame_state") if t.has("frame_state") else {}
        self.fs_created = fs.get("created")
        self.fs_suspended = fs.get("suspended")
        self.fs_suspended_yf = fs.get("suspended_yield_from")
        # 3.15: a yield-from briefly "locked" while a value is sent in; still inside the await.
        self.fs_suspended_yf_locked = fs.get("suspended_yield_from_locked")
        self.fs_executing = fs.get("executing")
        if self.frame_object:
            f = s("frame")
            self.f_code, self.f_lasti = f["f_code"], f["f_lasti"]
            self.f_valuestack = f["f_valuestack"]
            # 3.8/3.9 have f_stacktop + f_executing, 3.10 f_stackdepth + f_state (-1: absent).
            self.f_stacktop: int = f.get("f_stacktop", -1)
            self.f_executing: int = f.get("f_executing", -1)
            self.f_stackdepth: int = f.get("f_stackdepth", -1)
            self.f_state: int = f.get("f_state", -1)
            self.f_localsplus = f["f_localsplus"]
            self.frame_read = _OBJ_READ
            self.lasti_unit = 1 if self.minor < 10 else 2
        else:
            i = s("iframe")
            self.if_code = self.gi_iframe + i["code"]
            self.if_instr = self.gi_iframe + i["instr"]
            # 3.11-3.13: an int index (``stacktop``); 3.14+: a pointer past the top
            # (``stackpointer``), the stack holding tagged references.
            self.stack_pointer = "stackpointer" in i
            self.if_stacktop = (
                self.gi_iframe + i["stackpointer" if self.stack_pointer else "stacktop"]
            )
            self.if_localsplus = self.gi_iframe + i["localsplus"]
        head = {"rc": (0, "q"), "tp": (8, "Q")}
        self.weakref_s, self.weakref_ix = _packed({**head, "obj": (self.wr_object, "Q")})
        self.task_s, self.task_ix = _packed(
            {
                **head,
                "loop": (self.fut_loop, "Q"),
                "state": (self.fut_state, "i"),
                "coro": (self.task_coro, "Q"),
                "name": (self.task_name, "Q"),
                "waiter": (self.task_fut_waiter, "Q"),
            }
        )
        if self.frame_object:
            self.gen_s, self.gen_ix = _packed(
                {
                    **head,
                    "frame": (self.gi_frame, "Q"),
                    "code": (self.gi_code, "Q"),
                    "qual": (self.gi_qualname, "Q"),
                }
            )
        else:
            self.gen_s, self.gen_ix = _packed(
                {
                    **head,
                    "state": (self.gi_frame_state, "b"),
                    "code": (self.if_code, "Q"),
                    "instr": (self.if_instr, "Q"),
                    "stacktop": (self.if_stacktop, "Q" if self.stack_pointer else "i"),
                }
            )
        # 3.14+: references on a frame's value stack (and its code) carry tag bits.
        tag_bits = s("iframe").get("tag_bits", 0) if t.has("iframe") else 0
        self.untag = ~tag_bits
        self.awaited_depth = s("stack")["awaited_depth"] if t.has("stack") else 1
        """Where the awaited object sits on a frame suspended in ``await``: the top (1), or
        under a NULL (3.15: 2)."""
        self.task_lists = s("task_lists") if t.has("task_lists") else None
        """3.14+: per-thread linked lists of native tasks (offsets from the headers)."""
        ip, ts, rt = s("interp"), s("tstate"), s("runtime")
        self.interp_main = rt["interpreters_main"]
        self.interp_modules = ip["modules"]
        self.interp_sysdict = ip["sysdict"]
        self.interp_threads = ip["threads_head"]
        self.interp_id = ip["id"]
        self.ts_next, self.ts_thread_id = ts["next"], ts["thread_id"]
        self.ts_native = ts.get("native_thread_id")
