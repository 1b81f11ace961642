"""The CPythons the truth tests run their targets on: pyenv's 3.8–3.13, and Debian's real 3.14
and 3.15, provisioned here on first use.

Why Debian's: they are the builds users run (3.14 is the default Python of current
distributions), and `tools/debian-cpython` unpacks them with their own glibc into a root of
their own, so they run chrooted on this older system without upgrading anything. A chrooted
target is seen from the host the way a containerised one is: its interpreter and libraries
resolve only through /proc/PID/root or /proc/PID/map_files.

Each is provisioned once per machine under ``$LIFESCOPE_TEST_CACHE`` (default
``~/.cache/lifescope/debian-cpython``), with aiohttp installed for it and lifescope's own
source copied in (the demo server runs on the target's Python). Tests skip — with the reason —
only when Debian's archive cannot be reached; any other provisioning failure fails them.

``python_for(version)`` returns a host path usable wherever tests pass ``python=``: for 3.14
and 3.15 it is a small wrapper that copies script arguments into the root and execs
``chroot ROOT /usr/bin/python3.X`` — so the pid a test attaches to is the interpreter's own.
``container(...)`` starts a target in its own pid, mount and network namespaces as well.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lifescope

REPO = Path(__file__).resolve().parent.parent
PROVISION = REPO / "tools" / "debian-cpython"
DEBIAN_VERSIONS = ("3.14", "3.15")
PYENV_VERSIONS = tuple(f"3.{minor}" for minor in range(8, 14))
EX_TEMPFAIL = 75

WRAPPER = """#!/bin/bash
# Run CPython {version} from {root} (chrooted). Arguments that name host files are copied
# into the root first, since a chrooted interpreter cannot see the host's /tmp.
root={root}
args=()
for a in "$@"; do
  if [[ "$a" == /* && -f "$a" && "$a" != "$root"/* ]]; then
    dest="/app/$(printf %s "$a" | md5sum | cut -c1-10)-$(basename "$a")"
    cp "$a" "$root$dest"
    args+=("$dest")
  else
    args+=("$a")
  fi
done
export PYTHONPATH=/site
exec $LIFESCOPE_CONTAINER chroot "$root" /usr/bin/python{version} "${{args[@]}}"
"""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "lifescope" / "debian-cpython"
    return Path(os.environ.get("LIFESCOPE_TEST_CACHE", default))


@functools.cache
def _provision(version: str) -> tuple[Path | None, str]:
    """(wrapper path, "") or (None, why it was skipped). Once per session and version."""
    dest = cache_dir() / version
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(PROVISION), version, str(dest), "aiohttp"], capture_output=True, text=True
    )
    if done.returncode == EX_TEMPFAIL:
        return None, (done.stderr.strip() or "Debian's archive could not be reached")
    if done.returncode != 0:
        raise RuntimeError(f"tools/debian-cpython {version} failed:\n{done.stderr[-2000:]}")
    root = dest / "root"
    source = Path(lifescope.__file__).resolve().parent
    shutil.copytree(
        source,
        root / "site" / "lifescope",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    wrapper = dest / f"python{version}"
    wrapper.write_text(WRAPPER.format(version=version, root=root))
    wrapper.chmod(0o755)
    return wrapper, ""


def python_for(version: str) -> str:
    """An interpreter path for ``version``; skips when it cannot be had here."""
    if version == "this":
        return sys.executable
    if version in DEBIAN_VERSIONS:
        try:
            wrapper, why = _provision(version)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        if wrapper is None:
            print(f"skipping CPython {version}: {why}", file=sys.stderr)
            pytest.skip(f"CPython {version} from Debian unavailable: {why}")
        return str(wrapper)
    found = sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))
    if not found:
        pytest.skip(f"CPython {version} is not installed here")
    return found[-1]


def root_of(version: str) -> Path:
    return cache_dir() / version / "root"


CONTAINER = "unshare --pid --mount --net --fork --kill-child"
"""A container as far as lifescope can tell: its own pid, mount and network namespaces (the
mount namespace keeps the chroot's view private; the network namespace has only its own lo),
and a root filesystem of its own."""


def container_env() -> dict[str, str]:
    """Environment that makes a wrapper from :func:`python_for` start a container."""
    return {**os.environ, "LIFESCOPE_CONTAINER": CONTAINER}


def contained_pid(launcher_pid: int, timeout: float = 10.0) -> int:
    """The host pid of the interpreter ``unshare --fork`` started (its only child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text()
        except OSError:
            children = ""
        if children.split():
            return int(children.split()[0])
        time.sleep(0.02)
    raise AssertionError(f"unshare (pid {launcher_pid}) started no child")
