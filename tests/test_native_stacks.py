"""The native stack walker (issue 17 spike) against real processes: no mocks.

What must hold for it to replace py-spy's windows: the known call chain of a thread is read,
innermost first, with py-spy's names (qualified) and the target's own files and lines; the
threading names are found; a thread that exits disappears from the next sample; the GIL loop
can carry the walks on its own wake-ups; and the window built from the samples has the shape
a py-spy window has. Cost is measured in bench/bench_native_stacks.py, not here.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import pytest

from lifescope.probes import native_stacks
from lifescope.probes.native_stacks import EMPTY, OK, NativeStacks, unpack_frames
from tests.interpreters import DEBIAN_VERSIONS, python_for, root_of
from tests.test_gil_reader import Target, spawn  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(
    native_stacks._sampler is None, reason="the compiled sampler was not built"
)

# "spinner" runs three deep in known functions; "short" lives until the test writes "exit"
# into a file it polls; the main thread sleeps in <module>.
SCRIPT = """
import os, sys, threading, time

class Worker:
    def outer(self):
        return self.middle()

    def middle(self):
        return inner_spin()

def inner_spin():
    x = 0
    while True:
        x += 1

def short(flag):
    while not os.path.exists(flag):
        time.sleep(0.01)

spinner = threading.Thread(target=Worker().outer, name="spinner", daemon=True)
spinner.start()
shorty = threading.Thread(target=short, args=(sys.argv[-1],), name="short", daemon=True)
shorty.start()
time.sleep(0.2)
print("TIDS", spinner.native_id, shorty.native_id, flush=True)
print("READY", flush=True)
time.sleep(3600)
"""


def _pythons() -> list[object]:
    """The dev venv's Python (3.11), pyenv's 3.8-3.13 where present, and Debian's 3.14 and
    3.15 (chrooted; named by version, provisioned on first use)."""
    found: list[object] = [pytest.param(sys.executable, id=f"3.{sys.version_info.minor}")]
    root = os.environ.get("PYENV_ROOT", "/root/.pyenv")
    for minor in (8, 9, 10, 12, 13):
        exes = sorted(glob.glob(f"{root}/versions/3.{minor}.*/bin/python3.{minor}"))
        if exes and minor != sys.version_info.minor:
            found.append(pytest.param(exes[0], id=f"3.{minor}"))
    found += [pytest.param(version, id=version) for version in DEBIAN_VERSIONS]
    return found


def _start(spawn: Callable[..., Target], exe: str, flag: str) -> tuple[Target, int, int]:  # noqa: F811
    """The target and its spinner's and short thread's ids (printed on a line of their own
    before READY: the READY line itself was seen split across reads under load). A Debian
    version runs chrooted: it sees `flag` at the same path under its root."""
    if exe in DEBIAN_VERSIONS:
        flag = flag[len(str(root_of(exe))) :]
        exe = python_for(exe)
    script = SCRIPT.replace("sys.argv[-1]", repr(flag))
    target = spawn(exe, script)
    line = next(x for x in target.before_ready.splitlines() if x.startswith(b"TIDS"))
    spinner, short = (int(x) for x in line.split()[1:])
    return target, spinner, short


def _by_tid(stacks: NativeStacks) -> dict[int, tuple[int, bytes]]:
    """Our tid → (status, packed frames) of one walk (3.8-3.10 name threads by pthread_t)."""
    (_, threads), *_ = stacks.walk()
    out = {}
    for raw, status, packed in threads:
        tid = stacks.tid(raw)
        assert tid is not None
        out[tid] = (status, packed)
    return out


@pytest.mark.parametrize("exe", _pythons())
def test_the_known_chain_is_read_and_an_exited_thread_disappears(
    spawn: Callable[..., Target],  # noqa: F811
    exe: str,
    tmp_path: object,
    request: pytest.FixtureRequest,
) -> None:
    flag = os.path.join(str(tmp_path), "exit")
    if exe in DEBIAN_VERSIONS:  # a flag the chrooted target can see
        inside = tempfile.mkdtemp(dir=root_of(exe) / "tmp")
        request.addfinalizer(lambda: shutil.rmtree(inside, ignore_errors=True))
        flag = inside + "/exit"
    target, spinner, short = _start(spawn, exe, flag)
    stacks = NativeStacks(target.pid)

    threads = _by_tid(stacks)
    assert {target.pid, spinner, short} <= set(threads)
    status, packed = threads[spinner]
    assert status == OK
    frames = stacks.frames(packed)
    assert frames is not None
    qualified = "" if stacks.layout.instr_is_lasti else "Worker."
    # py-spy's names: qualified from 3.11 (co_qualname), bare before.
    assert [f.name for f in frames[:3]] == [
        "inner_spin", f"{qualified}middle", f"{qualified}outer"
    ]  # fmt: skip
    assert all(f.file == "<string>" for f in frames[:3])  # `python -c`, as py-spy shows it
    assert frames[-1].name.endswith("_bootstrap") and frames[-1].file.endswith("threading.py")
    assert all(f.line > 0 for f in frames)
    assert len(unpack_frames(packed)) == len(frames)
    main = stacks.frames(threads[target.pid][1])
    assert main is not None and main[0].name == "<module>"
    short_frames = stacks.frames(threads[short][1])
    # It polls os.path.exists: caught in there now and then.
    assert short_frames is not None and "short" in [f.name for f in short_frames[:2]]

    names = stacks.read_thread_names()
    assert names.get(spinner) == "spinner" and names.get(target.pid) == "MainThread"

    open(flag, "w").close()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{target.pid}/task/{short}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{target.pid}/task/{short}")
    threads = _by_tid(stacks)
    assert short not in threads and len(threads) == 2
    assert threads[spinner][0] == OK


def test_windows_look_like_py_spy_windows(spawn: Callable[..., Target], tmp_path: object) -> None:  # noqa: F811
    target, spinner, short = _start(spawn, sys.executable, os.path.join(str(tmp_path), "never"))
    stacks = NativeStacks(target.pid)
    start = time.monotonic()
    samples, err = stacks.loop(0.01, start + 0.5)
    end = time.monotonic()
    assert err == 0 and 30 <= len(samples) <= 60  # ~100 Hz, whatever the machine's load
    window = stacks.window(samples, start, end, 100.0)
    assert window.rate_hz == 100.0 and window.errors <= len(samples) // 10
    assert window.samples >= 3 * len(samples) - window.errors
    tids = {span.tid for span in window.spans}
    assert {target.pid, spinner, short} <= tids
    assert dict(window.thread_names)[spinner] == "spinner"
    for span in window.spans:
        assert start <= span.start <= span.end <= end
        assert all(0 <= i < len(window.frames) for i in span.stack)
    # A thread parked in one place is one span, not one per sample (the main thread may still
    # be between its READY print and its sleep at the first sample).
    main = [s for s in window.spans if s.tid == target.pid]
    assert len(main) <= 2 and main[-1].end - main[-1].start >= 0.8 * (end - start - 0.05)
    chain = {tuple(window.frames[i].name for i in s.stack[:3]) for s in window.spans}
    assert ("inner_spin", "Worker.middle", "Worker.outer") in chain

    # A thread first seen at a window's last walk holds that stack for one walk's period,
    # capped at the window's end. These real samples, with the main thread left out of all
    # but that walk, are a thread-per-request thread born just before it: with a span of no
    # length (the analysis drops those) its request read "code not visible".
    def main_ok(sample: tuple[float, tuple[tuple[int, int, bytes], ...]]) -> bool:
        return any(stacks.tid(n) == target.pid and st == OK and p for n, st, p in sample[1])

    k = max(i for i, sample in enumerate(samples) if main_ok(sample))
    late = [(t, tuple(x for x in ths if stacks.tid(x[0]) != target.pid)) for t, ths in samples[:k]]
    late.append(samples[k])
    last = samples[k][0]
    for until, held in ((last + 0.004, 0.004), (last + 1.0, 0.01)):
        born = stacks.window(late, start, until, 100.0)
        spans = [(s.start, round(s.end - s.start, 6)) for s in born.spans if s.tid == target.pid]
        assert spans == [(last, held)]


def test_the_gil_loop_carries_the_walks(spawn: Callable[..., Target], tmp_path: object) -> None:  # noqa: F811
    from lifescope.probes.gil_batch import Pace, native_batch
    from lifescope.probes.gil_reader import GilReader
    from lifescope.probes.memory import PreparedRead

    target, spinner, _ = _start(spawn, sys.executable, os.path.join(str(tmp_path), "never"))
    stacks = NativeStacks(target.pid)
    with GilReader.open(target.pid) as reader:
        run = native_batch(reader.batch_layout, target.pid, stacks.layout.as_tuple())
        raw = PreparedRead(target.pid, reader.batch_layout.regions).read()
        now = time.monotonic()
        pace = Pace(0.0005, 0.002, 0.2, now, 0.0005, now, now, raw, reads=1)
        until = now + 0.5
        while pace.previous < until:
            run(pace, min(until, time.monotonic() + 0.1), reader.known_holders())
    assert pace.reads > 10 * len(pace.stack_samples) > 0  # a walk rides every ~20th read
    statuses = {tid: status for _, threads in pace.stack_samples for tid, status, _ in threads}
    assert statuses[spinner] == OK and statuses[target.pid] in (OK, EMPTY)


def test_a_target_that_exits_ends_the_loop_with_an_error_not_an_exception(
    spawn: Callable[..., Target],  # noqa: F811
    tmp_path: object,
) -> None:
    target, _, _ = _start(spawn, sys.executable, os.path.join(str(tmp_path), "never"))
    stacks = NativeStacks(target.pid)
    assert stacks.walk()
    os.kill(target.pid, 9)
    deadline = time.monotonic() + 5
    while stacks.walk() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stacks.walk() == []
    samples, err = stacks.loop(0.01, time.monotonic() + 0.2)
    assert err != 0 and samples == []


def test_the_gil_probe_sends_the_stacks_probes_windows_when_ridden(
    spawn: Callable[..., Target],  # noqa: F811
    tmp_path: object,
) -> None:
    """``LIFESCOPE_NATIVE_STACKS=1``'s wiring, without the environment: the GIL probe walks
    and emits 1 s windows as the stacks probe, which says so and starts no py-spy."""
    from lifescope.probes.gil import GilProbe
    from lifescope.probes.pyspy import StacksProbe
    from lifescope.samples import ProbeStatus, StacksWindow
    from lifescope.target import resolve

    target, spinner, _ = _start(spawn, sys.executable, os.path.join(str(tmp_path), "never"))
    out: list[object] = []
    watched = resolve(target.pid)
    stacks = StacksProbe(watched, out.append)
    stacks.ride.wanted = True
    gil = GilProbe(watched, out.append, stacks=stacks)
    stacks.start()
    gil.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(isinstance(s, StacksWindow) for s in out) < 2:
        time.sleep(0.1)
    gil.stop()
    stacks.stop()
    gil.join(5)
    stacks.join(5)
    windows = [s for s in out if isinstance(s, StacksWindow)]
    assert len(windows) >= 2 and stacks.process is None
    assert all(w.rate_hz == 100.0 and 0.9 <= w.t - w.start <= 1.3 for w in windows)
    assert windows[-1].samples >= 150  # ~100 walks × 3 threads a second, whatever the load
    names = {
        tuple(w.frames[i].name for i in span.stack[:3])
        for w in windows
        for span in w.spans
        if span.tid == spinner
    }
    assert ("inner_spin", "Worker.middle", "Worker.outer") in names
    statuses = [s for s in out if isinstance(s, ProbeStatus) and s.probe == "stacks"]
    assert statuses and "native walker" in (statuses[-1].reason or "")


@pytest.mark.parametrize("exe", _pythons())
def test_the_batched_walk_reads_what_the_thread_by_thread_walk_reads(
    spawn: Callable[..., Target],  # noqa: F811
    exe: str,
    tmp_path: object,
) -> None:
    """Parked threads (main, short) must come out byte for byte the same either way, in the
    same thread order; the spinner's innermost frame moves, its callers must not."""
    import dataclasses

    target, spinner, short = _start(spawn, exe, os.path.join(str(tmp_path), "never"))
    stacks = NativeStacks(target.pid)
    walks = {}
    for batched in (False, True):
        layout = dataclasses.replace(stacks.layout, batched=batched).as_tuple()
        samples, err = native_stacks._sampler.stack_walk(target.pid, layout)
        assert err == 0
        walks[batched] = samples[0][1]
    assert [t[0] for t in walks[False]] == [t[0] for t in walks[True]]
    one, batched = ({stacks.tid(r): (s, p) for r, s, p in walks[k]} for k in (False, True))
    for tid in (target.pid, short):
        assert one[tid] == batched[tid] and one[tid][0] == OK
    assert one[spinner][1][16:] == batched[spinner][1][16:], (one[spinner], batched[spinner])
    # In a loop, later walks reuse the previous walk's thread states (one system call).
    samples, err = stacks.loop(0.005, time.monotonic() + 0.1)
    assert err == 0 and len(samples) >= 5
    assert all({stacks.tid(r) for r, _, _ in threads} == set(one) for _, threads in samples)
