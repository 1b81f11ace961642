"""The threads probe's /proc reads riding the GIL probe's compiled loop (issue 17), on a real
target: the same truth as the probe's own loop (states, syscalls, CPU), at its rate, each
sample stamped with its read; threads born and ended mid-run seen; and when the ride is
refused or breaks, the threads probe samples on its own instead of going silent."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from lifescope import syscalls
from lifescope.probes.gil import GilProbe
from lifescope.probes.gil_batch import NATIVE
from lifescope.probes.threads import ThreadsProbe
from lifescope.samples import ProbeStatus, Sample, ThreadsSample
from lifescope.target import resolve

pytestmark = pytest.mark.skipif(not NATIVE, reason="the compiled GIL loop was not built")

TARGET = """
import json, socket, sys, threading, time

a, b = socket.socketpair()
ids = {}
def receiver():
    ids["receiver"] = threading.get_native_id()
    a.recv(10)  # blocks until the test writes a line: then a short-lived thread starts
    def brief():
        ids["brief"] = threading.get_native_id()
        print("BRIEF " + str(ids["brief"]), flush=True)
        time.sleep(1.0)
    threading.Thread(target=brief, daemon=True).start()
    time.sleep(60)
def spinner():
    ids["spinner"] = threading.get_native_id()
    while True:
        pass
for fn in (receiver, spinner):
    threading.Thread(target=fn, daemon=True).start()
while len(ids) < 2:
    time.sleep(0.01)
ids["fd"] = a.fileno()
print("READY " + json.dumps(ids), flush=True)
for line in sys.stdin:
    b.send(b"x")
"""


def _run(
    pid: int, seconds: float, native: bool = True, during: Callable[[], None] | None = None
) -> tuple[list[Sample], ThreadsProbe]:
    out: list[Sample] = []
    target = resolve(pid)
    threads = ThreadsProbe(target, out.append)
    threads.ride.wanted = True
    gil = GilProbe(target, out.append, native=native, threads=threads)
    threads.start()
    gil.start()
    try:
        time.sleep(seconds / 2)
        if during is not None:
            during()
        time.sleep(seconds / 2)
    finally:
        gil.stop()
        threads.stop()
        gil.join(5)
        threads.join(5)
    return out, threads


def test_samples_on_the_gil_loop_tell_the_truth(
    python_target: Callable[..., subprocess.Popen[bytes]],
) -> None:
    proc = python_target(TARGET, stdin=True)
    ids = json.loads(proc.ready_line)  # type: ignore[attr-defined]
    brief: list[int] = []

    def start_a_brief_thread() -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        brief.append(int(proc.stdout.readline().split()[1]))

    out, threads = _run(proc.pid, 3.0, during=start_a_brief_thread)
    samples = [s for s in out if isinstance(s, ThreadsSample)]
    statuses = [s for s in out if isinstance(s, ProbeStatus) and s.probe == "threads"]
    assert statuses and statuses[-1].status == "ok"
    assert statuses[-1].reason == "read on the GIL loop's wake-ups"
    # 100 Hz for a handful of threads (rate_for), as in the probe's own loop; at least 60 %
    # of it on a busy 2-core machine, and never two samples with the same read time.
    span = samples[-1].t - samples[0].t
    assert span > 2.0 and len(samples) >= 0.6 * 100 * span, (len(samples), span)
    times = [s.t for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    last = {t.tid: t for t in samples[-1].threads}
    receiver, spinner = last[ids["receiver"]], last[ids["spinner"]]
    assert receiver.state == "S" and syscalls.name(receiver.syscall) in (
        "clock_nanosleep", "nanosleep", "select",
    )  # fmt: skip
    assert spinner.state == "R" and spinner.syscall == -1
    first = {t.tid: t for t in samples[0].threads}
    # the spinner burns ~100 ticks a second of CPU; allow for a loaded machine
    assert spinner.cpu_ticks - first[ids["spinner"]].cpu_ticks >= 0.3 * 100 * span
    # The brief thread lives 1 s from mid-run: seen while it lives, gone after it ended.
    assert brief, "the target did not start its brief thread"
    seen = [s.t for s in samples if any(t.tid == brief[0] for t in s.threads)]
    assert seen and 0.5 <= seen[-1] - seen[0] <= 1.3, seen[-1] - seen[0] if seen else None
    assert brief[0] not in last
    assert threads._files == {}, "the GIL loop closes the files it read"


def test_a_refused_ride_leaves_the_probe_its_own_loop(
    python_target: Callable[..., subprocess.Popen[bytes]],
) -> None:
    proc = python_target(TARGET, stdin=True)
    out, threads = _run(proc.pid, 2.0, native=False)  # the Python GIL loop reads no files
    samples = [s for s in out if isinstance(s, ThreadsSample)]
    assert threads.ride.error == "the compiled GIL loop is not in use"
    assert len(samples) >= 60, len(samples)
    statuses = [s for s in out if isinstance(s, ProbeStatus) and s.probe == "threads"]
    assert statuses[-1].status == "ok" and statuses[-1].reason is None


def test_a_broken_ride_hands_back_to_the_probes_own_loop(
    python_target: Callable[..., subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the parsing on the GIL loop must cost neither probe its samples."""
    proc = python_target(TARGET, stdin=True)
    calls: list[float] = []

    def broken(self: ThreadsProbe, ticks: object) -> None:
        calls.append(time.monotonic())
        raise ValueError("a parsing bug")

    monkeypatch.setattr(ThreadsProbe, "ride_ticks", broken)
    out, _ = _run(proc.pid, 3.0)
    samples = [s for s in out if isinstance(s, ThreadsSample)]
    assert len(calls) == 1, "the GIL loop stops handing files over after the first failure"
    later = [s for s in samples if s.t > calls[0] + 1.2]  # the probe notices within ~1 s
    assert len(later) >= 40, len(later)
    statuses = [s for s in out if isinstance(s, ProbeStatus)]
    assert any(s.probe == "threads" and "a parsing bug" in (s.reason or "") for s in statuses)
    gil = [s for s in statuses if s.probe == "gil"]
    assert gil and gil[-1].status == "ok"
