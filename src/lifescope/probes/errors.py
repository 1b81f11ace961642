"""Why a memory reader cannot read a target: one root, each cause's remedy written once.

Both of lifescope's memory readers (the GIL's and the asyncio tasks') fail for the same causes —
the target exited, we may not read it, it is not a CPython we can read — and used to spell the
same sentences each in its own words (the permission remedy was written three times). A probe
turns any of these into its status line: ``status`` is the probe vocabulary (``"denied"``,
``"gone"``, ``"unavailable"``), ``reason`` says what happened and ``remedy`` what to do.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "PERMISSION_REMEDY",
    "GilUnavailable",
    "NoGil",
    "ReaderUnavailable",
    "TasksUnavailable",
]

PERMISSION_REMEDY = (
    "run as the target's user or root; with Yama ptrace_scope>=1 grant "
    "CAP_SYS_PTRACE (docker: --cap-add SYS_PTRACE)"
)

_E = TypeVar("_E", bound="ReaderUnavailable")


class ReaderUnavailable(Exception):
    """A memory reader cannot read this process; ``reason`` says why, ``remedy`` what to do.

    ``retry`` is True when waiting may help (asyncio not imported yet, the interpreter
    starting up), so a probe can try again later.
    """

    def __init__(
        self, reason: str, remedy: str, status: str = "unavailable", retry: bool = False
    ) -> None:
        super().__init__(reason, remedy, status)
        self.reason = reason
        self.remedy = remedy
        self.status = status
        self.retry = retry

    def __str__(self) -> str:
        return f"{self.reason} ({self.remedy})" if self.remedy else self.reason

    @classmethod
    def denied(cls: type[_E], pid: int) -> _E:
        """EPERM reading memory: the one cause whose remedy is about privileges."""
        return cls(f"not allowed to read memory of process {pid}", PERMISSION_REMEDY, "denied")

    @classmethod
    def gone(cls: type[_E], pid: int, remedy: str = "check the pid") -> _E:
        """ESRCH, or /proc/PID vanished: the target exited."""
        return cls(f"process {pid} exited", remedy, "gone")


class GilUnavailable(ReaderUnavailable):
    """lifescope cannot read this process's GIL; the collector then falls back to py-spy's
    sampling."""


class NoGil(GilUnavailable):
    """The target has no GIL at all (a free-threaded build with the GIL disabled): not a
    failure, and nothing may stand in for a held share."""


class TasksUnavailable(ReaderUnavailable):
    """The asyncio task view cannot be had for this process; the running task is still
    visible in stack samples."""
