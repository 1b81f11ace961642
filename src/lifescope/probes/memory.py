"""Read another process's memory with ``process_vm_readv`` — never stopping it.

Why ``process_vm_readv`` and not ``ptrace``/``/proc/PID/mem``: it copies straight from the
target's address space without attaching, so the target is never paused (a production server
must not notice us), and one system call can gather several scattered regions.  It needs the
same permission as ptrace (``PTRACE_MODE_ATTACH_REALCREDS``: same uid and no stricter Yama
policy, or ``CAP_SYS_PTRACE``), and a failure tells us precisely why, which we keep: EPERM means
"not allowed", ESRCH means "the process is gone", EFAULT means "that address is not mapped".

The hot path (the GIL probe reads the same 32 bytes 1000-2000 times a second) uses
:meth:`RemoteMemory.prepare`, which builds the ``iovec`` structs once, so a read costs one
ctypes call plus one system call.  The asyncio task reader's many small objects go through
:class:`Gather` instead (thousands of scattered regions per call, each allowed to fail alone).
Both share the one ``process_vm_readv`` binding below.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import os
import struct
from collections.abc import Sequence

from lifescope.probes.errors import ReaderUnavailable

__all__ = [
    "Gather",
    "MemoryReadError",
    "PartialReadError",
    "PreparedRead",
    "ProcessGoneError",
    "ReadPermissionError",
    "RemoteMemory",
    "TornRead",
]

# Linux refuses more than IOV_MAX iovecs per call; reads of many regions are chunked.
_IOV_MAX = 1024


class MemoryReadError(OSError):
    """A read of the target's memory failed; ``errno``/``strerror`` say why.

    ``address`` and ``size`` name the first region that was requested, so a message can say
    what we were trying to read.
    """

    def __init__(self, err: int, message: str, pid: int, address: int, size: int) -> None:
        super().__init__(err, message)
        self.pid = pid
        self.address = address
        self.size = size

    def __str__(self) -> str:
        return f"{self.strerror} (pid {self.pid}, {self.size} bytes at {self.address:#x})"


class ReadPermissionError(MemoryReadError):
    """EPERM: we may not read this process (other user, Yama ptrace_scope, no CAP_SYS_PTRACE)."""


class ProcessGoneError(MemoryReadError):
    """ESRCH: the process has exited (or never existed)."""


class PartialReadError(MemoryReadError):
    """The kernel copied fewer bytes than asked: part of the range is unmapped (EFAULT)."""


class _IOVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


def _load_libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    return ctypes.CDLL(name, use_errno=True)


def _bind(remote: type) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """``process_vm_readv`` with the remote iovecs typed as ``remote``: an ``_IOVec`` array
    (built once per :class:`PreparedRead`) or a packed buffer (built per :class:`Gather`
    call with one ``struct.pack``)."""
    fn = getattr(_load_libc(), "process_vm_readv", None)
    if fn is None:  # pragma: no cover - glibc < 2.15 or a libc without the wrapper
        return None
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = (
        ctypes.c_int,
        ctypes.POINTER(_IOVec),
        ctypes.c_ulong,
        remote,
        ctypes.c_ulong,
        ctypes.c_ulong,
    )
    return fn


_process_vm_readv = _bind(ctypes.POINTER(_IOVec))
_process_vm_readv_packed = _bind(ctypes.c_void_p)

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


def _error(err: int, pid: int, address: int, size: int) -> MemoryReadError:
    """Map an errno to the most specific exception, with a message a user can act on."""
    if err == errno.EPERM:
        return ReadPermissionError(
            err,
            "permission denied reading process memory "
            "(run as the target's user or root, or grant CAP_SYS_PTRACE)",
            pid,
            address,
            size,
        )
    if err == errno.ESRCH:
        return ProcessGoneError(err, "no such process (it has exited)", pid, address, size)
    if err == errno.EFAULT:
        return PartialReadError(err, "address not mapped in the target", pid, address, size)
    if err == errno.ENOSYS:
        return MemoryReadError(err, "process_vm_readv is not available here", pid, address, size)
    return MemoryReadError(err, os.strerror(err), pid, address, size)


class PreparedRead:
    """A fixed set of remote regions read into one reusable buffer with one system call.

    Why: building iovecs and a buffer per read would cost more than the system call itself at
    kHz rates.  :meth:`read` returns a view-free ``bytes`` copy; :meth:`read_into_buffer` skips
    even that copy and returns the internal buffer (valid until the next call).
    """

    __slots__ = ("_buf", "_local", "_pid", "_regions", "_remote", "_total", "size")

    @property
    def regions(self) -> tuple[tuple[int, int], ...]:
        """The remote (address, size) regions, in the order they are gathered."""
        return self._regions

    def __init__(self, pid: int, regions: Sequence[tuple[int, int]]) -> None:
        if not regions:
            raise ValueError("no regions")
        if len(regions) > _IOV_MAX:
            raise ValueError(f"at most {_IOV_MAX} regions per prepared read")
        self._pid = pid
        self._regions = tuple(regions)
        self._total = sum(size for _, size in regions)
        self.size = self._total
        self._buf = ctypes.create_string_buffer(self._total)
        self._local = (_IOVec * 1)()
        self._local[0].iov_base = ctypes.addressof(self._buf)
        self._local[0].iov_len = self._total
        self._remote = (_IOVec * len(regions))()
        for i, (addr, size) in enumerate(regions):
            self._remote[i].iov_base = addr
            self._remote[i].iov_len = size

    def read_into_buffer(self) -> ctypes.Array[ctypes.c_char]:
        """Read all regions (concatenated) into the internal buffer and return it."""
        if _process_vm_readv is None:  # pragma: no cover
            raise _error(errno.ENOSYS, self._pid, self._regions[0][0], self._total)
        n = _process_vm_readv(self._pid, self._local, 1, self._remote, len(self._regions), 0)
        if n != self._total:
            if n < 0:
                raise _error(ctypes.get_errno(), self._pid, *self._regions[0])
            raise _error(errno.EFAULT, self._pid, *self._regions[0])
        return self._buf

    def read(self) -> bytes:
        """Read all regions and return them concatenated."""
        return self.read_into_buffer().raw


class RemoteMemory:
    """Read-only access to one process's memory by pid.

    Nothing here attaches to or signals the target; every method is a ``process_vm_readv``.
    Integers are little-endian (x86-64 / aarch64).
    """

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        if pid <= 0:
            raise ValueError(f"invalid pid {pid}")
        self.pid = pid

    def read(self, address: int, size: int) -> bytes:
        """Read ``size`` bytes at ``address``; raise :class:`MemoryReadError` unless all arrive."""
        if size == 0:
            return b""
        if address <= 0 or size < 0:
            raise _error(errno.EFAULT, self.pid, address, size)
        return PreparedRead(self.pid, ((address, size),)).read()

    def read_many(self, regions: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read several regions with as few system calls as possible (one per 1024 regions).

        All-or-nothing: if any region is unmapped the whole call fails (the kernel stops at the
        first bad remote iovec), so callers that may hit freed memory should read one by one.
        """
        out: list[bytes] = []
        for start in range(0, len(regions), _IOV_MAX):
            chunk = regions[start : start + _IOV_MAX]
            for addr, size in chunk:
                if addr <= 0 or size <= 0:
                    raise _error(errno.EFAULT, self.pid, addr, size)
            data = PreparedRead(self.pid, chunk).read()
            pos = 0
            for _, size in chunk:
                out.append(data[pos : pos + size])
                pos += size
        return out

    def prepare(self, regions: Sequence[tuple[int, int]]) -> PreparedRead:
        """Build a reusable reader for fixed regions (the hot path of a kHz probe)."""
        return PreparedRead(self.pid, regions)

    def read_u64(self, address: int) -> int:
        return _U64.unpack(self.read(address, 8))[0]

    def read_i64(self, address: int) -> int:
        return _I64.unpack(self.read(address, 8))[0]

    def read_u32(self, address: int) -> int:
        return _U32.unpack(self.read(address, 4))[0]

    def read_i32(self, address: int) -> int:
        return _I32.unpack(self.read(address, 4))[0]

    def read_pointer(self, address: int) -> int:
        """A 64-bit pointer (0 for NULL)."""
        return self.read_u64(address)

    def read_cstring(self, address: int, limit: int = 256) -> bytes:
        """Bytes up to the first NUL (at most ``limit``); reads page by page to avoid EFAULT."""
        out = bytearray()
        while len(out) < limit:
            page_left = 4096 - ((address + len(out)) % 4096)
            chunk = self.read(address + len(out), min(page_left, limit - len(out)))
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return bytes(out)
            out += chunk
        return bytes(out)


class TornRead(Exception):
    """An object did not read back as what we expected (freed, reused, mid-update)."""


_MAX_ADDRESS = 1 << 47  # x86-64 user space: anything above is not a pointer we can read
_MAX_GATHER = 64 << 20  # bytes per system call: a torn size must not allocate gigabytes


class Gather:
    """Scattered reads of many small regions, up to 1024 per ``process_vm_readv``.

    Why not :class:`PreparedRead`: that builds its iovec array field by field, which for
    thousands of 64-byte regions costs more than the system call; here the remote iovecs are
    packed with one ``struct.pack``.  A region that faults (the object was freed and its page
    unmapped — rare, pools stay mapped) fails alone: the kernel stops at the first bad remote
    iovec and reports how many bytes it copied, so the regions before it are kept and the
    walk resumes after it.

    A lost target or permission raises the owning reader's own ``error`` (``gone``,
    ``denied``): a pass cannot go on, and the probe reports it as its status.
    """

    __slots__ = ("error", "pid", "regions_read", "syscalls")

    def __init__(self, pid: int, error: type[ReaderUnavailable]) -> None:
        self.pid = pid
        self.error = error
        self.syscalls = 0
        self.regions_read = 0

    def _fail(self, err: int, address: int, size: int) -> None:
        if err == errno.ESRCH:
            raise self.error.gone(self.pid, "")
        if err == errno.EPERM:
            raise self.error.denied(self.pid)

    def read(self, regions: Sequence[tuple[int, int]], min_size: int = 0) -> list[bytes | None]:
        """Each region's bytes, or None where it could not be read.

        A region that faults is retried alone at ``min_size`` bytes when that is smaller (the
        caller over-reads unknown objects and can live with less).
        """
        count = len(regions)
        out: list[bytes | None] = [None] * count
        retry: list[int] = []
        start = 0
        while start < count:
            end = min(count, start + _IOV_MAX)
            chunk = regions[start:end]
            bad = next(
                (k for k, (a, n) in enumerate(chunk) if not (0 < a < _MAX_ADDRESS and n > 0)),
                -1,
            )
            if bad == 0:  # a NULL or non-canonical pointer: unreadable by definition
                start += 1
                continue
            if bad > 0:
                chunk = chunk[:bad]
                end = start + bad
            sizes = [n for _, n in chunk]
            total = sum(sizes)
            if total > _MAX_GATHER:
                raise TornRead(f"refusing to read {total} bytes at once")
            buf = ctypes.create_string_buffer(total)
            local = _IOVec(ctypes.addressof(buf), total)
            remote = struct.pack(f"<{2 * len(chunk)}Q", *itertools.chain.from_iterable(chunk))
            if _process_vm_readv_packed is None:  # pragma: no cover
                raise self.error("process_vm_readv is not available", "use Linux ≥ 3.2")
            got = _process_vm_readv_packed(self.pid, ctypes.byref(local), 1, remote, len(chunk), 0)
            self.syscalls += 1
            if got < 0:
                self._fail(ctypes.get_errno(), *chunk[0])
                got = 0
            data = buf.raw
            if got == total:
                offsets = itertools.accumulate(sizes, initial=0)
                out[start:end] = [data[o : o + n] for o, n in zip(offsets, sizes, strict=False)]
                self.regions_read += len(chunk)
                start = end
                continue
            # The kernel stopped at a faulting region: keep the complete ones before it, and
            # resume right after it.
            offset = done = 0
            for n in sizes:
                if offset + n > got:
                    break
                out[start + done] = data[offset : offset + n]
                offset += n
                done += 1
            self.regions_read += done
            retry.append(start + done)
            start += done + 1
        for i in retry:
            addr, size = regions[i]
            for attempt in (size, min_size):
                if attempt <= 0 or (attempt == min_size and min_size >= size):
                    continue
                buf = ctypes.create_string_buffer(attempt)
                local = _IOVec(ctypes.addressof(buf), attempt)
                remote = struct.pack("<QQ", addr, attempt)
                got = _process_vm_readv_packed(self.pid, ctypes.byref(local), 1, remote, 1, 0)  # type: ignore[misc]
                self.syscalls += 1
                if got == attempt:
                    out[i] = buf.raw
                    self.regions_read += 1
                    break
                if got < 0:
                    self._fail(ctypes.get_errno(), addr, attempt)
        return out

    def one(self, address: int, size: int) -> bytes:
        """One region; raise :class:`TornRead` if it cannot be read."""
        data = self.read([(address, size)])[0]
        if data is None:
            raise TornRead(f"unreadable {size} bytes at {address:#x}")
        return data
