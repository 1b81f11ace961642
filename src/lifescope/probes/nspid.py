"""A containerised target's own thread ids, mapped to the ones lifescope sees.

Why: a process in its own pid namespace (a container, ``unshare --pid``) stores the thread ids
*it* sees — ``PyThreadState.native_thread_id`` is what ``gettid()`` returned inside the
namespace — while ``/proc/PID/task``, py-spy's thread ids and every other probe use the ids of
lifescope's namespace.  Each ``/proc/PID/task/TID/status`` has an ``NSpid:`` line listing the
thread's id in every namespace from ours inwards, so the last number is the target's own and
the first ours.  Every probe that joins on a thread id read from the target's memory goes
through :class:`TidMap` (one map per attach, refreshed when an id is not known yet).
"""

from __future__ import annotations

import os
import time

__all__ = ["TidMap", "ns_tids", "pid_namespaced"]

_REFRESH_S = 0.05  # re-read the task list at most this often on a miss (thread churn)


def ns_tids(pid: int) -> dict[int, int]:
    """The target's own id of each of its threads → our id (empty when unreadable)."""
    out: dict[int, int] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as handle:
                for line in handle:
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        out[int(ids[-1])] = int(ids[0])
                        break
        except (OSError, ValueError, IndexError):
            continue  # the thread exited between the listing and the read
    return out


def pid_namespaced(pid: int) -> bool:
    """True when the target lives in a pid namespace other than ours (its ids differ)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return len(line.split()) > 2
    except OSError:
        pass
    return False


class TidMap:
    """The target's thread ids → ours; the identity (and free) outside a pid namespace."""

    __slots__ = ("_last", "_map", "namespaced", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.namespaced = pid_namespaced(pid)
        self._map: dict[int, int] = ns_tids(pid) if self.namespaced else {}
        self._last = time.monotonic()

    def host(self, tid: int) -> int | None:
        """Our id of the thread the target calls ``tid``; None when no live thread has it."""
        if not self.namespaced:
            return tid
        found = self._map.get(tid)
        if found is None:
            now = time.monotonic()
            if now - self._last >= _REFRESH_S:
                self._last = now
                self._map = ns_tids(self.pid)
                found = self._map.get(tid)
        return found

    def ours(self, tid: int) -> int:
        """:meth:`host`, keeping an id no live thread has (it exited: nothing joins on it)."""
        found = self.host(tid)
        return tid if found is None else found

    def refresh(self) -> None:
        if self.namespaced:
            self._map = ns_tids(self.pid)
            self._last = time.monotonic()
