"""The `ssh` command line and the shell line the host runs. lifescope never speaks SSH itself:
the user's `ssh` client brings their config, keys, agent, jump hosts and known_hosts.

Options added to the user's own, each for a reason:

* ``BatchMode=yes`` — never prompt: the terminal belongs to the UI, and a prompt hidden under
  it would hang the session (a key needing a passphrase must be in the agent);
* ``ServerAliveInterval=5``/``ServerAliveCountMax=3`` — a link that stops carrying packets is
  declared dead after ~15 s instead of TCP's minutes, so the UI can say so and reconnect;
* ``ConnectTimeout=10`` — an unreachable host fails in bounded time;
* ``-T`` — no terminal on the host: the channel carries the binary stream untouched;
* ``Compression=yes`` in lean mode — the stream is JSON lines, ~10× compressible.

``LIFESCOPE_SSH`` replaces the ``ssh`` program (a wrapper, a different client, test options),
split like a shell would.
"""

from __future__ import annotations

import os
import shlex

from lifescope.remote.spec import RemoteTarget

SSH_ENV = "LIFESCOPE_SSH"
PYTHON_ENV = "LIFESCOPE_REMOTE_PYTHON"
"""An interpreter on the host to try before the ones on its PATH (one off PATH, a pinned one)."""
PYTHONS = ("python3.15", "python3.14", "python3.13", "python3.12", "python3.11", "python3.10",
           "python3", "python3.9", "python3.8", "python")  # fmt: skip
"""Tried in this order on the host: the newest first, because a host Python of 3.10+ can read
symbols (the GIL and asyncio readers) and 3.8/3.9 cannot (`probes.elf`)."""
NO_PYTHON = "lifescope-remote NO-PYTHON"

# POSIX sh, run by the host's `sh` whatever the login shell is. The boot program (`boot.py`)
# comes on stdin, length first, so no Python source is ever quoted through two shells.
_SCRIPT = (
    "for p in {pythons}; do "
    'command -v "$p" >/dev/null 2>&1 || continue; '
    "\"$p\" -c 'import sys; sys.exit(sys.version_info < (3, 8))' >/dev/null 2>&1 || continue; "
    'exec "$p" -c \'import sys; exec(compile(sys.stdin.buffer.read(int(sys.argv[1])), '
    '"<lifescope-boot>", "exec"))\' "$@"; '
    "done; "
    "echo '{no_python}'; exit 127"
)


def ssh_program() -> list[str]:
    return shlex.split(os.environ.get(SSH_ENV, "ssh")) or ["ssh"]


def ssh_argv(target: RemoteTarget, remote_command: str, lean: bool = False) -> list[str]:
    argv = [
        *ssh_program(),
        "-T",
        "-o", "BatchMode=yes",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "ConnectTimeout=10",
    ]  # fmt: skip
    if lean:
        argv += ["-o", "Compression=yes"]
    if target.port:
        argv += ["-p", str(target.port)]
    return [*argv, "--", target.destination, remote_command]


def remote_command(boot_size: int, args: list[str], sudo: bool = False) -> str:
    """The line the host's login shell runs: `/bin/sh -c SCRIPT` (under `sudo -n` for a target
    of another user: never a password prompt, see `ssh_argv`), with the boot program's size
    and the boot's arguments."""
    pythons = [os.environ[PYTHON_ENV]] if os.environ.get(PYTHON_ENV) else []
    pythons += PYTHONS
    script = _SCRIPT.format(pythons=" ".join(shlex.quote(p) for p in pythons), no_python=NO_PYTHON)
    words = ["/bin/sh", "-c", script, "lifescope-remote", str(boot_size), *args]
    if sudo:
        words = ["sudo", "-n", "--", *words]
    return " ".join(shlex.quote(w) for w in words)
