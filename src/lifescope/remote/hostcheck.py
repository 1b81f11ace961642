"""Runs on the host for `lifescope doctor ssh://host/PID`, sent like `boot.py`: one JSON line
per check, read-only (nothing is written on the host, the target is not touched).

Python 3.8 syntax, stdlib only.
"""

import json
import os
import shutil
import socket
import sys

CAP_SYS_PTRACE = 19
CAP_NET_RAW = 13


def emit(name, ok, detail, remedy=""):
    line = json.dumps({"name": name, "ok": ok, "detail": detail, "remedy": remedy})
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def caps():
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def main(argv):
    version, pid = argv[0], int(argv[1])
    info = sys.version_info
    py = ".".join(str(n) for n in info[:3])
    emit("python", True, f"{sys.executable} {py}"
         + ("" if info >= (3, 10) else " (older than 3.10: no GIL or asyncio memory readers)"),
         "install a Python 3.10+ on the host for every probe")  # fmt: skip
    try:
        import lifescope

        there = getattr(lifescope, "__version__", "?")
    except Exception:
        there = None
    if there == version:
        emit("lifescope on host", True, f"{there} installed: nothing will be shipped")
    else:
        found = f"{there} installed, not {version}" if there else "not installed"
        emit("lifescope on host", True, f"{found}: the collector will be shipped (~3 MB) "
             "into a private directory and removed on exit")  # fmt: skip
    pyspy = shutil.which("py-spy")
    emit("py-spy on host", True, pyspy or "none: lifescope ships its own")
    effective = caps()
    root = os.geteuid() == 0
    ptrace = bool(effective >> CAP_SYS_PTRACE & 1)
    try:
        st = os.stat(f"/proc/{pid}")
    except FileNotFoundError:
        emit(f"pid {pid}", False, "no such process on the host", "check the pid on the host")
        st = None
    except OSError as exc:
        emit(f"pid {pid}", False, str(exc), "")
        st = None
    if st is not None:
        owner = st.st_uid
        same = owner == os.geteuid()
        emit(f"pid {pid}", True, f"owned by uid {owner}; we are uid {os.geteuid()}")
        scope = None
        try:
            with open("/proc/sys/kernel/yama/ptrace_scope") as handle:
                scope = int(handle.read())
        except (OSError, ValueError):
            pass
        try:
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
            os.close(fd)
            emit("ptrace (read memory)", True, "the target's memory is readable")
        except OSError as exc:
            if not same and not (root or ptrace):
                remedy = "the target belongs to another user: add --sudo (passwordless sudo)"
            elif scope:
                remedy = (f"kernel.yama.ptrace_scope={scope}: add --sudo, or "
                          "`sysctl kernel.yama.ptrace_scope=0` on the host")  # fmt: skip
            else:
                remedy = "add --sudo, or grant CAP_SYS_PTRACE"
            emit("ptrace (read memory)", False, f"/proc/{pid}/mem: {exc.strerror}", remedy)
    raw = bool(effective >> CAP_NET_RAW & 1)
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.close()
        emit("CAP_NET_RAW (packets)", True, "AF_PACKET socket opened")
    except OSError as exc:
        emit("CAP_NET_RAW (packets)", False,
             f"{'absent' if not raw else 'present'}; AF_PACKET refused ({exc.strerror}): the "
             "packet view will be off", "add --sudo, or run as root on the host")  # fmt: skip
    return 0


sys.exit(main(sys.argv[2:]))
