"""Names for the syscalls a server thread is found blocked in, and what kind of wait each is.

`/proc/PID/task/TID/syscall` gives a number; the numbers differ per architecture. Only the
calls that say something about a request's life are named — an unknown number stays a
number rather than a guess. Tables taken from the kernel's unistd headers.
"""

from __future__ import annotations

import platform
from functools import lru_cache

_X86_64 = {
    0: "read",
    1: "write",
    3: "close",
    7: "poll",
    17: "pread64",
    18: "pwrite64",
    19: "readv",
    20: "writev",
    23: "select",
    34: "pause",
    35: "nanosleep",
    40: "sendfile",
    42: "connect",
    43: "accept",
    44: "sendto",
    45: "recvfrom",
    46: "sendmsg",
    47: "recvmsg",
    61: "wait4",
    73: "flock",
    74: "fsync",
    75: "fdatasync",
    128: "rt_sigtimedwait",
    130: "rt_sigsuspend",
    202: "futex",
    230: "clock_nanosleep",
    232: "epoll_wait",
    247: "waitid",
    257: "openat",
    270: "pselect6",
    271: "ppoll",
    275: "splice",
    281: "epoll_pwait",
    288: "accept4",
    299: "recvmmsg",
    307: "sendmmsg",
    318: "getrandom",
    426: "io_uring_enter",
    441: "epoll_pwait2",
}
_GENERIC = {  # aarch64 and other asm-generic architectures
    22: "epoll_pwait",
    32: "flock",
    56: "openat",
    57: "close",
    63: "read",
    64: "write",
    65: "readv",
    66: "writev",
    67: "pread64",
    68: "pwrite64",
    72: "pselect6",
    73: "ppoll",
    76: "splice",
    82: "fsync",
    83: "fdatasync",
    95: "waitid",
    98: "futex",
    101: "nanosleep",
    115: "clock_nanosleep",
    133: "rt_sigsuspend",
    137: "rt_sigtimedwait",
    202: "accept",
    203: "connect",
    206: "sendto",
    207: "recvfrom",
    211: "sendmsg",
    212: "recvmsg",
    242: "accept4",
    243: "recvmmsg",
    260: "wait4",
    269: "sendmmsg",
    278: "getrandom",
    426: "io_uring_enter",
    441: "epoll_pwait2",
}

TABLE = _X86_64 if platform.machine() in ("x86_64", "AMD64") else _GENERIC

POLL = frozenset(
    {
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "poll",
        "ppoll",
        "select",
        "pselect6",
        "io_uring_enter",
    }
)
SOCKET_READ = frozenset({"read", "readv", "recvfrom", "recvmsg", "recvmmsg", "pread64"})
SOCKET_WRITE = frozenset(
    {"write", "writev", "sendto", "sendmsg", "sendmmsg", "sendfile", "pwrite64", "splice"}
)
ACCEPT = frozenset({"accept", "accept4"})
SLEEP = frozenset({"nanosleep", "clock_nanosleep", "pause"})
LOCK = frozenset({"futex", "flock"})
FD_FIRST = SOCKET_READ | SOCKET_WRITE | ACCEPT | {"connect", "close", "fsync", "fdatasync"}
"""Calls whose first argument is a file descriptor, so the wait can be tied to a socket."""


@lru_cache(maxsize=1024)
def name(number: int | None) -> str | None:
    """`"recvfrom"`, `"running"` for -1 (in user space), None when unknown/unreadable.

    Cached: a refresh at 200 threads asks ~70k times (every thread of every sample)."""
    if number is None:
        return None
    if number < 0:
        return "running"
    return TABLE.get(number, f"syscall {number}")
