"""Bad pids get one line on stderr naming the problem and the fix, and the right exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import stop_pid


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lifescope", *args], capture_output=True, timeout=60
    )


def one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    err = done.stderr.decode().strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lifescope: ")
    assert " — " in err, "the message must carry a remedy"
    return err


@pytest.mark.parametrize("command", ["attach", "snapshot"])
@pytest.mark.parametrize(
    ("pid", "words"),
    [
        ("abc", "is not a process id"),
        ("12x", "is not a process id"),
        ("99999999", "outside the range"),
    ],
)
def test_not_a_pid_is_a_usage_error(command: str, pid: str, words: str) -> None:
    done = run(command, pid)
    assert done.returncode == 2
    assert words in one_line(done)


def test_negative_pid_is_a_usage_error() -> None:
    done = run("snapshot", "--", "-5")
    assert done.returncode == 2
    assert "is not a process id" in one_line(done)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("command", ["attach", "snapshot"])
def test_dead_pid(command: str) -> None:
    done = run(command, str(dead_pid()))
    assert done.returncode == 1
    assert "no process with pid" in one_line(done)


def test_non_python_process() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        done = run("snapshot", str(proc.pid))
        assert done.returncode == 1
        assert "does not look like a CPython process" in one_line(done)
    finally:
        stop_pid(proc)


def test_zombie() -> None:
    # A child we do not reap stays a zombie until we wait() for it.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = 100
        while deadline and open(f"/proc/{proc.pid}/stat").read().split(") ")[1][0] != "Z":
            os.sched_yield()
            import time

            time.sleep(0.05)
            deadline -= 1
        done = run("snapshot", str(proc.pid))
        assert done.returncode == 1
        assert "zombie" in one_line(done)
    finally:
        proc.wait()


def test_kernel_thread() -> None:
    kthreadd = 2
    comm = open(f"/proc/{kthreadd}/comm").read().strip()
    if comm != "kthreadd":
        pytest.skip("no kthreadd visible at pid 2 (container pid namespace)")
    done = run("snapshot", str(kthreadd))
    assert done.returncode == 1
    assert "kernel thread" in one_line(done)


def test_unsupported_python_version() -> None:
    python27 = "/root/.pyenv/versions/2.7.18/bin/python2.7"
    if not os.path.exists(python27):
        pytest.skip("no Python 2.7 on this machine")
    proc = subprocess.Popen([python27, "-c", "import time; time.sleep(30)"])
    try:
        import time

        time.sleep(0.3)
        done = run("snapshot", str(proc.pid))
        assert done.returncode == 1
        assert "does not support" in one_line(done) or "CPython" in one_line(done)
    finally:
        stop_pid(proc)


@pytest.mark.parametrize("command", ["attach", "snapshot", "demo", "doctor"])
def test_help_and_version_on_every_command(command: str) -> None:
    helped = run(command, "--help")
    assert helped.returncode == 0
    assert b"usage: lifescope " + command.encode() in helped.stdout
    versioned = run(command, "--version")
    assert versioned.returncode == 0
    assert versioned.stdout.decode().startswith("lifescope ")


def test_doctor_reports_each_check_on_one_line() -> None:
    done = run("doctor", str(os.getpid()))
    lines = done.stdout.decode().splitlines()
    names = [line.split("]", 1)[1].split(":", 1)[0].strip() for line in lines]
    assert "py-spy" in names and "ptrace scope" in names and "CAP_NET_RAW (packets)" in names
    assert any(name.startswith(f"pid {os.getpid()}") for name in names)
    assert all(line.startswith(("[ok  ]", "[FAIL]")) for line in lines)


def test_a_pid_we_may_not_trace() -> None:
    """Unprivileged lifescope against a root-owned target: one line with the fix, exit 1.

    Forks after import and drops to `nobody` (the interpreter under /root is not executable
    for other users, so a fresh process could not even start)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create the unprivileged side")
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    read_end, write_end = os.pipe()
    try:
        import time

        time.sleep(0.3)
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                sys.stderr = os.fdopen(write_end, "w")  # pytest replaced sys.stderr
                os.setgid(65534)
                os.setuid(65534)
                from lifescope.cli import main

                code = main(["snapshot", str(target.pid)])
            except SystemExit as exc:
                code = int(exc.code or 0)
            finally:
                sys.stderr.flush()
                os._exit(locals().get("code", 99))
        os.close(write_end)
        _, status = os.waitpid(child, 0)
        err = os.read(read_end, 4096).decode().strip()
    finally:
        os.close(read_end)
        stop_pid(target)
    assert os.waitstatus_to_exitcode(status) == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "permission denied" in err and ("root" in err or "CAP_SYS_PTRACE" in err), err
