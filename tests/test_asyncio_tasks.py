"""The asyncio task reader against real interpreters: every CPython 3.8-3.13 installed.

Why real processes: the reader is entirely about object layouts inside *other* binaries (the
``_asyncio`` Task struct, coroutine frames, dicts, sets, weak references); a mock would only
test our own assumptions.  Each target prints what it knows about itself (its task count, the
line its coroutines are parked on, the ids of its tasks) and the reader must find the same from
outside.  Every process started here is stopped by pid (``python_target`` or ``finally``).
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lifescope.analysis.tasks import (
    app_frame,
    await_point,
    counts_over_time,
    summarize,
    task_ages,
    task_source,
    task_tree,
)
from lifescope.probes.asyncio_reader import (
    AsyncioReader,
    TasksUnavailable,
    awaiting_from_frame,
    line_from_locations,
)
from lifescope.probes.tasks import TasksProbe
from lifescope.samples import ProbeStatus, TaskAwait, TaskInfo, TasksSample
from lifescope.target import resolve
from tests.interpreters import DEBIAN_VERSIONS, python_for

Start = Callable[..., subprocess.Popen[bytes]]


def _interpreters() -> list[object]:
    """pyenv's 3.8-3.13, the statically linked Debian python3.11 when present, and Debian's
    3.14 and 3.15 (chrooted; provisioned on first use by tests/interpreters.py)."""
    params: list[object] = []
    for minor in range(8, 14):
        found = sorted(glob.glob(f"/root/.pyenv/versions/3.{minor}.*/bin/python3.{minor}"))
        exe = found[-1] if found else None
        params.append(
            pytest.param(
                exe,
                id=f"3.{minor}",
                marks=pytest.mark.skipif(exe is None, reason=f"CPython 3.{minor} not installed"),
            )
        )
    static = "/usr/bin/python3.11"
    params.append(
        pytest.param(
            static,
            id="3.11-system",
            marks=pytest.mark.skipif(not os.path.exists(static), reason="no system python3.11"),
        )
    )
    params += [pytest.param(version, id=version) for version in DEBIAN_VERSIONS]
    return params


INTERPRETERS = _interpreters()


def _truth(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """What the target printed about itself after READY (JSON)."""
    ready: str = proc.ready_line  # type: ignore[attr-defined]
    truth: dict[str, Any] = json.loads(ready)
    return truth


def _cost_ms(reader: AsyncioReader, passes: int = 5) -> tuple[float, float, float]:
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        reader.read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), max(times)


# ------------------------------------------------------------------ (a) 2,000 Event waiters
EVENT_TARGET = """
import asyncio, json

N = 2000

async def parked(ev):
    await ev.wait()

async def main():
    ev = asyncio.Event()
    tasks = [asyncio.ensure_future(parked(ev)) for _ in range(N)]
    named = asyncio.get_event_loop().create_task(parked(ev), name="worker-7")
    await asyncio.sleep(0.1)
    coro = tasks[0].get_coro()
    truth = {
        "n": N,
        "total": len(asyncio.all_tasks()),
        "parked_line": coro.cr_frame.f_lineno,
        "wait_line": coro.cr_await.cr_frame.f_lineno,
        "wait_file": coro.cr_await.cr_code.co_filename,
        "named": id(named),
    }
    print("READY" + json.dumps(truth), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("python", INTERPRETERS)
def test_two_thousand_event_waiters(
    python: str, python_target: Start, record_property: Callable[[str, object], None]
) -> None:
    proc = python_target(EVENT_TARGET, python=python)
    truth = _truth(proc)
    reader = AsyncioReader.open(proc.pid)
    tasks, total, errors = reader.read()
    n = int(truth["n"])
    assert errors == 0
    assert abs(total - int(truth["total"])) <= 0.01 * n
    parked = [t for t in tasks if t.chain and t.chain[0].name == "parked"]
    assert abs(len(parked) - (n + 1)) <= 0.01 * n
    # Every one is parked at the same frame, awaiting the Event, on the lines the target reports.
    assert {t.awaiting for t in parked} == {"event"}
    assert {(t.chain[0].line, t.chain[1].name, t.chain[1].line) for t in parked} == {
        (truth["parked_line"], "Event.wait", truth["wait_line"])
    }
    assert {t.chain[1].file for t in parked} == {truth["wait_file"]}
    assert {t.state for t in parked} == {"pending"}
    named = [t for t in tasks if t.address == truth["named"]]
    assert [t.name for t in named] == ["worker-7"]
    assert all(re.fullmatch(r"Task-\d+", t.name) for t in parked if t not in named)
    summary = summarize([TasksSample(1.0, None, tuple(tasks), total, 0.0, errors)])
    assert summary is not None
    top = summary.top_awaiting[0]
    assert top.frame == "parked → asyncio.Event.wait"
    assert top.count >= 0.99 * n
    assert top.line == truth["parked_line"]
    median, low, high = _cost_ms(reader)
    record_property("read_ms_2000", round(median, 2))
    print(f"\n{python}: {len(tasks)} tasks, {median:.1f} ms per pass ({low:.1f}-{high:.1f})")


@pytest.mark.parametrize("python", INTERPRETERS[:6])
def test_max_tasks_caps_the_pass_but_total_counts_all(python: str, python_target: Start) -> None:
    proc = python_target(EVENT_TARGET, python=python)
    truth = _truth(proc)
    reader = AsyncioReader.open(proc.pid)
    tasks, total, _ = reader.read(max_tasks=100)
    assert len(tasks) == 100
    assert total == truth["total"]


# ------------------------------------------------------------------ (b) TCP server + middleware
SERVER_TARGET = """
import asyncio, json

async def slow_auth_middleware(reader, writer, handler):
    await asyncio.sleep(0.2)
    await handler(reader, writer)

async def handle_request(reader, writer):
    writer.write(b"ok\\n")
    await writer.drain()

async def on_connection(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            await slow_auth_middleware(reader, writer, handle_request)
    except ConnectionError:
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print("READY" + json.dumps({"port": port}), flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

CLIENTS = 40
LOAD_LIMIT_S = 20.0


def _client(port: int, stop: threading.Event, done: list[int]) -> None:
    """One keep-alive client: a request line, wait for the reply, repeat (bounded in time)."""
    deadline = time.monotonic() + LOAD_LIMIT_S
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            reader = sock.makefile("rb")
            while not stop.is_set() and time.monotonic() < deadline:
                sock.sendall(b"GET /\n")
                if not reader.readline():
                    return
                done.append(1)
    except OSError:
        return


@pytest.mark.parametrize("python", INTERPRETERS)
def test_tasks_parked_in_middleware_are_counted(python: str, python_target: Start) -> None:
    proc = python_target(SERVER_TARGET, python=python)
    port = int(_truth(proc)["port"])
    stop = threading.Event()
    done: list[int] = []
    clients = [
        threading.Thread(target=_client, args=(port, stop, done), daemon=True)
        for _ in range(CLIENTS)
    ]
    for c in clients:
        c.start()
    try:
        reader = AsyncioReader.open(proc.pid)
        deadline = time.monotonic() + 10
        while len(done) < 2 * CLIENTS and time.monotonic() < deadline:
            time.sleep(0.05)  # every client connected and in its request loop
        counts = []
        tops = []
        for _ in range(10):
            tasks, total, _ = reader.read()
            in_middleware = [
                t for t in tasks if any(a.name == "slow_auth_middleware" for a in t.chain)
            ]
            counts.append(len(in_middleware))
            summary = summarize([TasksSample(1.0, None, tuple(tasks), total, 0.0)])
            assert summary is not None
            tops.append(summary.top_awaiting[0])
            for t in in_middleware:
                assert t.chain[0].name == "on_connection"
            # The loop keeps running while we read: a task may run (or finish its sleep) between
            # two levels of its chain.  Such reads are cut or counted as errors, but a sample is
            # a sample of a moving target; nearly all must show the sleep.
            asleep = [t for t in in_middleware if t.awaiting == "sleep"]
            assert len(asleep) >= 0.9 * len(in_middleware) - 1, in_middleware
            time.sleep(0.13)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=LOAD_LIMIT_S)
    assert done, "the load never got a reply"
    # Each connection's task spends nearly all its time in the 0.2 s sleep, so most are there
    # at any instant (fewer when this shared machine is busy: clients answer late), and never
    # more than there are connections.
    assert max(counts) >= 0.6 * CLIENTS, counts
    assert max(counts) <= CLIENTS, counts
    assert any(
        p.frame == "slow_auth_middleware → asyncio.sleep" and p.count >= 0.6 * CLIENTS for p in tops
    ), tops


# ------------------------------------------------------------------ (c) task awaits task
NESTED_TARGET = """
import asyncio, json

async def leaf():
    await asyncio.sleep(3600)

async def middle(t):
    await t

async def top(t):
    return await t

async def main():
    c = asyncio.ensure_future(leaf())
    b = asyncio.ensure_future(middle(c))
    a = asyncio.ensure_future(top(b))
    await asyncio.sleep(0.05)
    print("READY" + json.dumps({"a": id(a), "b": id(b), "c": id(c), "main": id(
        asyncio.current_task())}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("python", INTERPRETERS)
def test_awaited_by_links_nested_tasks(python: str, python_target: Start) -> None:
    proc = python_target(NESTED_TARGET, python=python)
    truth = _truth(proc)
    reader = AsyncioReader.open(proc.pid)
    tasks, total, errors = reader.read()
    assert errors == 0
    by_address = {t.address: t for t in tasks}
    a, b, c = (by_address[truth[k]] for k in ("a", "b", "c"))
    assert c.awaited_by == b.address
    assert b.awaited_by == a.address
    assert a.awaited_by is None
    assert a.awaiting == f"task:{b.name}"
    assert b.awaiting == f"task:{c.name}"
    assert c.awaiting == "sleep"
    assert [f.name for f in c.chain] == ["leaf", "sleep"]
    sample = TasksSample(1.0, None, tuple(tasks), total, 0.0, errors)
    roots = {n.address: n for n in task_tree(sample)}
    assert truth["b"] not in roots and truth["c"] not in roots
    root = roots[truth["a"]]
    assert [n.address for n in root.children] == [b.address]
    assert [n.address for n in root.children[0].children] == [c.address]
    assert root.where == "top → task"


# ------------------------------------------------------------------ torn reads under churn
CHURN_TARGET = """
import asyncio, json, random

async def short():
    await asyncio.sleep(random.random() * 0.005)

async def spawner():
    while True:
        for _ in range(200):
            asyncio.ensure_future(short())
        await asyncio.sleep(0)

async def main():
    for _ in range(4):
        asyncio.ensure_future(spawner())
    await asyncio.sleep(0.2)
    print("READY{}", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("python", INTERPRETERS[:6])
def test_churn_never_crashes_and_counts_torn_reads(python: str, python_target: Start) -> None:
    """Tasks are created and freed by the thousand per second while we read: every pass must
    complete, return only tasks that validated, and count what it had to skip."""
    proc = python_target(CHURN_TARGET, python=python)
    reader = AsyncioReader.open(proc.pid)
    seen = 0
    for _ in range(30):
        tasks, total, errors = reader.read()
        assert 0 <= len(tasks) <= max(total, len(tasks))
        assert errors >= 0
        for t in tasks:
            assert t.state in ("pending", "running", "done", "cancelled")
            assert all(isinstance(a.line, int) for a in t.chain)
        seen += len(tasks)
    assert seen > 0


# ------------------------------------------------------------------ the probe
@pytest.mark.parametrize("python", [INTERPRETERS[0], INTERPRETERS[5], "3.14", "3.15-container"])
def test_probe_emits_samples_with_the_loop_thread(python: str, python_target: Start) -> None:
    """On 3.15 in a container the loop's thread id comes from the target's pid namespace and
    must be mapped to ours (NSpid)."""
    container = python.endswith("-container")
    proc = python_target(
        NESTED_TARGET, python=python.removesuffix("-container"), container=container
    )
    out: list[object] = []
    probe = TasksProbe(resolve(proc.target_pid), out.append, rate_hz=4.0)
    probe.start()
    time.sleep(1.0)
    probe.stop()
    probe.join(timeout=5)
    assert not probe.is_alive()
    samples = [s for s in out if isinstance(s, TasksSample)]
    statuses = [s for s in out if isinstance(s, ProbeStatus)]
    assert samples, statuses
    assert statuses[0].status == "ok"
    last = samples[-1]
    assert last.total == 4 and len(last.tasks) == 4
    assert last.loop_tid == proc.target_pid  # asyncio.run in the main thread
    assert last.read_ms > 0
    series = counts_over_time(out)
    assert series[-1][1] == {"pending": 4}


def test_probe_reports_unavailable_without_asyncio(python_target: Start) -> None:
    proc = python_target("import time\nprint('READY', flush=True)\ntime.sleep(3600)\n")
    out: list[object] = []
    probe = TasksProbe(resolve(proc.pid), out.append)
    probe.start()
    time.sleep(0.5)
    probe.stop()
    probe.join(timeout=10)
    assert not probe.is_alive()
    statuses = [s for s in out if isinstance(s, ProbeStatus)]
    assert statuses and statuses[0].status == "unavailable"
    assert "asyncio is not imported" in (statuses[0].reason or "")


# ------------------------------------------------------------------ (d) refusing clearly
def test_bad_pid_is_gone() -> None:
    with pytest.raises(TasksUnavailable) as info:
        AsyncioReader.open(2**22 + 12345)
    assert info.value.status == "gone"
    with pytest.raises(TasksUnavailable):
        AsyncioReader.open(0)


def test_non_python_process_is_unavailable() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until the fork has exec'd sleep
            if os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep"):
                break
            time.sleep(0.01)
        with pytest.raises(TasksUnavailable) as info:
            AsyncioReader.open(proc.pid)
        assert info.value.status == "unavailable"
        assert "CPython" in str(info.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_python_without_asyncio_is_retryable(python_target: Start) -> None:
    proc = python_target("import time\nprint('READY', flush=True)\ntime.sleep(3600)\n")
    with pytest.raises(TasksUnavailable) as info:
        AsyncioReader.open(proc.pid)
    assert info.value.retry
    assert info.value.status == "unavailable"


def test_process_that_exits_reads_as_gone(python_target: Start) -> None:
    proc = python_target(NESTED_TARGET)
    reader = AsyncioReader.open(proc.pid)
    proc.kill()
    proc.wait()
    with pytest.raises(TasksUnavailable) as info:
        reader.read()
    assert info.value.status == "gone"


# ------------------------------------------------------------------ pure parts
def test_location_table_decoder_matches_this_interpreter() -> None:
    """The 3.11+ decoder against every code object of a few stdlib modules (co_lines)."""
    if sys.version_info < (3, 11):
        pytest.skip("needs a 3.11+ interpreter to compare with")
    import asyncio.base_events
    import asyncio.tasks
    import json.decoder

    codes = []
    for module in (asyncio.tasks, asyncio.base_events, json.decoder):
        source = Path(module.__file__).read_text()  # type: ignore[arg-type]
        stack = [compile(source, module.__file__, "exec")]  # type: ignore[arg-type]
        while stack:
            code = stack.pop()
            codes.append(code)
            stack.extend(c for c in code.co_consts if hasattr(c, "co_lines"))
    checked = 0
    for code in codes:
        for start, end, line in code.co_lines():
            for offset in range(start, end, 2):
                got = line_from_locations(code.co_linetable, code.co_firstlineno, offset // 2)
                assert got == line, (code.co_name, offset)
                checked += 1
    assert checked > 1000


def test_awaiting_by_frame() -> None:
    assert awaiting_from_frame("/usr/lib/python3.12/asyncio/tasks.py", "sleep") == "sleep"
    assert awaiting_from_frame("/x/lib/python3.8/asyncio/locks.py", "Lock.acquire") == "lock"
    assert awaiting_from_frame("/x/lib/python3.8/asyncio/queues.py", "Queue.get") == "queue"
    assert (
        awaiting_from_frame("/x/lib/python3.8/asyncio/streams.py", "StreamReader.readline")
        == "read"
    )
    assert awaiting_from_frame("/srv/app/tasks.py", "sleep") is None


def _task(address: int, chain: list[tuple[str, str, int]], **kw: object) -> TaskInfo:
    return TaskInfo(
        address=address,
        name=str(kw.get("name", f"Task-{address}")),
        state=str(kw.get("state", "pending")),
        chain=tuple(TaskAwait(*c) for c in chain),
        awaiting=kw.get("awaiting", "sleep"),  # type: ignore[arg-type]
        awaited_by=kw.get("awaited_by"),  # type: ignore[arg-type]
    )


STDLIB = "/usr/lib/python3.12/asyncio/tasks.py"
LIB = "/venv/lib/python3.12/site-packages/asyncpg/connection.py"


def test_await_point_names_the_app_frame_and_what_it_awaits() -> None:
    parked = _task(
        1, [("handle", "/srv/app.py", 10), ("auth", "/srv/mw.py", 5), ("sleep", STDLIB, 600)]
    )
    assert await_point(parked)[0] == "auth → asyncio.sleep"
    db = _task(2, [("view", "/srv/app.py", 20), ("Connection.fetch", LIB, 700)], awaiting="read")
    assert await_point(db)[0] == "view → asyncpg.connection.Connection.fetch"
    assert app_frame(db) is not None and app_frame(db).name == "view"  # type: ignore[union-attr]
    direct = _task(3, [("outer", "/srv/app.py", 3)], awaiting="task:Task-9")
    assert await_point(direct)[0] == "outer → task"
    assert await_point(_task(4, [], state="pending"))[0] == "<pending>"


def test_summary_json_and_tree_are_bounded_and_cycle_safe() -> None:
    tasks = [
        _task(1, [("a", "/srv/app.py", 1)], awaiting="task:x", awaited_by=2),
        _task(2, [("b", "/srv/app.py", 2)], awaiting="task:y", awaited_by=1),  # torn: a cycle
        _task(3, [("c", "/srv/app.py", 3)], state="done", awaiting=None),
    ]
    sample = TasksSample(5.0, 42, tuple(tasks), 10, 1.5, 2)
    summary = summarize([sample])
    assert summary is not None
    data = summary.to_json()
    assert data["count"] == 10
    assert data["by_state"] == {"pending": 2, "done": 1}
    assert summary.truncated and summary.loop_tid == 42
    tree = task_tree(sample)
    assert sorted(n.address for n in tree) == [1, 3]
    by_root = {n.address: n for n in tree}
    assert [k.address for k in by_root[1].children] == [2]
    assert len(task_tree(sample, max_nodes=1)) == 1
    assert counts_over_time([sample])[0] == (5.0, {"pending": 7, "done": 3})
    assert summarize([]) is None


def test_ages_follow_unbroken_runs_and_source_says_where_from() -> None:
    a, b = _task(1, [("a", "/srv/app.py", 1)]), _task(2, [("b", "/srv/app.py", 2)])
    reused = _task(1, [("c", "/srv/app.py", 3)], name="other")  # address 1 reused
    samples = [
        TasksSample(1.0, None, (a, b), 2, 0.0),
        TasksSample(2.0, None, (a,), 1, 0.0),
        TasksSample(3.0, None, (reused, b), 2, 0.0),
    ]
    assert task_ages(samples) == {1: 0.0, 2: 0.0}
    assert task_ages(samples[:2]) == {1: 1.0}
    assert task_source(samples) == "memory"
    assert task_source([]) is None


# ------------------------------------------------------------------ bare yields, running tasks
RUNNING_TARGET = """
import asyncio, json

async def spinner():
    while True:
        await asyncio.sleep(0)

async def busy():
    while True:  # never awaits: the loop is stuck running this task
        sum(range(10000))

async def main():
    s = asyncio.ensure_future(spinner())
    await asyncio.sleep(0.05)
    b = asyncio.ensure_future(busy())
    print("READY" + json.dumps({"spinner": id(s), "busy": id(b)}), flush=True)
    await asyncio.sleep(0)

asyncio.run(main())
"""


@pytest.mark.parametrize("python", INTERPRETERS)
def test_bare_yield_and_running_task(python: str, python_target: Start) -> None:
    """``asyncio.sleep(0)`` suspends in a bare ``yield`` (no awaited object on the stack: the
    reader must not follow a local variable), and the task the loop is running reads as such."""
    proc = python_target(RUNNING_TARGET, python=python)
    truth = _truth(proc)
    time.sleep(0.1)
    reader = AsyncioReader.open(proc.pid)
    tasks, _, errors = reader.read()
    assert errors == 0  # no read past a bare yield may count as a torn object
    by_address = {t.address: t for t in tasks}
    spinner = by_address[truth["spinner"]]
    busy = by_address[truth["busy"]]
    assert spinner.state == "pending"
    assert spinner.awaiting == "sleep"
    assert [a.name for a in spinner.chain][:2] == ["spinner", "sleep"]
    assert busy.state == "running"
    assert busy.awaiting is None
    assert [a.name for a in busy.chain] == ["busy"]
    assert reader.running and set(reader.running.values()) == {busy.address}


# ------------------------------------------------------------------ several children at once
FANOUT_TARGET = """
import asyncio, json, sys

async def leaf():
    await asyncio.sleep(3600)

async def gatherer(g):
    await g

async def waiter(tasks):
    await asyncio.wait(tasks)

async def waitfor(task):
    await asyncio.wait_for(task, 3600)

async def grouper(out):
    async with asyncio.TaskGroup() as tg:
        out.append(tg.create_task(leaf()))
        out.append(tg.create_task(leaf()))

async def main():
    truth = {}
    g = asyncio.gather(leaf(), leaf())
    truth["gather"] = [id(asyncio.ensure_future(gatherer(g)))] + [id(c) for c in g._children]
    w = [asyncio.ensure_future(leaf()) for _ in range(3)]
    truth["wait"] = [id(asyncio.ensure_future(waiter(set(w))))] + [id(t) for t in w]
    f = asyncio.ensure_future(leaf())
    truth["wait_for"] = [id(asyncio.ensure_future(waitfor(f))), id(f)]
    if sys.version_info >= (3, 11):
        out = []
        truth["taskgroup"] = [id(asyncio.ensure_future(grouper(out)))]
    await asyncio.sleep(0.1)
    if sys.version_info >= (3, 11):
        truth["taskgroup"] += [id(t) for t in out]
    print("READY" + json.dumps(truth), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("python", INTERPRETERS)
def test_gather_wait_and_taskgroup_children_are_linked(python: str, python_target: Start) -> None:
    proc = python_target(FANOUT_TARGET, python=python)
    truth = _truth(proc)
    reader = AsyncioReader.open(proc.pid)
    tasks, total, errors = reader.read()
    assert errors == 0
    by_address = {t.address: t for t in tasks}
    for kind, ids in truth.items():
        parent, *children = ids
        assert len(children) >= 1, kind
        for child in children:
            assert by_address[child].awaited_by == parent, (kind, by_address[child])
    assert by_address[truth["gather"][0]].awaiting == "gather"
    sample = TasksSample(1.0, None, tuple(tasks), total, 0.0, errors)
    roots = {n.address: n for n in task_tree(sample)}
    assert len(roots[truth["wait"][0]].children) == 3


# ------------------------------------------------------------------ task factories
FACTORY_TARGET = """
import asyncio, json, sys

class TracedTask(asyncio.Task):
    pass

async def parked(ev):
    await ev.wait()

async def main():
    loop = asyncio.get_running_loop()
    ev = asyncio.Event()
    if sys.argv[-1] == "eager":
        loop.set_task_factory(asyncio.eager_task_factory)
    else:
        loop.set_task_factory(lambda loop, coro, **kw: TracedTask(coro, loop=loop, **kw))
    tasks = [loop.create_task(parked(ev)) for _ in range(50)]
    await asyncio.sleep(0.05)
    ready = "READY" + json.dumps({"ids": [id(t) for t in tasks],
                                  "total": len(asyncio.all_tasks())})
    # Said from a callback that runs once main() is parked in its sleep: printed from main()
    # itself, a reader on a busy machine could catch main() mid-way into that sleep.
    loop.call_soon(lambda: print(ready, flush=True))
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("factory", ["subclass", "eager"])
@pytest.mark.parametrize("python", INTERPRETERS)
def test_task_subclasses_and_eager_tasks(
    python: str, factory: str, python_target: Start, tmp_path: Path
) -> None:
    if factory == "eager":
        version = subprocess.run(
            [
                python_for(python) if python in DEBIAN_VERSIONS else python,
                "-c",
                "import sys; print(sys.version_info[1])",
            ],
            capture_output=True,
        )
        if int(version.stdout) < 12:
            pytest.skip("eager tasks are 3.12+")
    proc = python_target(
        f"import sys\nsys.argv = ['x', {factory!r}]\n{FACTORY_TARGET}", python=python
    )
    truth = _truth(proc)
    reader = AsyncioReader.open(proc.pid)
    tasks, total, errors = reader.read()
    # The target is parked for good: a torn read here is the reader's. Once in a hog run
    # (3.14, subclass) one pass counted one; the next pass says whether it lasts.
    assert errors == 0, f"{errors} torn; the next pass: {reader.read()[2]}"
    assert reader.unsupported == 0
    assert total == truth["total"]
    by_address = {t.address: t for t in tasks}
    for task_id in truth["ids"]:
        assert by_address[task_id].awaiting == "event"
        assert [a.name for a in by_address[task_id].chain] == ["parked", "Event.wait"]


# ------------------------------------------------------------------ what each task awaits
AWAITING_TARGET = """
import asyncio, json

async def on_lock(lock):
    async with lock:
        pass

async def on_queue(q):
    await q.get()

async def on_semaphore(sem):
    await sem.acquire()

async def on_condition(cond):
    async with cond:
        await cond.wait()

async def on_read(reader):
    await reader.read(100)

async def on_future(fut):
    await fut

async def silent(reader, writer):
    await asyncio.sleep(3600)

async def main():
    lock = asyncio.Lock()
    await lock.acquire()
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    fut = asyncio.get_running_loop().create_future()
    kinds = {
        "lock": on_lock(lock), "queue": on_queue(asyncio.Queue()),
        "semaphore": on_semaphore(asyncio.Semaphore(0)),
        "condition": on_condition(asyncio.Condition()), "read": on_read(reader),
        "future": on_future(fut),
    }
    ids = {kind: id(asyncio.ensure_future(coro)) for kind, coro in kinds.items()}
    await asyncio.sleep(0.1)
    print("READY" + json.dumps(ids), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("python", INTERPRETERS)
def test_awaiting_labels_for_common_primitives(python: str, python_target: Start) -> None:
    proc = python_target(AWAITING_TARGET, python=python)
    truth = _truth(proc)
    reader = AsyncioReader.open(proc.pid)
    tasks, _, errors = reader.read()
    assert errors == 0
    by_address = {t.address: t for t in tasks}
    got = {kind: by_address[address].awaiting for kind, address in truth.items()}
    assert got == {kind: kind for kind in truth}
