"""Per-process socket facts from ``/proc``: the fd→socket map, fd usage, and the TCP table fallback.

Why ``/proc`` at all when we have sock_diag (:mod:`lifescope.probes.netlink_diag`):

* only ``/proc/PID/fd`` says which sockets belong to *this* process (inode → fd). Neither netlink
  nor ``/proc/net/tcp`` knows about processes. A readlink per fd costs ~6 µs (59 ms at 10k fds), so
  callers refresh this map at most once a second and join on ``inode`` in between.
* ``/proc/PID/net/tcp{,6}`` is served from the *target's* network namespace with no privilege beyond
  reading the file, so it is the fallback when we may not ``setns`` into a container's namespace or
  netlink is blocked. It is ~2× slower than netlink at 10k connections, has no ``tcp_info``, and for
  LISTEN rows carries the accept-queue length but not the backlog (see :func:`read_proc_net_tcp`).
* ``/proc/PID/net/netstat`` holds ``ListenOverflows``/``ListenDrops``: the only proof that the
  kernel dropped connections because the accept queue was full. They are per network namespace, not
  per process, so take deltas and attribute them to the target only when it owns the listeners.

A vanished target raises :class:`FileNotFoundError` and a foreign one :class:`PermissionError`, as
the OS reports them; callers turn those into probe status.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import socket
import struct
from collections.abc import Iterable, Mapping
from typing import Final

from lifescope.probes.netlink_diag import TCP_STATES, TcpSocket, make_tcp_socket

__all__ = [
    "fd_usage",
    "listen_backlogs",
    "listen_counters",
    "read_proc_net_tcp",
    "socket_inodes",
    "tcpext_counters",
]

_SOCKET_PREFIX: Final = "socket:["
# seq_file fills the whole buffer per read(): big reads mean fewer syscalls and iterator restarts
_READ_CHUNK: Final = 1 << 20
_SYS_PIDFD_GETFD: Final = 438  # same number on every architecture using the unified syscall table
_TCP_LISTEN: Final = 10
# tcp_info of a listener: tcpi_state, tcpi_unacked (= accept queue), tcpi_sacked (= backlog)
_TCPI_LISTEN = struct.Struct("=B23xII")

_libc: ctypes.CDLL | None = None


# --- fds ------------------------------------------------------------------------------------------


def socket_inodes(pid: int) -> dict[int, int]:
    """Map socket inode → fd number for every socket fd the process holds.

    Reads the fd directory once and readlinks each entry relative to it (``dir_fd``), so the kernel
    does not re-resolve ``/proc/PID/fd`` per fd. Fds closed between listing and readlink are
    skipped: the target keeps running while we look. When the same socket is open under several fds
    the lowest fd wins.
    """
    dfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    out: dict[int, int] = {}
    try:
        readlink = os.readlink
        prefix = _SOCKET_PREFIX
        for name in os.listdir(dfd):
            try:
                target = readlink(name, dir_fd=dfd)
            except FileNotFoundError:  # fd closed under us
                continue
            if target.startswith(prefix):
                inode = int(target[8:-1])
                fd = int(name)
                prev = out.get(inode)
                if prev is None or fd < prev:
                    out[inode] = fd
    finally:
        os.close(dfd)
    return out


def fd_usage(pid: int) -> tuple[int, int | None]:
    """``(open fds, soft RLIMIT_NOFILE)`` of the process; the limit is ``None`` when unlimited.

    Running out of fds makes ``accept()`` fail with EMFILE while the listen queue fills, which looks
    exactly like a slow server from outside; showing usage against the limit tells the two apart.
    The limit comes from ``/proc/PID/limits`` because ``prlimit`` on another process needs
    CAP_SYS_RESOURCE-or-same-uid *and* may be blocked by seccomp, while the file is plain text.
    """
    fd_dir = f"/proc/{pid}/fd"
    # Linux 6.2+ reports the number of open fds as the directory's size: one stat instead of
    # listing 10k entries (~15 ms). Older kernels say 0, and then we count.
    count = os.stat(fd_dir).st_size or len(os.listdir(fd_dir))
    soft: int | None = None
    with open(f"/proc/{pid}/limits", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Max open files"):
                value = line[len("Max open files") :].split()[0]
                soft = None if value == "unlimited" else int(value)
                break
    return count, soft


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    syscall = _libc.syscall
    syscall.restype = ctypes.c_long
    res = syscall(ctypes.c_long(_SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), 0)
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(res)


def listen_backlogs(pid: int, fds: Iterable[int]) -> dict[int, tuple[int, int]]:
    """``fd → (accept queue length, backlog)`` for listening TCP sockets of another process.

    ``/proc/net/tcp`` does not print the backlog, yet "5 of 4" versus "5 of 4096" is the whole L1
    story. Without netlink we can still ask the socket itself: ``pidfd_getfd(2)`` (Linux 5.6+, needs
    ptrace-attach permission, the same as py-spy) duplicates the target's fd into *our* process
    without stopping or touching the target, ``TCP_INFO`` on a listener reports ``sk_ack_backlog``
    in ``tcpi_unacked`` and ``sk_max_ack_backlog`` in ``tcpi_sacked``, and we close our duplicate
    at once. Fds that are gone, not TCP listeners, or not permitted are silently left out.
    """
    out: dict[int, tuple[int, int]] = {}
    fd_list = list(fds)
    if not fd_list:
        return out
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return out
    try:
        pidfd = pidfd_open(pid)
    except OSError:
        return out
    try:
        for fd in fd_list:
            try:
                local_fd = _pidfd_getfd(pidfd, fd)
            except OSError as exc:
                if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES, errno.ESRCH):
                    break  # no point trying the other fds
                continue  # EBADF: closed under us
            try:
                sock = socket.socket(fileno=local_fd)
            except OSError:  # not a socket after all; socket() leaves the fd open on failure
                os.close(local_fd)
                continue
            try:
                raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_LISTEN.size)
            except OSError:
                continue  # not TCP
            finally:
                sock.close()
            if len(raw) >= _TCPI_LISTEN.size:
                state, queue, backlog = _TCPI_LISTEN.unpack_from(raw)
                if state == _TCP_LISTEN:
                    out[fd] = (queue, backlog)
    finally:
        os.close(pidfd)
    return out


# --- the TCP table --------------------------------------------------------------------------------


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


_addr_cache: dict[bytes, str] = {}
_ADDR_CACHE_MAX: Final = 8192
_WORD = struct.Struct("=I")


def _proc_addr(hexaddr: bytes) -> str:
    """Text form of a /proc/net/tcp address column (without the port), memoised.

    The kernel prints each 32-bit word of the network-order address as a *native* integer with
    ``%08X``, so every word has to be packed back in native order before ``inet_ntop``.
    """
    text = _addr_cache.get(hexaddr)
    if text is None:
        pack = _WORD.pack
        if len(hexaddr) == 8:
            text = socket.inet_ntop(socket.AF_INET, pack(int(hexaddr, 16)))
        else:
            raw = b"".join(pack(int(hexaddr[i : i + 8], 16)) for i in range(0, 32, 8))
            text = "[" + socket.inet_ntop(socket.AF_INET6, raw) + "]"
        if len(_addr_cache) >= _ADDR_CACHE_MAX:
            _addr_cache.clear()
        _addr_cache[hexaddr] = text
    return text


def _parse_table(data: bytes, family: int, out: list[TcpSocket]) -> list[int]:
    """Append one /proc/net/tcp{,6} table to ``out``; return the indexes of its LISTEN rows."""
    listen_rows: list[int] = []
    addr = _proc_addr
    states = TCP_STATES
    append = out.append
    make = make_tcp_socket
    lines = data.split(b"\n")
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local = parts[1]
        remote = parts[2]
        queues = parts[4]
        st = int(parts[3], 16)
        lport = int(local[-4:], 16)
        rport = int(remote[-4:], 16)
        if st == _TCP_LISTEN:
            listen_rows.append(len(out))
            send_q: int | None = None  # tx_queue is 0 here, not the backlog
        else:
            send_q = int(queues[:8], 16)
        append(
            make(
                family,
                states.get(st) or str(st),
                f"{addr(local[:-5])}:{lport}",
                f"{addr(remote[:-5])}:{rport}",
                lport,
                rport,
                int(parts[9]),
                int(queues[9:], 16),
                send_q,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            )
        )
    return listen_rows


def read_proc_net_tcp(
    pid: int,
    *,
    families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
    fd_by_inode: Mapping[int, int] | None = None,
) -> list[TcpSocket]:
    """Parse ``/proc/PID/net/tcp{,6}`` (the target's namespace) into :class:`TcpSocket` rows.

    Like the netlink reader, this lists the whole namespace, not just the target's sockets; join on
    ``inode`` with :func:`socket_inodes` to keep the target's own. ``tcp_info`` fields are ``None``.

    ``recv_q``/``send_q`` are the ``rx_queue``/``tx_queue`` columns. For LISTEN rows the kernel puts
    the accept-queue length in ``rx_queue`` but *not* the backlog (``tx_queue`` is always 0 there),
    so ``send_q`` is ``None`` — unless ``fd_by_inode`` (the caller's cached :func:`socket_inodes`
    map) is given, in which case the backlog of the target's own listeners is read from the sockets
    themselves with :func:`listen_backlogs`, and the queue length from the same instant replaces
    ``rx_queue``.
    """
    out: list[TcpSocket] = []
    listen_rows: list[int] = []
    for family in families:
        name = "tcp" if family == socket.AF_INET else "tcp6"
        try:
            data = _read_all(f"/proc/{pid}/net/{name}")
        except FileNotFoundError:
            if family == socket.AF_INET6 and os.path.isdir(f"/proc/{pid}"):
                continue  # kernel without IPv6
            raise
        listen_rows.extend(_parse_table(data, int(family), out))

    if fd_by_inode and listen_rows:
        wanted: dict[int, int] = {}  # fd -> row index
        for i in listen_rows:
            fd = fd_by_inode.get(out[i].inode)
            if fd is not None:
                wanted[fd] = i
        for fd, (queue, backlog) in listen_backlogs(pid, wanted).items():
            out[wanted[fd]] = dataclasses.replace(out[wanted[fd]], recv_q=queue, send_q=backlog)
    return out


# --- counters -------------------------------------------------------------------------------------


def tcpext_counters(pid: int) -> dict[str, int]:
    """All ``TcpExt`` counters of the target's network namespace from ``/proc/PID/net/netstat``.

    The file is pairs of lines, a header of names and a line of values, per section.
    """
    with open(f"/proc/{pid}/net/netstat", encoding="ascii", errors="replace") as f:
        lines = f.read().splitlines()
    for names_line, values_line in zip(lines[::2], lines[1::2], strict=False):
        if names_line.startswith("TcpExt:") and values_line.startswith("TcpExt:"):
            names = names_line.split()[1:]
            values = values_line.split()[1:]
            return {n: int(v) for n, v in zip(names, values, strict=False)}
    return {}


def listen_counters(pid: int) -> dict[str, int]:
    """``{"ListenOverflows": n, "ListenDrops": n}`` for the target's network namespace.

    ``ListenOverflows`` counts SYNs/ACKs dropped because an accept queue was full; ``ListenDrops``
    counts every drop at a listener (overflows included). Both are monotonic per namespace; a rising
    delta while a LISTEN row shows ``recv_q > send_q`` proves clients are being turned away.
    Missing counters (very old kernels) are simply absent from the dict.
    """
    counters = tcpext_counters(pid)
    return {k: counters[k] for k in ("ListenOverflows", "ListenDrops") if k in counters}
