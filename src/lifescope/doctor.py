"""`lifescope doctor [PID]`: can lifescope see what it needs, and if not, exactly why.

One line per check, each ending with the remedy, so a user over SSH can fix their setup
without reading documentation. Checks only read; nothing here touches the target.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass

from lifescope.probes.pyspy import find_pyspy
from lifescope.target import TargetError, resolve

CAP_SYS_PTRACE = 19
CAP_NET_RAW = 13


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    remedy: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        tail = f" — {self.remedy}" if (self.remedy and not self.ok) else ""
        return f"[{mark}] {self.name}: {self.detail}{tail}"


def _effective_caps() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _has_cap(bit: int) -> bool:
    return bool(_effective_caps() >> bit & 1)


def check_pyspy() -> Check:
    binary = find_pyspy()
    if binary is None:
        return Check(
            "py-spy",
            False,
            "not found on PATH or beside this Python",
            "pip install py-spy, or set LIFESCOPE_PYSPY=/path/to/py-spy",
        )
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, timeout=10)
        version = out.stdout.decode().strip() or "unknown version"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("py-spy", False, f"{binary} does not run ({exc})", "reinstall py-spy")
    return Check("py-spy", True, f"{version} at {binary}")


def check_ptrace_scope() -> Check:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as handle:
            scope = int(handle.read())
    except OSError:
        return Check("ptrace scope", True, "no Yama LSM (ptrace limited only by uid/caps)")
    privileged = os.geteuid() == 0 or _has_cap(CAP_SYS_PTRACE)
    meaning = {
        0: "classic (same uid may trace)",
        1: "restricted to descendants",
        2: "admin only",
        3: "no ptrace at all",
    }.get(scope, "unknown")
    ok = scope == 0 or (scope in (1, 2) and privileged)
    return Check(
        "ptrace scope",
        ok,
        f"kernel.yama.ptrace_scope={scope} ({meaning})",
        "run as root / with CAP_SYS_PTRACE, or `sysctl kernel.yama.ptrace_scope=0`",
    )


def check_capabilities() -> list[Check]:
    root = os.geteuid() == 0
    ptrace = _has_cap(CAP_SYS_PTRACE)
    raw = _has_cap(CAP_NET_RAW)
    return [
        Check(
            "CAP_SYS_PTRACE",
            ptrace or root,
            "present" if ptrace else "absent (same-uid targets may still work)",
            "run with sudo, `setcap cap_sys_ptrace+ep` on py-spy, or in a container "
            "`--cap-add SYS_PTRACE`",
        ),
        Check(
            "CAP_NET_RAW (packets)",
            raw,
            "present" if raw else "absent: the packet pane will be disabled",
            "run with sudo, or in a container `--cap-add NET_RAW`",
        ),
        _raw_socket_check() if raw else Check("raw socket", False, "not tried", ""),
    ]


def _raw_socket_check() -> Check:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.close()
        return Check("raw socket", True, "AF_PACKET socket opened")
    except OSError as exc:
        return Check(
            "raw socket",
            False,
            f"AF_PACKET refused ({exc.strerror})",
            "grant CAP_NET_RAW (`--cap-add NET_RAW` in containers)",
        )


def check_target(pid: int) -> list[Check]:
    try:
        target = resolve(pid)
    except TargetError as exc:
        return [Check(f"pid {pid}", False, exc.problem, exc.remedy)]
    checks = [Check(f"pid {pid}", True, f"Python {target.python}: {target.command[:60]}")]
    checks.append(check_container(pid))
    try:
        with open(f"/proc/{pid}/task/{pid}/syscall") as handle:
            handle.read()
        checks.append(Check("read syscalls", True, "/proc/PID/task/*/syscall readable"))
    except PermissionError:
        checks.append(
            Check(
                "read syscalls",
                False,
                "permission denied on /proc/PID/task/*/syscall",
                "run as root or grant CAP_SYS_PTRACE",
            )
        )
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        os.close(fd)
        checks.append(Check("read memory", True, "target memory readable (stacks, GIL)"))
    except PermissionError:
        checks.append(
            Check(
                "read memory",
                False,
                "permission denied on /proc/PID/mem",
                "run as the target's uid, as root, or with CAP_SYS_PTRACE",
            )
        )
    binary = find_pyspy()
    if binary:
        try:
            out = subprocess.run(
                [binary, "dump", "--nonblocking", "--pid", str(pid)],
                capture_output=True,
                timeout=15,
            )
            ok = out.returncode == 0
            last = (out.stderr or out.stdout).decode(errors="replace").strip().splitlines()
            checks.append(
                Check(
                    "py-spy dump",
                    ok,
                    "stacks readable" if ok else (last[-1] if last else "failed"),
                    "see the ptrace lines above",
                )
            )
        except subprocess.TimeoutExpired:
            checks.append(Check("py-spy dump", False, "timed out after 15 s", "retry"))
    return checks


_NAMESPACES = {
    "pid": "its thread ids are its namespace's: mapped to ours through NSpid",
    "mnt": "its files are not ours: the interpreter is read through /proc/PID/root",
    "net": "its sockets are read inside its network namespace",
}


def container_traits(pid: int) -> list[str]:
    """What sets the target apart from lifescope's own view: namespaces and root (empty when
    it shares them all)."""
    traits = []
    for ns, meaning in _NAMESPACES.items():
        try:
            theirs = os.readlink(f"/proc/{pid}/ns/{ns}")
            ours = os.readlink(f"/proc/self/ns/{ns}")
        except OSError:
            continue
        if theirs != ours:
            traits.append(f"own {ns} namespace ({meaning})")
    try:
        root = os.readlink(f"/proc/{pid}/root")
    except OSError:
        root = "/"
    if root != "/" and not any(t.startswith("own mnt") for t in traits):
        traits.append(f"chroot {root} (the interpreter is read through /proc/PID/root)")
    return traits


def check_container(pid: int) -> Check:
    """Informational: a containerised target works, but the user should know what differs."""
    traits = container_traits(pid)
    if not traits:
        return Check("container", True, "no: same namespaces and root as lifescope")
    return Check("container", True, "yes: " + "; ".join(traits))


def run(pid: int | None) -> list[Check]:
    checks = [check_pyspy(), check_ptrace_scope(), *check_capabilities()]
    if pid is not None:
        checks += check_target(pid)
    return checks
