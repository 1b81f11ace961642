"""The threads probe against a target whose threads do known things."""

from __future__ import annotations

import json
import time

from lifescope import syscalls
from lifescope.probes.threads import ThreadsProbe, parse_stat, parse_syscall, rate_for
from lifescope.target import resolve

TARGET = """
import json, socket, threading, time

a, b = socket.socketpair()
ids = {}
def receiver():
    ids["receiver"] = threading.get_native_id()
    a.recv(10)  # blocks forever: nobody writes to b
def sleeper():
    ids["sleeper"] = threading.get_native_id()
    while True:
        time.sleep(5)
def spinner():
    ids["spinner"] = threading.get_native_id()
    while True:
        pass
for fn in (receiver, sleeper, spinner):
    threading.Thread(target=fn, daemon=True).start()
while len(ids) < 3:
    time.sleep(0.01)
ids["fd"] = a.fileno()
print("READY " + json.dumps(ids), flush=True)
time.sleep(60)
"""


def test_syscalls_and_fds_of_known_threads(python_target) -> None:  # type: ignore[no-untyped-def]
    proc = python_target(TARGET)
    ids = json.loads(proc.ready_line)
    target = resolve(proc.pid)
    samples = []
    probe = ThreadsProbe(target, samples.append)
    time.sleep(0.2)  # let the threads settle into their calls
    first = probe.read_once()
    time.sleep(0.5)
    second = probe.read_once()
    by_tid = {t.tid: t for t in second.threads}
    assert set(ids[k] for k in ("receiver", "sleeper", "spinner")) <= set(by_tid)
    receiver = by_tid[ids["receiver"]]
    assert syscalls.name(receiver.syscall) in ("recvfrom", "read")
    assert receiver.arg0 == ids["fd"]
    assert receiver.state == "S"
    sleeper = by_tid[ids["sleeper"]]
    assert syscalls.name(sleeper.syscall) in ("clock_nanosleep", "nanosleep", "select")
    spinner = by_tid[ids["spinner"]]
    before = {t.tid: t.cpu_ticks for t in first.threads}
    # spinning for 0.5 s costs ~50 ticks at 100 Hz; allow for a loaded 2-core machine
    assert spinner.cpu_ticks - before[spinner.tid] >= 15
    assert receiver.cpu_ticks - before[receiver.tid] <= 1


def test_parsers_on_real_proc_lines() -> None:
    raw = open("/proc/self/stat", "rb").read()
    comm, state, ticks = parse_stat(raw)
    assert comm == open("/proc/self/comm").read().strip()
    assert state == "R" and ticks >= 0
    assert parse_stat(b"12 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13")[0] == "a) b (c)"
    assert parse_syscall(b"running\n") == (-1, None)
    assert parse_syscall(b"-1 0x7ffd 0x7f12\n") == (-1, None)
    assert parse_syscall(b"45 0x7 0x55 0x10 0x0 0x0 0x0 0x7ffd 0x7f\n") == (45, 7)


def test_rate_adapts_to_thread_count() -> None:
    assert rate_for(2) == 100
    assert rate_for(40) == 10
    assert rate_for(500) == 10
    assert 10 < rate_for(10) < 100
