"""Identify the process we are asked to watch, and refuse clearly when we cannot.

Everything here reads `/proc` only. A pid is a weak name for a process — it is reused —
so a target is pinned by (pid, start time) and every later check compares both: a new
process that happens to get the same pid is never mistaken for the one we attached to.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lifescope.probes.offsets import support, supported_range

_PY_LIB = re.compile(r"(?:lib)?python(\d)\.(\d+)[a-z]*(?:\.so[.\d]*)?$")


class TargetError(Exception):
    """Why we cannot watch a process, with the fix, ready for one line on stderr.

    `exit_code` is 2 for usage errors (not a pid at all) and 1 for a pid we cannot attach to,
    so scripts can tell a typo from a permission problem.
    """

    def __init__(self, problem: str, remedy: str, exit_code: int = 1) -> None:
        super().__init__(problem)
        self.problem = problem
        self.remedy = remedy
        self.exit_code = exit_code

    def line(self) -> str:
        return f"lifescope: {self.problem} — {self.remedy}"


@dataclass(frozen=True, slots=True)
class Target:
    pid: int
    start_ticks: int
    command: str
    python: str | None
    """`"3.11.7"` when the full version could be read, `"3.11"` from the library name alone."""
    executable: str
    image: str = ""
    """The program image at attach (`image_of`): an exec keeps the pid and the start time but
    replaces the program, and every address we read with it."""
    argv: tuple[str, ...] = ()
    """The command line as its arguments (`command` joins them with spaces)."""

    def alive(self) -> bool:
        """True while the very process we attached to still runs the program it ran then
        (pid reuse and exec aware)."""
        return self.gone_reason() is None

    def gone_reason(self) -> str | None:
        """None while alive; else why not, in words for the header."""
        stat = _read_stat(self.pid)
        if stat is None or stat[1] != self.start_ticks or stat[0] in "ZX":
            return "the target process exited"
        if self.image:
            now = image_of(self.pid)
            if now and now != self.image:
                program = now.rsplit("@", 1)[0]
                return f"the target replaced itself (exec) with {program}; attach again to follow"
        return None

    @property
    def minor(self) -> tuple[int, int] | None:
        if not self.python:
            return None
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)


_DELETED = " (deleted)"


def undeleted(path: str) -> str:
    """A path from /proc without the kernel's " (deleted)" mark (not `str.removesuffix`: the
    collector also runs on a host's Python 3.8, see `lifescope.remote.compat`)."""
    return path[: -len(_DELETED)] if path.endswith(_DELETED) else path


def image_of(pid: int) -> str:
    """`/proc/PID/exe` and where the executable is mapped: changes on exec (a re-exec of the
    same interpreter included, since ASLR moves the new image). "" when unreadable.

    Not the first line of maps (memory mapped below the executable — a Go or JVM heap —
    would look like an exec), and without the " (deleted)" an upgrade of the interpreter's
    file on disk appends to the link while the process runs on."""
    try:
        exe = undeleted(os.readlink(f"/proc/{pid}/exe"))
        with open(f"/proc/{pid}/maps", "rb") as handle:
            for line in handle:
                fields = line.split(maxsplit=5)
                if len(fields) == 6:
                    path = undeleted(fields[5].rstrip(b"\n").decode(errors="replace"))
                    if path == exe:
                        return f"{exe}@{fields[0].split(b'-', 1)[0].decode()}"
    except OSError:
        return ""
    return f"{exe}@?"


def parse_pid(text: str, command: str = "attach") -> int:
    """Accept decimal pids only; anything else is a usage error (exit 2)."""
    text = text.strip()
    if not text.isdigit():
        raise TargetError(
            f"{text!r} is not a process id",
            f"pass a numeric pid, e.g. `lifescope {command} $(pgrep -f myserver)`",
            exit_code=2,
        )
    pid = int(text)
    if pid <= 0 or pid > 4_194_304:
        raise TargetError(
            f"{pid} is outside the range of Linux process ids",
            "pass the pid shown by `ps` or `pgrep`",
            exit_code=2,
        )
    return pid


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, start time in clock ticks, flags) from /proc/PID/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[19]), int(rest[6])


def _python_from_maps(pid: int) -> tuple[str | None, str | None]:
    """Find the CPython the target runs: (version "3.X", path of libpython or executable).

    Reading maps needs the same permission as reading memory, so a failure here is an early,
    honest signal that attaching will fail too.
    """
    maps = Path(f"/proc/{pid}/maps").read_text()
    exe = os.readlink(f"/proc/{pid}/exe")
    found: tuple[str | None, str | None] = (None, None)
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        path = parts[5]
        match = _PY_LIB.search(os.path.basename(path))
        if match:
            version = f"{match.group(1)}.{match.group(2)}"
            if "libpython" in path:
                return version, path
            found = (version, path)
    if found[0] is None:
        match = _PY_LIB.search(os.path.basename(exe).replace(" (deleted)", ""))
        if match:
            found = (f"{match.group(1)}.{match.group(2)}", exe)
    return found


def _full_version(pid: int, minor: str) -> str:
    """Best effort "3.11.7": pyenv-style paths and the executable name carry it often enough.

    The exact patch release is cosmetic (offsets depend on the minor version), so failing to
    find it is not an error — the minor version is shown instead.
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return minor
    match = re.search(rf"\b({re.escape(minor)}\.\d+)\b", exe)
    return match.group(1) if match else minor


def python_children(pid: int) -> list[int]:
    """Python processes forked by `pid` (gunicorn / uvicorn --workers / multiprocessing).

    Reads /proc/PID/task/*/children (Linux ≥ 3.5); a child counts when it maps a libpython
    or runs a python executable. Order is stable (by pid).
    """
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        found.update(int(c) for c in text.split())
    workers = []
    for child in sorted(found):
        try:
            minor, _ = _python_from_maps(child)
        except OSError:
            continue
        if minor is not None:
            workers.append(child)
    return workers


def resolve(pid: int) -> Target:
    """Validate that `pid` is a live, user-space CPython process we are allowed to read."""
    stat = _read_stat(pid)
    if stat is None:
        raise TargetError(
            f"no process with pid {pid}", "check the pid with `ps -p PID` or `pgrep -a python`"
        )
    state, start_ticks, flags = stat
    if state in "ZX":
        raise TargetError(
            f"pid {pid} is a zombie (it exited; its parent has not reaped it)",
            "attach to a live process; `ps -o pid,stat,cmd -p PID` shows its state",
        )
    pf_kthread = 0x00200000
    if flags & pf_kthread:
        raise TargetError(
            f"pid {pid} is a kernel thread, not a Python process",
            "pass the pid of a Python process (`pgrep -a python`)",
        )
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        argv = tuple(a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0") if raw)
        command = " ".join(argv).strip() or "?"
        minor, executable = _python_from_maps(pid)
    except PermissionError as exc:
        raise TargetError(
            f"permission denied reading /proc/{pid} ({exc.strerror})",
            "run lifescope as the target's user or as root, or grant CAP_SYS_PTRACE "
            "(`lifescope doctor PID` explains)",
        ) from exc
    except FileNotFoundError as exc:
        raise TargetError(
            f"pid {pid} exited while lifescope was attaching", "start it again"
        ) from exc
    if minor is None or executable is None:
        raise TargetError(
            f"pid {pid} ({command[:60]}) does not look like a CPython process "
            "(no libpython or python executable mapped)",
            f"pass the pid of a CPython {supported_range()} process",
        )
    major, minor_number = (int(x) for x in minor.split("."))
    if support(major, minor_number) == "unsupported":
        raise TargetError(
            f"pid {pid} runs Python {minor}, which lifescope does not support",
            f"lifescope reads CPython {supported_range()} (and attempts newer 3.x releases)",
        )
    return Target(
        pid=pid,
        start_ticks=start_ticks,
        command=command,
        python=_full_version(pid, minor),
        executable=executable,
        image=image_of(pid),
        argv=argv,
    )
