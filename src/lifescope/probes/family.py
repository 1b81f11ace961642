"""The processes of a server: the one attached to and, for a pre-fork server, its workers.

gunicorn, `uvicorn --workers`, Hypercorn, Granian and uWSGI masters serve nothing themselves:
their requests run one process down. Attached to the master, every probe that reads
requests (threads, stacks, sockets, tasks) reads the workers too, and tags what it emits with
the pid it came from. Not every Python child is a worker: multiprocessing's resource tracker
and fork server, and uWSGI's HTTP router (a gateway that forwards to the workers and runs no
Python code), serve no request and are named for what they are, never counted as workers.

Children are re-listed at most once a second, so a worker gunicorn restarts after
`--max-requests` or a crash appears with its new pid within a second.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from lifescope.target import Target, python_children

RELIST_S = 1.0
WORKER = "worker"
MAIN = "main"


@dataclass(frozen=True, slots=True)
class Member:
    pid: int
    role: str
    """"main" (attached to), "worker", or a helper's name: "resource-tracker",
    "forkserver", "router", "spooler", "mule"."""


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets `pid` holds."""
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                found.add(int(link[8:-1]))
    except OSError:
        pass
    return found


_UWSGI_TITLES = (
    ("uwsgi http", "router"),
    ("uwsgi https", "router"),
    ("uwsgi fastrouter", "router"),
    ("uwsgi rawrouter", "router"),
    ("uwsgi sslrouter", "router"),
    ("uwsgi spooler", "spooler"),
    ("uwsgi mule", "mule"),
    ("uwsgi worker", WORKER),
)


def role_of(pid: int, master: int, siblings: list[int]) -> str:
    """What a Python child of `master` is, from its command line and its sockets."""
    cmdline = _cmdline(pid)
    if "multiprocessing.resource_tracker" in cmdline:
        return "resource-tracker"
    if "multiprocessing.forkserver" in cmdline:
        return "forkserver"
    title = cmdline.strip().lower()
    for prefix, role in _UWSGI_TITLES:  # uWSGI --auto-procname names each process
        if title.startswith(prefix):
            return role
    if "uwsgi" in title.split(" ", 1)[0] and len(siblings) > 1:
        # uWSGI's gateway (`--http`) holds a socket of the master's that no other child holds
        # (the public listener), and lacks the one every worker shares (the internal socket).
        inherited = _socket_inodes(master)
        mine = _socket_inodes(pid) & inherited
        others = [_socket_inodes(s) & inherited for s in siblings if s != pid]
        only_mine = mine - set().union(*others)
        theirs = set.intersection(*others) - mine if others else set()
        if only_mine and theirs:
            return "router"
    return WORKER


class Family:
    """The target and its Python children, with roles; shared by the probes (thread-safe)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._members: tuple[Member, ...] = (Member(target.pid, MAIN),)
        self._at = 0.0
        self._roles: dict[int, str] = {}

    def members(self) -> tuple[Member, ...]:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= RELIST_S:
                self._at = now
                children = python_children(self.target.pid)
                roles = {
                    pid: self._roles.get(pid) or role_of(pid, self.target.pid, children)
                    for pid in children
                }
                self._roles = roles
                self._members = (
                    Member(self.target.pid, MAIN),
                    *(Member(pid, role) for pid, role in roles.items()),
                )
            return self._members

    def serving(self) -> tuple[int, ...]:
        """Pids whose requests to read: the workers, and the main process itself (a single
        process server, or a master that also serves)."""
        return tuple(m.pid for m in self.members() if m.role in (MAIN, WORKER))

    def workers(self) -> tuple[int, ...]:
        return tuple(m.pid for m in self.members() if m.role == WORKER)
