"""Thread states, forked workers and unknown versions on the CPythons users run now: Debian's
3.14 and 3.15 (chrooted, so their binaries resolve only through /proc/PID/root), the same in a
container of their own (pid, mount and network namespaces), and one pyenv version beside them
for comparison. Each thread's truth is what the target made it do."""

from __future__ import annotations

import json
import time

import pytest

from lifescope.analysis import report
from lifescope.probes import gil_reader, offsets
from lifescope.probes.gil_reader import GilRead, GilReader, GilUnavailable
from lifescope.session import collect
from tests.interpreters import python_for

ROLES = """
import json, socket, threading, time
a, b = socket.socketpair()
lock = threading.Lock()
lock.acquire()
def receiver():
    a.recv(10)  # blocks: nobody writes to b
def sleeper():
    while True:
        time.sleep(5)
def spinner():
    while True:
        sum(range(100))
def locked():
    lock.acquire()  # held by the main thread for ever
for fn in (receiver, sleeper, spinner, locked):
    threading.Thread(target=fn, name=fn.__name__, daemon=True).start()
time.sleep(0.3)
print("READY", flush=True)
time.sleep(120)
"""

def _held_reads(reader: GilReader, count: int, within: float) -> list[GilRead]:
    """Up to `count` reads that found the GIL held, read 2,000 times a second for at most
    `within` seconds: a spinner on a loaded machine may not run during any given 2 ms."""
    held: list[GilRead] = []
    deadline = time.monotonic() + within
    while len(held) < count and time.monotonic() < deadline:
        read = reader.read()
        if read.locked:
            held.append(read)
        time.sleep(0.0005)
    return held


VERSIONS = ["3.13", "3.14", "3.15", "3.14-container", "3.15-container"]


def _start(python_target, code: str, version: str, stdin: bool = False):  # type: ignore[no-untyped-def]
    return python_target(
        code,
        python=python_for(version.removesuffix("-container")),
        stdin=stdin,
        container=version.endswith("-container"),
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_thread_states_of_known_threads(python_target, version: str) -> None:  # type: ignore[no-untyped-def]
    """A spinner runs Python with the GIL, a reader waits on its socket, a sleeper sleeps, a
    thread blocks on a lock: each one's dominant state and name, joined across the GIL
    probe (thread ids from the target's memory), /proc and py-spy."""
    proc = _start(python_target, ROLES, version)
    result = report.build(
        collect(proc.target_pid, 3.0, probes=("gil", "threads", "stacks"), full_rate=True).window()
    )
    probes = {p.name: p for p in result.probes}
    assert probes["gil"].status == "ok", probes["gil"]
    if version.endswith("-container"):
        assert "pid namespace" in (probes["gil"].reason or ""), probes["gil"]
    by_name = {t.name: t for t in result.threads}
    assert {"receiver", "sleeper", "spinner", "locked"} <= set(by_name), list(by_name)

    def dominant(name: str) -> str:
        shares = dict(by_name[name].state_shares)
        return max(shares, key=shares.__getitem__)

    assert dominant("spinner") == "python", by_name["spinner"]
    assert (by_name["spinner"].gil_share or 0) >= 0.8, by_name["spinner"]
    assert dominant("receiver") == "io", by_name["receiver"]
    assert dominant("sleeper") == "sleep", by_name["sleeper"]
    assert dominant("locked") == "lock", by_name["locked"]
    assert by_name["receiver"].top_frame and "receiver" in by_name["receiver"].top_frame


FORKED_WORKER = """
import ctypes, json, os, sys, time
# fork(2) straight from C, as uWSGI forks its workers: CPython's own after-fork hook does not
# run, so the child's thread state keeps the parent's thread id.
libc = ctypes.CDLL(None, use_errno=True)
parent_tid = __import__("threading").get_native_id()
pid = libc.fork()
if pid == 0:
    while True:
        sum(range(100))
print("READY " + json.dumps({"child": pid, "parent_tid": parent_tid}), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("version", ["3.12", "3.14"])
def test_forked_worker_keeping_its_parents_thread_id(python_target, version: str) -> None:  # type: ignore[no-untyped-def]
    proc = _start(python_target, FORKED_WORKER, version)
    info = json.loads(proc.ready_line)
    child = info["child"]
    try:
        reader = GilReader.open(child)
        assert reader.forked_from == info["parent_tid"], reader.note
        assert "forked worker" in (reader.note or "")
        # The child only spins, so it holds the GIL once it runs at all; on a loaded machine
        # it may not have been scheduled yet when READY arrives: read until it has been seen
        # holding it 150 times (bounded), rather than assuming it runs by now.
        held = _held_reads(reader, 150, within=10.0)
        assert len(held) >= 150
        assert {r.holder_tid for r in held} == {child}  # type: ignore[attr-defined]
    finally:
        import os
        import signal

        os.kill(child, signal.SIGKILL)


def test_untested_newer_version_is_attempted_and_says_what_validated(
    python_target, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A CPython newer than every table (here: 3.15 with lifescope's 3.15 table withheld, so
    3.14's is the newest) is read through its own _Py_DebugOffsets, validated, and reported as
    untested with what validated it. 3.15 inserted fields into the thread-state section of
    those offsets, so this also checks that native_thread_id is found by value."""
    proc = _start(python_target, ROLES, "3.15")
    real_load = offsets.load_offsets
    monkeypatch.setattr(
        gil_reader, "load_offsets", lambda a, b: None if (a, b) == (3, 15) else real_load(a, b)
    )
    monkeypatch.setattr(gil_reader, "support", lambda a, b: "untested")
    monkeypatch.setattr(gil_reader, "newest_table", lambda: real_load(3, 14))
    reader = GilReader.open(proc.target_pid)
    assert reader.untested
    assert "untested version 3.15" in (reader.note or ""), reader.note
    assert "validated: switch interval 5000 µs" in (reader.note or ""), reader.note
    assert reader._layout.tstate_tid_off == real_load(3, 15).tstate["native_thread_id"]
    # Over up to 3 s, not 300 back-to-back reads: those span ~2 ms, and once (a CPU hog on
    # the machine) none of them found the spinner's GIL held.
    held = _held_reads(reader, 50, within=3.0)
    tasks = {int(t) for t in __import__("os").listdir(f"/proc/{proc.target_pid}/task")}
    assert held and all(r.holder_tid in tasks for r in held)


def test_validation_failure_names_what_failed_and_the_remedy(python_target) -> None:  # type: ignore[no-untyped-def]
    """Pretend a 3.14 target is 3.13 — a layout that does not fit: refused, naming what did
    not validate, with the remedy for a wrong layout (not a permission or fork remedy)."""
    proc = _start(python_target, ROLES, "3.14")
    binary = gil_reader.open_python_binary(proc.target_pid, GilUnavailable, "")
    table = offsets.load_offsets(3, 13)
    assert table is not None
    mem = gil_reader.RemoteMemory(proc.target_pid)
    with pytest.raises(GilUnavailable) as info:
        reader = GilReader._resolve(proc.target_pid, binary, table, mem)
        reader._validate(attempts=3)
    assert "gen_offsets.py" in info.value.remedy, info.value


@pytest.mark.parametrize("version", ["3.14", "3.14-container"])
def test_doctor_says_when_a_target_is_containerised(python_target, version: str) -> None:  # type: ignore[no-untyped-def]
    from lifescope.doctor import run

    proc = _start(python_target, ROLES, version)
    lines = {c.name: c for c in run(proc.target_pid)}
    container = lines["container"]
    assert container.ok
    if version.endswith("-container"):
        for ns in ("pid", "mnt", "net"):
            assert f"own {ns} namespace" in container.detail, container
    else:  # chrooted only: the same namespaces, another root
        assert "chroot" in container.detail and "namespace" not in container.detail, container
    assert lines[f"pid {proc.target_pid}"].ok
    assert lines["py-spy dump"].ok, lines["py-spy dump"]
