"""`lifescope doctor ssh://[user@]host[:port]/PID`: can a remote session work, and if not,
the fix for each thing missing — checked on the host, over the same ssh as `attach`."""

from __future__ import annotations

import json
import os
import subprocess
import time

from lifescope import __version__
from lifescope.doctor import Check
from lifescope.remote import transport
from lifescope.remote.spec import RemoteTarget

OPTIONAL = frozenset({"CAP_NET_RAW (packets)"})
"""Checks whose failure only turns one view off (as in the local doctor)."""
TIMEOUT_S = 60.0


def run(target: RemoteTarget, sudo: bool = False) -> list[Check]:
    with open(os.path.join(os.path.dirname(__file__), "hostcheck.py"), "rb") as handle:
        program = handle.read()
    command = transport.remote_command(len(program), [__version__, str(target.pid)], sudo=sudo)
    started = time.monotonic()
    try:
        done = subprocess.run(
            transport.ssh_argv(target, command),
            input=program,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return [Check("ssh", False, f"no answer from {target.host} in {TIMEOUT_S:.0f} s",
                      "check the host is reachable: ssh " + target.destination)]  # fmt: skip
    except OSError as exc:
        return [Check("ssh", False, f"cannot run ssh: {exc}", "install an OpenSSH client")]
    elapsed = time.monotonic() - started
    err = [ln for ln in done.stderr.decode(errors="replace").splitlines()
           if ln.strip() and not ln.startswith("Warning:")]  # fmt: skip
    lines = done.stdout.decode(errors="replace").splitlines()
    if done.returncode == 255:
        return [Check("ssh", False, f"{target.destination}: {err[-1] if err else 'failed'}",
                      f"make `ssh {target.destination}` log in without a prompt (keys or "
                      "agent; lifescope uses BatchMode=yes)")]  # fmt: skip
    checks = [Check("ssh", True, f"logged in to {target.destination} in {elapsed:.1f} s")]
    if transport.NO_PYTHON in lines:
        return [*checks, Check("python", False, "no CPython 3.8+ on the host's PATH",
                               "install python3 (3.8 or newer) on the host: nothing else "
                               "is needed")]  # fmt: skip
    if sudo and any("password is required" in ln for ln in err):
        return [*checks, Check("sudo", False, "sudo wants a password (lifescope runs sudo -n)",
                               "allow this user passwordless sudo on the host")]  # fmt: skip
    if sudo:
        checks.append(Check("sudo", True, "sudo -n works"))
    for line in lines:
        try:
            fields = json.loads(line)
        except ValueError:
            continue
        checks.append(Check(fields["name"], bool(fields["ok"]), fields["detail"],
                            fields.get("remedy", "")))  # fmt: skip
    if len(checks) == 1 + sudo:
        checks.append(Check("host check", False, err[-1] if err else "no output",
                            "run `lifescope doctor` on the host itself"))  # fmt: skip
    return checks
