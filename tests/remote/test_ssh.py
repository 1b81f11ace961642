"""`ssh://` end to end: a real OpenSSH server on loopback, throwaway users, real targets.

Each test attaches as a user would (`lifescope ... ssh://user@127.0.0.1:PORT/PID`, with the
client config in `LIFESCOPE_SSH`). The "host" has no lifescope: every session ships the
bundle and runs it on Debian's own /usr/bin/python3. After each, nothing of the session may
be left running on the host, nor its private directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from textual.widgets import DataTable, Static

from lifescope.options import CollectorOptions
from lifescope.recording import load
from lifescope.remote import spec
from lifescope.remote.link import RemoteSession
from lifescope.samples import (
    CollectorCost,
    Hello,
    LinkGap,
    ProbeStatus,
    StacksWindow,
    TargetGone,
)
from lifescope.session import CollectorFailed
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane
from tests.remote.conftest import Target, leftovers, private_dirs, wait_gone
from tests.remote.sshd import Sshd

PANES = ("connections", "layers", "threads", "gil")


def rows(app: LifescopeApp, pane: str) -> int:
    return app.query_one(f"#{pane}", Pane).query_one(DataTable).row_count


def assert_host_clean(host: Sshd, user: str, target: Target) -> None:
    left: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = leftovers(host, user, {target.pid})
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"left running on the host: {left}"
    assert not private_dirs(host.users[user].uid)
    assert target.state() != "T", "the target was left stopped"


async def test_attach_over_ssh_every_pane_live(
    host: Sshd, target_as: Callable[[str], Target]
) -> None:
    target = target_as("a")
    target.load()
    remote = spec.parse(host.url("a", target.pid))
    session = RemoteSession(remote, CollectorOptions())
    app = LifescopeApp(remote.pid, remote=session)
    async with app.run_test(size=(100, 30)) as pilot:

        def statuses() -> dict[str, str]:
            return {s.probe: s.status for s in app.timeline.statuses.values()}

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(rows(app, p) > 0 for p in PANES) and statuses().get("stacks") == "ok":
                break
            await pilot.pause(0.3)
        assert all(rows(app, p) > 0 for p in PANES), {p: rows(app, p) for p in PANES}
        header = str(app.query_one("#header", Static).render())
        assert f"pid {target.pid} on 127.0.0.1" in header and "● live" in header
        threads = app.query_one("#threads", Pane).query_one(DataTable)
        names = {str(threads.get_row_at(i)[0]) for i in range(threads.row_count)}
        assert "gil-hog" in names
        # The GIL reader may say "degraded" on a busy machine (late reads); it still reads.
        assert statuses().get("gil") in ("ok", "degraded"), statuses()
        first = session.first
        assert first is not None and first.mode == "bundle"
        print(f"\nbundle: {first.shipped_bytes:,} bytes to Python {first.host_python}; ready "
              f"{first.ready_s:.2f} s, first sample {first.first_sample_s:.2f} s")  # fmt: skip

        # The link drops: the header says so with the time, the panes keep what they had.
        first_t, received = app.timeline.first_t, app.timeline.received
        assert session.current is not None
        os.kill(session.current.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "LINK DOWN since" not in str(app.query_one("#header", Static).render()):
            assert time.monotonic() < deadline, "the header never said the link was down"
            await pilot.pause(0.2)
        header = str(app.query_one("#header", Static).render())
        down = app.timeline.link_down
        assert down is not None and "data kept" in header
        assert time.strftime("since %H:%M:%S", time.localtime(down.wall_start)) in header
        assert all(rows(app, p) > 0 for p in PANES)
        while "● live" not in str(app.query_one("#header", Static).render()):
            assert time.monotonic() < deadline + 30, "never reconnected"
            await pilot.pause(0.2)
        assert app.timeline.first_t == first_t and app.timeline.received > received
        assert len(app.timeline.gaps) == 1
        await pilot.press("q")
    assert_host_clean(host, "a", target)
    assert target.served > 0


def test_connection_killed_mid_session_reconnects_and_marks_the_gap(
    host: Sshd, target_as: Callable[[str], Target], tmp_path
) -> None:
    target = target_as("a")
    target.load()
    record = tmp_path / "remote.lsr"
    options = CollectorOptions(record=str(record), probes=("threads", "sockets", "stacks", "gil"))
    session = RemoteSession(spec.parse(host.url("a", target.pid)), options)
    seen: list[object] = []
    done = threading.Event()

    def read() -> None:
        try:
            for sample in session.samples():
                seen.append(sample)
        finally:
            done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait(predicate: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, [type(s).__name__ for s in seen[-20:]]
            assert not done.is_set() or predicate(), session.last_error
            time.sleep(0.1)

    wait(lambda: sum(isinstance(s, CollectorCost) for s in seen) >= 2)
    first_hello = next(s for s in seen if isinstance(s, Hello))
    # The bundle lives in a directory only the session's user can enter.
    [private] = private_dirs(host.users["a"].uid)
    assert private.startswith(f"lifescope-remote-{first_hello.collector_pid}-")
    assert os.stat(f"/tmp/{private}").st_mode & 0o777 == 0o700
    assert session.current is not None
    os.kill(session.current.proc.pid, signal.SIGKILL)  # the link dies: ssh is gone
    wait(lambda: any(isinstance(s, LinkGap) and s.ongoing for s in seen))
    # The host's collector dies with its session.
    assert not wait_gone([first_hello.collector_pid]), "remote collector outlived its session"
    wait(lambda: any(isinstance(s, LinkGap) and not s.ongoing for s in seen))
    hellos = [s for s in seen if isinstance(s, Hello)]
    assert len(hellos) == 2
    wait(lambda: isinstance(seen[-1], CollectorCost) and seen[-1].t > hellos[1].mono_at_start)
    kept = len(seen)
    session.stop()
    reader.join(15)
    assert not reader.is_alive()
    assert_host_clean(host, "a", target)

    recording = load(str(record))
    assert recording.problem is None
    gaps = [s for s in recording.samples if isinstance(s, LinkGap)]
    assert [g.ongoing for g in gaps] == [True, False]
    closed = gaps[1]
    assert closed.start < closed.t
    before = [s for s in recording.samples if getattr(s, "t", 1e18) <= closed.start]
    after = [s for s in recording.samples if getattr(s, "t", -1) >= closed.t]
    assert before and after
    assert len(recording.samples) >= kept - 5  # every sample seen is in the recording


def test_a_target_that_exits_during_an_outage_is_gone_not_retried(
    host: Sshd, target_as: Callable[[str], Target]
) -> None:
    target = target_as("a")
    options = CollectorOptions(probes=("threads",))
    session = RemoteSession(spec.parse(host.url("a", target.pid)), options)
    seen: list[object] = []
    samples = session.samples()
    for sample in samples:
        seen.append(sample)
        if isinstance(sample, CollectorCost):
            break
    assert session.current is not None
    os.kill(session.current.proc.pid, signal.SIGKILL)
    target.stop()  # while the link is down
    rest = list(samples)  # ends by itself: no reconnection loop
    assert isinstance(rest[0], LinkGap) and rest[0].ongoing
    gone = rest[-1]
    assert isinstance(gone, TargetGone) and "no process with pid" in gone.reason
    assert session.connections == 1


def test_target_of_another_user_needs_sudo(host: Sshd, target_as: Callable[[str], Target]) -> None:
    target = target_as("b")
    url = host.url("a", target.pid)
    options = CollectorOptions(seconds=4, probes=("threads", "stacks", "sockets"))
    failed = None
    statuses: dict[str, str] = {}
    try:
        session = RemoteSession(spec.parse(url), options, reconnect=False)
        for sample in session.samples():
            if isinstance(sample, ProbeStatus):
                statuses[sample.probe] = sample.status
    except CollectorFailed as exc:
        failed = str(exc)
    assert failed is not None or statuses.get("stacks") == "denied", (failed, statuses)
    assert_host_clean(host, "a", target)

    session = RemoteSession(spec.parse(url), options, sudo=True, reconnect=False)
    got: list[object] = list(session.samples())
    statuses = {s.probe: s.status for s in got if isinstance(s, ProbeStatus)}
    assert statuses.get("stacks") == "ok", statuses
    assert any(isinstance(s, StacksWindow) and s.spans for s in got)
    assert target.state() != "T"
    # The collector ran as root under sudo: it and its private directory are gone too.
    hello = next(s for s in got if isinstance(s, Hello))
    assert not wait_gone([hello.collector_pid])
    assert not [
        d for d in private_dirs(0) if d.startswith(f"lifescope-remote-{hello.collector_pid}-")
    ]
    assert_host_clean(host, "a", target)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifescope", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_snapshot_and_record_from_the_command_line(
    host: Sshd, target_as: Callable[[str], Target], tmp_path
) -> None:
    target = target_as("a")
    target.load()
    url = host.url("a", target.pid)
    done = _cli("snapshot", url, "--seconds", "3", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["target"]["pid"] == target.pid
    assert any(t["name"] == "gil-hog" for t in report["threads"])
    out = tmp_path / "s.lsr"
    done = _cli("record", url, "-o", str(out), "--seconds", "3", "--lean")
    assert done.returncode == 0, done.stderr
    recording = load(str(out))
    assert recording.hello.pid == target.pid
    costs = [s for s in recording.samples if isinstance(s, CollectorCost)]
    assert costs and costs[-1].lean and costs[-1].rate_scale == 0.25
    assert_host_clean(host, "a", target)


def test_doctor_checks_the_host_and_names_the_fix(
    host: Sshd, target_as: Callable[[str], Target]
) -> None:
    target = target_as("b")
    url = host.url("a", target.pid)
    done = _cli("doctor", url)
    assert done.returncode == 1, done.stdout
    assert "[ok  ] ssh: logged in" in done.stdout
    assert "[ok  ] python:" in done.stdout
    line = next(ln for ln in done.stdout.splitlines() if "ptrace" in ln)
    assert "FAIL" in line and "--sudo" in line, done.stdout
    assert "CAP_NET_RAW" in done.stdout
    done = _cli("doctor", url, "--sudo")
    assert done.returncode == 0, done.stdout
    assert "[ok  ] ptrace" in done.stdout and "[ok  ] CAP_NET_RAW" in done.stdout


def test_unreachable_host_bad_pid_and_bad_spec_say_the_fix(host: Sshd) -> None:
    done = _cli("snapshot", f"ssh://nobody@127.0.0.1:{host.port}/1", "--seconds", "1")
    assert done.returncode == 1
    assert "ssh to nobody@127.0.0.1 failed" in done.stderr and "BatchMode" in done.stderr
    done = _cli("snapshot", host.url("a", 999_999), "--seconds", "1")
    assert done.returncode == 1
    assert done.stderr.startswith("lifescope: no process with pid 999999"), done.stderr
    done = _cli("attach", "ssh://host/notapid")
    assert done.returncode == 2 and "names no process id" in done.stderr


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _local_ssh_clients(host: Sshd) -> list[int]:
    """ssh clients connected to the test server (this machine's side of the link)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                continue
            if argv[:1] == [b"ssh"] and str(host.port).encode() in argv:
                found.append(int(name))
    return found


def test_lifescope_killed_leaves_nothing_on_the_host_and_keeps_its_recording(
    host: Sshd, target_as: Callable[[str], Target], tmp_path
) -> None:
    """SIGKILL: no handler runs, no stop is sent. ssh loses its stdin, the channel closes, the
    host's collector ends; what was flushed locally replays."""
    target = target_as("a")
    target.load()
    out = tmp_path / "killed.lsr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifescope", "record", host.url("a", target.pid), "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.stat().st_size > 20_000:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        assert host.pids_of("a") != [target.pid], "no session on the host yet"
        ssh = [p for p in _local_ssh_clients(host) if _parent(p) == proc.pid]
        assert ssh, "no ssh client under lifescope"
    finally:
        proc.kill()
        proc.wait()
    assert_host_clean(host, "a", target)
    assert not wait_gone(ssh), "the local ssh client outlived lifescope"
    recording = load(str(out))
    assert recording.hello.pid == target.pid
    assert sum(isinstance(s, CollectorCost) for s in recording.samples) >= 1
