"""Run code inside a target process's network namespace.

Why this exists: sockets live in network namespaces. A server in a container (or started under
``unshare -n``, or by systemd with ``PrivateNetwork=``) has its own TCP tables; a sock_diag netlink
socket opened in *our* namespace would silently report someone else's sockets, or none. A netlink
socket is bound, for its whole life, to the namespace of the thread that created it, so it is
enough to *create* the socket while switched into ``/proc/PID/ns/net`` and then use it from
anywhere.

``setns(2)`` changes the namespace of the calling *thread* only (for CLONE_NEWNET this is allowed
in a multi-threaded process). We therefore never switch a thread we do not own:

* :func:`run_in_netns` runs a callable in a short-lived dedicated thread that switches and then
  dies, so nothing can leak into the caller's thread even if restoring would have failed. This is
  the recommended way.
* :func:`entered_netns` switches the *calling* thread and switches it back on exit; use it only
  when a helper thread is impossible, and keep the block tiny.

The common case (target in our namespace) costs two ``stat`` calls and no thread: see
:func:`same_netns`.

``setns`` into another network namespace needs CAP_SYS_ADMIN over that namespace's user namespace
(root, usually). Without it callers get :class:`PermissionError` and should fall back to
``/proc/PID/net/tcp`` (see :mod:`lifescope.probes.procnet`), which the kernel already serves from
the target's namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = [
    "CLONE_NEWNET",
    "entered_netns",
    "netns_id",
    "run_in_netns",
    "same_netns",
    "setns",
]

CLONE_NEWNET = 0x40000000
"""``nstype`` argument of setns(2) for network namespaces (linux/sched.h)."""

T = TypeVar("T")

_libc: ctypes.CDLL | None = None


def _ns_path(pid: int | str) -> str:
    return f"/proc/{pid}/ns/net"


def netns_id(pid: int | str = "self") -> tuple[int, int]:
    """Identity of a process's network namespace as ``(st_dev, st_ino)`` of ``/proc/PID/ns/net``.

    Two processes share a network namespace exactly when these are equal (the inode number is what
    ``ip netns identify`` and ``lsns`` show). ``stat`` follows the magic link without needing any
    capability beyond ptrace-read access to the target.

    Raises:
        FileNotFoundError: the process does not exist (any more) — the same exception every
            ``/proc`` reader in lifescope raises for a vanished target.
        PermissionError: we may not inspect the process's namespaces.
    """
    st = os.stat(_ns_path(pid))
    return (st.st_dev, st.st_ino)


def same_netns(pid: int | None) -> bool:
    """True when ``pid`` is ``None`` or lives in the network namespace of the calling thread.

    Compares against ``/proc/thread-self`` rather than ``/proc/self`` because a namespace is a
    per-thread property: inside :func:`run_in_netns` the main thread and the worker differ.
    """
    if pid is None:
        return True
    return netns_id(pid) == netns_id("thread-self")


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread into the namespace referred to by ``fd``.

    Uses :func:`os.setns` when the interpreter has it (3.12+), else libc's ``setns`` via ctypes so
    that lifescope runs on 3.10/3.11 too.
    """
    native = getattr(os, "setns", None)
    if native is not None:
        native(fd, nstype)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _open_ns(pid: int) -> int:
    return os.open(_ns_path(pid), os.O_RDONLY | os.O_CLOEXEC)


def run_in_netns(pid: int | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` inside the network namespace of ``pid`` and return its result.

    If the target already shares our namespace (or ``pid`` is ``None``) ``fn`` runs directly on the
    calling thread. Otherwise a dedicated thread opens nothing but the namespace, switches, runs
    ``fn`` and exits; its exception, if any, is re-raised here. Sockets created by ``fn`` stay bound
    to the target's namespace after the thread has gone, which is the point.

    The namespace file is opened on the calling thread first, so a vanished target
    (:class:`FileNotFoundError`) and a lack of privilege (:class:`PermissionError`, from ``setns``)
    surface with their natural exception types.
    """
    if same_netns(pid):
        return fn(*args, **kwargs)
    assert pid is not None
    ns_fd = _open_ns(pid)
    result: list[T] = []
    error: list[BaseException] = []

    def worker() -> None:
        try:
            setns(ns_fd, CLONE_NEWNET)
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # re-raised on the caller's thread
            error.append(exc)

    try:
        thread = threading.Thread(target=worker, name=f"lifescope-netns-{pid}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(ns_fd)
    if error:
        raise error[0]
    return result[0]


@contextlib.contextmanager
def entered_netns(pid: int | None) -> Iterator[None]:
    """Switch the *calling thread* into ``pid``'s network namespace for the ``with`` block.

    Prefer :func:`run_in_netns`. This variant exists for callers that must stay on one thread; it
    restores the original namespace on exit and raises :class:`RuntimeError` if even that fails
    (the thread would otherwise keep running in the wrong namespace without anyone noticing).
    No-op when the namespaces are already the same.
    """
    if same_netns(pid):
        yield
        return
    assert pid is not None
    own_fd = os.open(_ns_path("thread-self"), os.O_RDONLY | os.O_CLOEXEC)
    try:
        target_fd = _open_ns(pid)
        try:
            setns(target_fd, CLONE_NEWNET)
        finally:
            os.close(target_fd)
        try:
            yield
        finally:
            try:
                setns(own_fd, CLONE_NEWNET)
            except OSError as exc:
                raise RuntimeError(
                    "could not return this thread to its own network namespace"
                ) from exc
    finally:
        os.close(own_fd)
