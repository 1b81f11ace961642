"""Under sudo only the collector keeps root: the UI runs as the invoking user (seen in
/proc/PID/status), its recording belongs to that user, and the root broker that starts
collectors takes no paths and ends with the UI however it ends.

sudo is simulated by what it leaves behind — root with SUDO_UID/SUDO_GID set — which is all
lifescope reads; the invoking user is `nobody`."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lifescope import privsep
from lifescope.options import CollectorOptions
from tests.conftest import PYTHON, wait_for

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sudo is what is being tested)"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]
NOBODY = pwd.getpwnam("nobody")


@contextlib.contextmanager
def reachable_by_everyone(path: str) -> Iterator[None]:
    """The interpreter must be readable by the user the UI drops to. On a real host it is (a
    system Python or the user's own venv); here it may live under /root or a 0700 mktemp
    directory, so each ancestor directory gets o+x (traverse, not list) for the test and its
    mode back afterwards."""
    changed: list[tuple[str, int]] = []
    # Both the venv's own path and the interpreter its symlink points to: a venv made under a
    # 0700 mktemp directory (as CI makes it) is only reachable through the first.
    parents = {*Path(path).absolute().parents, *Path(path).resolve().parents}
    for parent in sorted(parents):
        mode = os.stat(parent).st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)
            changed.append((str(parent), mode))
    try:
        yield
    finally:
        for parent, mode in changed:
            os.chmod(parent, stat.S_IMODE(mode))


def uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")


@pytest.fixture
def target() -> Iterator[subprocess.Popen[bytes]]:
    code = "import time; print('READY', flush=True); time.sleep(120)"
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"READY")
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("end", ["q", "kill-session"])
def test_sudo_started_ui_runs_as_the_invoking_user(
    end: str, target: subprocess.Popen[bytes]
) -> None:
    out_dir = tempfile.mkdtemp(prefix="lifescope-sudo-test-")
    os.chown(out_dir, NOBODY.pw_uid, NOBODY.pw_gid)
    recording = os.path.join(out_dir, "session.lsr")
    session = f"lifescope-sudo-{os.getpid()}-{end}"
    command = (
        f"exec env SUDO_UID={NOBODY.pw_uid} SUDO_GID={NOBODY.pw_gid} SUDO_USER=nobody "
        f"{sys.executable} -m lifescope attach {target.pid} --record {recording}"
    )
    procs: list[psutil.Process] = []
    with reachable_by_everyone(sys.executable):
        size = ["-x", "110", "-y", "30"]
        subprocess.run(["tmux", "new-session", "-d", "-s", session, *size, command], check=True)
        try:
            pane = subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            ui = psutil.Process(int(pane.stdout.split()[0]))

            def screen() -> str:
                return subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                      capture_output=True, text=True).stdout  # fmt: skip

            wait_for(lambda: "● live" in screen() and "gil" in screen(), timeout=40)
            procs = [ui, *ui.children(recursive=True)]
            broker = next(p for p in procs if "lifescope.privsep" in p.cmdline())
            collector = next(p for p in procs if "lifescope.collector" in p.cmdline())
            assert uids(ui.pid) == [NOBODY.pw_uid] * 4, "real, effective, saved and fs uid"
            assert uids(broker.pid)[1] == 0 and uids(collector.pid)[1] == 0
            assert "--record-fd" in collector.cmdline(), "the root collector was given no path"
            st = os.stat(recording)
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, 0o600)
            if end == "q":
                subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
            else:
                subprocess.run(["tmux", "kill-session", "-t", session], check=True)
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and any(_alive(p) for p in procs):
                time.sleep(0.05)
            assert not [p.cmdline() for p in procs if _alive(p)], "everything ended with the UI"
            assert os.path.getsize(recording) > 0
        finally:
            for proc in procs:
                if _alive(proc):
                    proc.kill()
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
            shutil.rmtree(out_dir, ignore_errors=True)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_broker_starts_collectors_and_refuses_paths(target: subprocess.Popen[bytes]) -> None:
    broker = privsep.Broker.start()
    try:
        with pytest.raises(OSError, match="refused"):
            broker._ask_spawn_raw = None
            broker.spawn(target.pid, CollectorOptions(output="/etc/lifescope-should-not-exist"))
        assert not os.path.exists("/etc/lifescope-should-not-exist")
        pid, out, err = broker.spawn(target.pid, CollectorOptions(probes=("threads",), seconds=1))
        with os.fdopen(out, "rb") as stream:
            data = stream.read()
        os.close(err)
        assert data.startswith(b'{"schema":"lifescope.stream/1"'), data[:80]
        assert uids(os.getpid())[1] == 0 and pid != os.getpid()
    finally:
        broker.sock.close()
        broker.proc.wait(10)
    assert broker.proc.returncode == 0, "the broker ends when the UI's socket closes"
