"""Which moment "in flight now" speaks of, on the data of two runs that read it wrong.

Pure logic on data transcribed from real collections (uvicorn's two workers under two CPU
hogs; `ThreadingHTTPServer` on a quiet machine): the stacks, listings and task samples as
the probes gave them, times relative to the newest stack sample.
"""

from __future__ import annotations

from lifescope.analysis import lifetimes
from lifescope.analysis.layers import analyse
from lifescope.rules import load as load_rules
from lifescope.samples import (
    Frame,
    StackSpan,
    StacksWindow,
    TaskAwait,
    TaskInfo,
    TasksSample,
    ThreadsSample,
    ThreadStat,
)

ASYNCIO = "/usr/lib/python3.11/asyncio"
SITE = "/venv/lib/python3.11/site-packages"
LOOP = (
    Frame("EpollSelector.select", "/usr/lib/python3.11/selectors.py", 468),
    Frame("BaseEventLoop._run_once", f"{ASYNCIO}/base_events.py", 1898),
    Frame("BaseEventLoop.run_forever", f"{ASYNCIO}/base_events.py", 607),
)
WRITE = (
    Frame("_SelectorSocketTransport.write", f"{ASYNCIO}/selector_events.py", 1057),
    Frame("RequestResponseCycle.send", f"{SITE}/uvicorn/protocols/http/h11_impl.py", 485),
    Frame("Response.__call__", f"{SITE}/starlette/responses.py", 155),
    Frame("Router.__call__", f"{SITE}/starlette/routing.py", 718),
    Frame("Starlette.__call__", f"{SITE}/starlette/applications.py", 123),
    Frame("RequestResponseCycle.run_asgi", f"{SITE}/uvicorn/protocols/http/h11_impl.py", 403),
    *LOOP[1:],
)
SLEEPING = (
    TaskAwait("RequestResponseCycle.run_asgi", f"{SITE}/uvicorn/protocols/http/h11_impl.py", 403),
    TaskAwait("Starlette.__call__", f"{SITE}/starlette/applications.py", 123),
    TaskAwait("Router.__call__", f"{SITE}/starlette/routing.py", 718),
    TaskAwait("sleep", "/srv/asgi_app.py", 31, code="await asyncio.sleep(WAIT_S)"),
    TaskAwait("sleep", f"{ASYNCIO}/tasks.py", 649),
)


def _listing(t: float, tids: tuple[int, ...], pid: int | None = None) -> ThreadsSample:
    return ThreadsSample(t, tuple(ThreadStat(tid, "t", "S", 0, 232, 0, pid) for tid in tids))


def _tasks(t: float, names: dict[int, tuple[str, ...]]) -> TasksSample:
    found = tuple(
        TaskInfo(hash((pid, name)), name, "pending", SLEEPING, "sleep", None, pid)
        for pid, tasks in names.items()
        for name in tasks
    )
    return TasksSample(t, None, found, len(found), 1.0)


def test_parked_tasks_and_the_loop_thread_are_read_at_one_instant() -> None:
    """Run 3 of 12 (4 wrong): two workers' loop threads (tids 21, 31), four requests asleep
    for 300 ms. Worker 21's stack: `select` to 0.003, then request A's response write for
    3 ms, `select` again. Tasks were read at -0.367 (four asleep, A among them) and 0.129
    (A done, its client's next request asleep). The listing by the last sample (at 0) and
    the task list after it counted the write 5 ms later as a fifth request; at -0.367, the
    newest task sample the stacks saw, the loop threads were in `select`."""
    rules, _ = load_rules(user_dir=None)
    frames = LOOP + WRITE
    loop, write = (0, 1, 2), tuple(range(3, 3 + len(WRITE)))
    spans = (
        StackSpan(21, -0.39, 0.003, loop),
        StackSpan(21, 0.003, 0.006, write),
        StackSpan(21, 0.006, 0.01, loop),
        StackSpan(31, -0.39, 0.01, loop),
    )
    window = StacksWindow(0.377, -0.39, frames, spans, (), 80, 0, 100.0, (), 0.006)
    threads = [_listing(t / 100, (21, 31)) for t in range(-40, 1, 4)]
    tasks = [
        _tasks(-0.367, {21: ("Task-161", "Task-160"), 31: ("Task-93", "Task-94")}),
        _tasks(0.129, {21: ("Task-163", "Task-164"), 31: ("Task-97", "Task-80")}),
    ]
    at, alive, i = lifetimes.asked(threads, tasks, [window], 0.006)
    assert (at, i) == (-0.367, 0) and alive == {21, 31}
    (cut,) = lifetimes.clip([window], threads)
    stats = analyse([cut], [], None, tasks, rules, -0.39, 0.377, threads)
    assert sorted(f.task or "" for f in stats.in_flight) == [
        "Task-160", "Task-161", "Task-93", "Task-94",
    ], stats.in_flight  # fmt: skip
    assert stats.now == {"L4": 4}


def test_a_loop_thread_seen_in_select_is_not_bridged_to_a_request() -> None:
    """Run 11 of 12: worker 31 wrote a response from -0.04 to -0.037 and was in `select`
    from then on, the moment asked included: the 50 ms that bridge a thread whose stack was
    not sampled do not reach a thread seen doing something else. A thread with no span at
    the moment (the walker's gap) is still bridged."""
    parts = [(-0.04, -0.037, "L5")]
    assert lifetimes.state_at(parts, 0.0, True, str) is None
    assert lifetimes.state_at(parts, 0.0, False, str) == ("L5", -0.04, -0.037)
    assert lifetimes.state_at([(0.005, 0.01, "L5")], 0.0, True, str) is None
    loop = (0, 1, 2)
    spans = (StackSpan(31, -0.3, -0.04, loop), StackSpan(31, -0.037, 0.25, loop))
    window = StacksWindow(0.25, -0.3, LOOP, spans, (), 60, 0, 100.0)
    assert lifetimes.sampled_at([window], 0.0) == {31}
    assert lifetimes.sampled_at([window], -0.038) == frozenset()  # the gap: not sampled


def test_asked_where_the_stacks_saw_not_between_two_windows() -> None:
    """3 runs in 10, quiet machine, `ThreadingHTTPServer` with a 50 ms query per request
    and three clients: py-spy's window ended at -0.08 (last sample -0.091), the next one's
    first sample was at 0.02. The newest listing by then (0.0) fell in between: threads
    21-23, serving requests then, were never sampled; 31-33, sampled at 0.02, were born
    after it. All three requests read "code not visible". The listing py-spy saw (-0.1)
    has 11-13 in their handler."""
    rules, _ = load_rules(user_dir=None)
    server = "/usr/lib/python3.11/http/server.py"
    frames = (
        Frame("Handler.do_GET", "/srv/app.py", 7, code="db.execute(QUERY)"),
        Frame("BaseHTTPRequestHandler.handle_one_request", server, 424),
    )
    older = StacksWindow(
        -0.08, -1.01, frames, tuple(StackSpan(t, -0.2, -0.08, (0, 1)) for t in (11, 12, 13)),
        (), 300, 0, 25.0, (), -0.091,
    )  # fmt: skip
    newer = StacksWindow(
        0.18, -0.004, frames, tuple(StackSpan(t, 0.02, 0.18, (0, 1)) for t in (31, 32, 33)),
        (), 3, 0, 25.0, (), 0.02,
    )  # fmt: skip
    threads = [_listing(t / 100, (1, 11, 12, 13)) for t in range(-30, -9)]
    threads += [_listing(-0.05, (1, 21, 22, 23)), _listing(0.0, (1, 21, 22, 23))]
    stacks = lifetimes.clip([older, newer], threads)
    at, alive, _ = lifetimes.asked(threads, [], stacks, lifetimes.sampled_to(stacks))
    assert at == -0.1 and alive == {1, 11, 12, 13}
    # a task list with no task (asyncio imported, no loop running, as in Django) moves nothing
    for tasks in ([], [TasksSample(t, None, (), 0, 1.0) for t in (-1.0, -0.5, -0.05)]):
        stats = analyse(stacks, [], None, tasks, rules, -1.01, 0.18, threads)
        assert sorted(f.thread or 0 for f in stats.in_flight) == [11, 12, 13], stats.in_flight
        assert {f.layer for f in stats.in_flight} == {"L4"}
