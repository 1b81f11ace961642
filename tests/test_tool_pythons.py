"""lifescope itself (not just its targets) installs and runs on the oldest and newest Pythons it
supports: 3.10 (pyenv) and 3.14 (Debian's, chrooted, with every dependency installed as cp314
wheels). Each takes a snapshot of a real target and checks the GIL probe read it.

Found by this test: on 3.10 lifescope did not start (`tomllib` is 3.11+, and its fallback
`tomli` was not a dependency).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.interpreters import cache_dir, python_for, root_of

REPO = Path(__file__).resolve().parent.parent
PLATFORMS = [
    f"--platform={p}"
    for p in (
        "manylinux_2_28_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "manylinux_2_5_x86_64",
        "manylinux1_x86_64",
    )
]

SPINNER = """
import threading, time
def spin():
    while True:
        sum(range(100))
threading.Thread(target=spin, daemon=True).start()
print("READY", flush=True)
time.sleep(120)
"""


def _snapshot(argv: list[str], pid: int) -> dict[str, object]:
    done = subprocess.run(
        [*argv, "snapshot", str(pid), "--seconds", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _on_310() -> list[str]:
    python = python_for("3.10")
    env = cache_dir().parent / "tool-venv-3.10"
    if not (env / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(env)], check=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-e", str(REPO)], check=True, capture_output=True)
    return [str(env / "bin" / "lifescope")]


def _dependencies(wheel: Path, version: str) -> list[str]:
    """The wheel's dependencies that apply on Python `version` (extras left out).

    Why not let pip read them from the wheel: with its compiled sampler the wheel is tagged
    for the Python that built it (cp311), and pip refuses it as a cp314 wheel. It goes in
    after them with --no-deps, and 3.14 runs the pure-Python loop (its .so is not for 3.14),
    as on a host without a compiler. A machine with the dependencies from an earlier run,
    before the sampler was compiled, never saw this."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    wanted = []
    for spec in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(spec)
        marker = requirement.marker
        if marker is None or marker.evaluate({"python_version": version, "extra": ""}):
            wanted.append(str(requirement))
    return wanted


def _on_314(tmp_path: Path) -> list[str]:
    python_for("3.14")  # provisions the root (or skips, saying why)
    root = root_of("3.14")
    site = root / "site-tool"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(site)]
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(wheels.glob("lifescope-*.whl"))
    cp314 = ["--python-version", "3.14", "--implementation", "cp", *PLATFORMS]
    if not (site / "textual").exists():  # dependencies once per machine
        dependencies = _dependencies(wheel, "3.14")
        subprocess.run([*pip, *cp314, "--only-binary=:all:", *dependencies], check=True)
    subprocess.run([*pip, "--upgrade", "--no-deps", str(wheel)], check=True, capture_output=True)
    # The chroot gets this machine's /proc (lifescope reads other processes there) and /dev
    # (subprocesses need /dev/null) in a mount namespace of its own, so nothing leaks out.
    script = (
        f"mount -t proc proc {root}/proc && mount --bind /dev {root}/dev && "
        f"PYTHONPATH=/site-tool LIFESCOPE_PYSPY=/site-tool/bin/py-spy "
        f'exec chroot {root} /usr/bin/python3.14 -m lifescope "$@"'
    )
    return ["unshare", "--mount", "--fork", "sh", "-c", script, "lifescope"]


@pytest.mark.parametrize("version", ["3.10", "3.14"])
def test_lifescope_runs_on(version: str, python_target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    argv = _on_310() if version == "3.10" else _on_314(tmp_path)
    proc = python_target(SPINNER, python=python_for("3.12"))
    result = _snapshot(argv, proc.pid)
    probes = {p: v for p, v in result["probes"].items()}  # type: ignore[attr-defined]
    assert probes["gil"]["status"] == "ok", probes["gil"]
    assert result["gil"]["source"] == "memory"  # type: ignore[index]
    assert result["gil"]["held_share"] >= 0.5  # type: ignore[index]
