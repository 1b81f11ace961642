"""The stage's narration: which sentence the room reads for which report.

Two halves. Rule tests build a `Report` by hand around each threshold, so the boundaries are
pinned exactly. Scenario tests record the real demo server with one toggle on
(`python -m lifescope record`), replay the file through `Player` and `report.build` — the path
`lifescope replay` takes — and check the headline names the pathology that was switched on.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifescope.analysis import report
from lifescope.analysis.narration import (
    ACCEPT_QUEUE_MIN,
    GIL_HELD_CRITICAL,
    KEEPALIVE_IDLE_MIN,
    MAX_SENTENCES,
    PRIORITY,
    RECENT_S,
    SEND_STUCK_MS,
    Focus,
    Sentence,
    Severity,
    function_name,
    headline,
    narrate,
)
from lifescope.analysis.report import (
    ConnectionsView,
    ConnectionView,
    CostView,
    GilView,
    LayersView,
    ListenView,
    LoopView,
    Report,
    StallView,
    ThreadView,
)
from lifescope.demo import toggles
from lifescope.demo.children import start_demo_server, start_load
from lifescope.recording import load
from lifescope.replay import Player

# ------------------------------------------------------------------------- building reports


def thread(name: str, tid: int, **kw: object) -> ThreadView:
    fields: dict[str, object] = dict(
        tid=tid, name=name, state="io", syscall=None, cpu_share=0.01, active_share=0.01,
        gil_share=0.01, top_frame=None,
    )  # fmt: skip
    fields.update(kw)
    return ThreadView(**fields)  # type: ignore[arg-type]


def conn(port: int, **kw: object) -> ConnectionView:
    fields: dict[str, object] = dict(
        local="127.0.0.1:8080", peer=f"127.0.0.1:{port}", state="ESTABLISHED", phase="idle",
        kind="client", fd=port, rtt_ms=0.05, recv_q=0, send_q=0, idle_ms=5, thread=None,
    )  # fmt: skip
    fields.update(kw)
    return ConnectionView(**fields)  # type: ignore[arg-type]


LOOP = LoopView(tid=100, busy_share=0.05, stalls=(), running=None, executors=())
CALM = Report(
    pid=100,
    python="3.11.7",
    command="python -m lifescope.demo.server",
    window_s=10.0,
    end=1000.0,
    uptime_s=60.0,
    probes=(),
    threads=(thread("event-loop", 100), thread("db-executor_0", 101, role="executor")),
    gil=GilView(held_share=0.03, source="memory", samples=1000, waiters_mean=0.0),
    connections=ConnectionsView(
        listen=(ListenView("127.0.0.1:8080", 0, 128, 0, 0),),
        by_state=(("ESTABLISHED", 8), ("LISTEN", 1)),
        fds=20,
        fd_limit=1024,
        keepalive_idle=4,
    ),
    cost=CostView(0.05, 50_000_000, 0),
    gone=None,
    loops=(LOOP,),
    model="hybrid",
)


def with_(base: Report = CALM, **changes: object) -> Report:
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def with_stalls(*stalls: StallView, busy: float = 0.3) -> Report:
    return with_(loops=(dataclasses.replace(LOOP, stalls=stalls, busy_share=busy),))


def rules(result: tuple[Sentence, ...]) -> list[str]:
    return [s.rule for s in result]


# ------------------------------------------------------------------------------ calm reports


@pytest.mark.parametrize(
    ("model", "words"),
    [("hybrid", "pool of threads"), ("asyncio", "one event loop"), ("threads", "thread per"),
     (None, "Nothing notable")],
)  # fmt: skip
def test_calm_names_the_concurrency_model(model: str | None, words: str) -> None:
    result = narrate(with_(model=model))
    assert len(result) == 1
    assert result[0].rule == "calm" and result[0].severity is Severity.INFO
    assert words in result[0].text
    assert result[0].layer is None


def test_calm_detail_carries_the_numbers() -> None:
    assert headline(CALM).detail == "event loop busy 5 %, GIL held 3 %"


# ------------------------------------------------------------------------------- loop stalls


def test_blocked_loop_names_the_guilty_function() -> None:
    stall = StallView(8.0, 300.0, "handle_block (server.py:212)", gil_held=False)
    top = headline(with_stalls(stall))
    assert top.text == "The event loop is blocked in handle_block: every other request waits."
    assert top.rule == "loop-stall" and top.severity is Severity.WARNING
    assert top.detail == "1 stall, longest 300 ms, stalled 3 % of the last 10 s"


def test_cpu_bound_stall_says_it_holds_the_gil() -> None:
    stall = StallView(8.0, 250.0, "burn_cpu (server.py:150)", gil_held=True)
    assert headline(with_stalls(stall)).text == (
        "The event loop is busy in burn_cpu, holding the GIL: every other request waits."
    )


def test_stall_without_gil_data_is_just_stalled() -> None:
    stall = StallView(8.0, 250.0, None, gil_held=None)
    assert headline(with_stalls(stall)).text == (
        "The event loop is stalled: every other request waits."
    )


def test_stall_severity() -> None:
    def severity(*stalls: StallView) -> Severity:
        return headline(with_stalls(*stalls)).severity

    assert severity(StallView(1.0, 150.0, "f (a.py:1)", False)) is Severity.WARNING
    # A fifth of the window stalled, one long stall, or stalled right now: critical.
    many = [StallView(float(i), 400.0, "f (a.py:1)", False) for i in range(5)]
    assert severity(*many) is Severity.CRITICAL
    assert severity(StallView(1.0, 600.0, "f (a.py:1)", False)) is Severity.CRITICAL
    assert severity(StallView(9.8, 150.0, "f (a.py:1)", False, ongoing=True)) is Severity.CRITICAL


def test_old_stalls_are_history_not_news() -> None:
    long_window = with_(with_stalls(StallView(1.0, 300.0, "f (a.py:1)", False)), window_s=60.0)
    assert RECENT_S < 60.0 - 1.3
    assert rules(narrate(long_window)) == ["calm"]


def test_culprit_is_the_function_with_most_stalled_time() -> None:
    stalls = (
        StallView(1.0, 150.0, "a (x.py:1)", False),
        StallView(2.0, 150.0, "a (x.py:1)", False),
        StallView(3.0, 250.0, "b (x.py:9)", False),
    )
    assert "blocked in a:" in headline(with_stalls(*stalls)).text


# --------------------------------------------------------------------------------- busy loop


def test_busy_loop_without_stalls() -> None:
    # The latest sample found the loop polling, under the demo's `main`: "mostly in" is the
    # callback with the most time over the window, not that instant (a hog run's headline
    # read "mostly in main" for a loop busy in handle_fast).
    loop = dataclasses.replace(
        LOOP, busy_share=0.62, running="main (server.py:700)", busiest="handle_fast (s.py:3)"
    )
    top = headline(with_(loops=(loop,)))
    assert top.rule == "loop-busy" and top.severity is Severity.WARNING
    assert top.text == (
        "The event loop is busy 62 % of the time, mostly in handle_fast: requests start to queue."
    )
    saturated = with_(loops=(dataclasses.replace(LOOP, busy_share=0.95),))
    assert headline(saturated).severity is Severity.CRITICAL
    assert rules(narrate(with_(loops=(dataclasses.replace(LOOP, busy_share=0.49),)))) == ["calm"]


def test_a_critical_stall_is_not_repeated_as_a_busy_loop() -> None:
    stalls = [StallView(float(i), 900.0, "blocking_call (s.py:1)", False) for i in range(9)]
    result = narrate(with_stalls(*stalls, busy=0.99))
    assert rules(result) == ["loop-stall"]


# --------------------------------------------------------------------------------------- GIL


def gil_report(held: float, waiters: float, holder_share: float | None = None) -> Report:
    share = held if holder_share is None else holder_share
    return with_(
        gil=GilView(held_share=held, source="memory", samples=5000, waiters_mean=waiters),
        threads=(
            thread("gil-hog", 102, gil_share=share, state="python"),
            thread("event-loop", 100, waiting_gil_share=0.3, state="gil-wait"),
        ),
    )


def test_gil_hog_nine_times_in_ten() -> None:
    top = headline(gil_report(0.9, 0.4))
    assert top.text == "One thread (gil-hog) holds the GIL 9 times in 10: the others queue for it."
    assert top.severity is Severity.CRITICAL and top.rule == "gil"
    assert "event-loop" in top.detail


def test_gil_almost_always() -> None:
    assert "almost all the time" in headline(gil_report(0.98, 0.4)).text


def test_gil_warning_band_and_anonymous_holder() -> None:
    top = headline(gil_report(0.75, 0.4, holder_share=0.2))
    assert top.severity is Severity.WARNING
    assert top.text.startswith("One thread holds the GIL 8 times in 10")
    assert GIL_HELD_CRITICAL > 0.75


def test_busy_gil_that_nobody_waits_for_is_not_contention() -> None:
    quiet = with_(
        gil=GilView(held_share=0.95, source="memory", samples=5000, waiters_mean=0.0),
        threads=(thread("worker", 102, gil_share=0.95),),
    )
    assert rules(narrate(quiet)) == ["calm"]


def test_gil_waiters_from_thread_states_without_memory_source() -> None:
    pyspy = with_(
        gil=GilView(held_share=0.92, source="pyspy", samples=50),
        threads=(thread("hog", 102, gil_share=0.92), thread("loop", 100, state="gil-wait")),
    )
    assert headline(pyspy).rule == "gil"


# ------------------------------------------------------------------------------ accept queue


def listen(queue: int, backlog: int = 128, overflows: int = 0) -> Report:
    view = dataclasses.replace(
        CALM.connections, listen=(ListenView("127.0.0.1:8080", queue, backlog, 0, overflows),)
    )
    return with_(connections=view)


def test_full_accept_queue() -> None:
    top = headline(listen(129, overflows=30))
    assert top.text == (
        "The accept queue is full: new connections wait in the kernel (layer 1) — or are dropped."
    )
    assert top.severity is Severity.CRITICAL and top.layer == 1
    assert (
        top.detail
        == "127.0.0.1:8080: 129 of 128 waiting for accept(), 30 dropped (overflows) in the window"
    )


def test_filling_accept_queue() -> None:
    top = headline(listen(ACCEPT_QUEUE_MIN))
    assert top.severity is Severity.WARNING
    assert top.text == (
        "3 new connections wait in the kernel's accept queue: the server is not calling "
        "accept() (layer 1)."
    )
    assert rules(narrate(listen(ACCEPT_QUEUE_MIN - 1))) == ["calm"]


def test_overflows_with_an_empty_queue_are_someone_elses() -> None:
    # ListenOverflows is per network namespace: on a shared host, another listener's.
    assert rules(narrate(listen(0, overflows=15))) == ["calm"]
    assert "15 dropped" in headline(listen(5, overflows=15)).detail


# ---------------------------------------------------------------------------- middleware (L3)


def layers(l3: float, now: int = 6) -> LayersView:
    shares = (("L0", 0.0), ("L1", 0.0), ("L2", 0.0), ("L3", l3), ("L4", 0.05),
              ("L5", 0.01), ("L6", 0.0), ("unknown", round(0.94 - l3, 4)))  # fmt: skip
    return LayersView(shares=shares, now=(("L3", now),), in_flight=(), measured="tasks")


def test_middleware_from_layer_shares() -> None:
    top = headline(with_(layers=layers(0.8)))
    assert top.text == (
        "Requests spend most of their time in middleware (layer 3), before any handler runs."
    )
    assert (
        top.layer == 3
        and top.detail == "80 % of in-flight request time in layer 3, 6 requests there now"
    )
    assert rules(narrate(with_(layers=layers(0.3)))) == ["calm"]
    assert rules(narrate(with_(layers=None))) == ["calm"]


# ---------------------------------------------------------------------------- send queue (L5)


def with_connections(*conns: ConnectionView, **kw: object) -> Report:
    view = dataclasses.replace(CALM.connections, top=conns, total=len(conns), **kw)
    return with_(connections=view)


def test_slow_clients_fill_the_send_buffer() -> None:
    stuck = [conn(p, phase="response", send_q=266_136, idle_ms=1900) for p in range(3)]
    top = headline(with_connections(*stuck))
    assert top.text == (
        "Responses are stuck in the kernel's send buffer: 3 slow clients (layer 5)."
    )
    assert top.layer == 5 and top.detail == "780 KiB written but not yet taken by the clients"


def test_delayed_acks_and_outbound_sockets_are_not_slow_clients() -> None:
    in_flight = [conn(p, phase="response", send_q=434, idle_ms=30) for p in range(5)]
    outbound = [conn(p, kind="outbound", send_q=10_000, idle_ms=5000) for p in range(5, 10)]
    assert rules(narrate(with_connections(*in_flight, *outbound))) == ["calm"]
    assert SEND_STUCK_MS > 200  # Linux's longest delayed ACK


def test_send_queue_without_timers_needs_depth() -> None:
    deep = [conn(p, send_q=100_000, idle_ms=None) for p in range(3)]
    shallow = [conn(p, send_q=500, idle_ms=None) for p in range(3)]
    assert headline(with_connections(*deep)).rule == "send-queue"
    assert rules(narrate(with_connections(*shallow))) == ["calm"]


# ---------------------------------------------------------------------------- keep-alive (L6)


def test_idle_keepalive_connections_hold_descriptors() -> None:
    flood = with_connections(keepalive_idle=300, fds=310, fd_limit=20_000)
    top = headline(flood)
    assert top.text == "300 idle keep-alive connections each hold a file descriptor (layer 6)."
    assert top.severity is Severity.WARNING and top.layer == 6
    near_limit = with_connections(keepalive_idle=600, fds=620, fd_limit=1024)
    assert headline(near_limit).severity is Severity.CRITICAL
    assert headline(near_limit).text == (
        "600 idle keep-alive connections hold 61 % of the file-descriptor limit (layer 6)."
    )
    few = with_connections(keepalive_idle=KEEPALIVE_IDLE_MIN - 1)
    assert rules(narrate(few)) == ["calm"]


# ----------------------------------------------------------------------------- executors (L4)


def test_busy_executor_threads() -> None:
    workers = tuple(
        thread(f"db-executor_{i}", 101 + i, role="executor", active_share=0.85,
               top_frame="run_report_query (server.py:171)")
        for i in range(4)
    )  # fmt: skip
    top = headline(with_(threads=(thread("event-loop", 100), *workers)))
    assert top.text == (
        "All 4 executor threads are busy in run_report_query: requests wait for them (layer 4)."
    )
    one_busy = (
        thread("event-loop", 100),
        workers[0],
        thread("db-executor_9", 120, role="executor"),
    )
    assert rules(narrate(with_(threads=one_busy))) == ["calm"]


# ------------------------------------------------------------------------------------ ranking


def test_ranked_by_severity_then_strength_and_capped() -> None:
    everything = with_(
        with_connections(
            *[conn(p, send_q=200_000, idle_ms=900) for p in range(4)],
            keepalive_idle=400,
            fds=420,
            fd_limit=20_000,
            listen=(ListenView("127.0.0.1:8080", 129, 128, 0, 12),),
        ),
        gil=GilView(held_share=0.97, source="memory", samples=5000, waiters_mean=0.5),
        threads=(thread("gil-hog", 102, gil_share=0.97),),
        loops=(dataclasses.replace(LOOP, stalls=(StallView(9.0, 200.0, "f (a.py:1)", False),)),),
    )
    result = narrate(everything)
    assert len(result) == MAX_SENTENCES
    assert [s.severity for s in result] == sorted((s.severity for s in result), reverse=True)
    assert rules(result) == ["accept-queue", "gil", "loop-stall"]
    assert rules(narrate(everything, limit=5)) == [
        "accept-queue", "gil", "loop-stall", "send-queue", "keepalive",
    ]  # fmt: skip
    assert list(PRIORITY)[:3] == ["gone", "loop-stall", "accept-queue"]
    assert "calm" not in PRIORITY
    assert rules(narrate(everything, limit=0)) == ["accept-queue"]  # never empty


def test_a_gone_target_outranks_everything() -> None:
    result = narrate(with_(listen(129, overflows=3), gone="process exited"))
    assert result[0].text == "The server is gone: process exited."
    assert result[0].severity is Severity.CRITICAL


def test_function_name() -> None:
    assert function_name("handle_block (server.py:12)") == "handle_block"
    assert function_name("BaseEventLoop._run_once (asyncio/base_events.py:1)") == "_run_once"
    assert function_name(None) is None and function_name("") is None


def test_severity_orders() -> None:
    assert Severity.CRITICAL > Severity.WARNING > Severity.INFO


# ------------------------------------------------------------------------ focus and reading

FIXTURE = Path(__file__).parent / "fixtures" / "demo-session.lsr"


def recorded_report(seconds_in: float | None = None) -> Report:
    """The committed recording of the demo (GIL hog, slow middleware, a blocking route)."""
    player = Player(load(str(FIXTURE)))
    player.seek(player.end if seconds_in is None else player.start + seconds_in)
    return report.build(player.timeline.window(10.0, end=player.position))


def test_a_named_gil_holder_is_given_its_own_share() -> None:
    result = recorded_report()
    gil = next(s for s in narrate(result, limit=5) if s.rule == "gil")
    hog = next(t for t in result.threads if t.name == "gil-hog")
    assert result.gil.held_share is not None and result.gil.held_share > 0.95
    assert hog.gil_share is not None and hog.gil_share < 0.7
    assert gil.text == "One thread (gil-hog) holds the GIL 7 times in 10: the others queue for it."


def test_focus_leads_with_what_the_stage_switched_on() -> None:
    """On stage the room must hear about the key just pressed, not the loudest thing: here a
    loop stall is critical, yet a focus on the GIL hog puts the hog first."""
    result = recorded_report()
    assert headline(result).rule == "loop-stall"
    focused = narrate(result, 1, (Focus(("gil",), "gil-hog"),))[0]
    assert focused.rule == "gil" and "(gil-hog)" in focused.text
    # A focus whose culprit is not in the numbers changes nothing: focus never invents.
    absent = narrate(result, 1, (Focus(("loop-stall",), "blocking_call"),))[0]
    assert absent == headline(result)
    nowhere = narrate(result, 1, (Focus(("gil",), "no-such-thread"),))[0]
    assert nowhere == headline(result)
    # A gone server outranks any focus.
    gone = dataclasses.replace(result, gone="process exited")
    assert narrate(gone, 1, (Focus(("gil",), "gil-hog"),))[0].rule == "gone"


def test_the_first_second_reads_instead_of_guessing_a_model() -> None:
    early = recorded_report(0.9)
    assert not any(p.name == "stacks" and p.samples for p in early.probes)
    assert report.reading(early)
    # The GIL probe's evidence is in already and may speak; the model's is not.
    assert "calm" not in [s.rule for s in narrate(early, limit=5)]
    quiet = dataclasses.replace(early, gil=GilView(None, "memory", 0), layers=None)
    assert headline(quiet).rule == "reading"
    assert "Reading the server" in headline(quiet).text
    later = recorded_report(2.0)
    assert not report.reading(later) and later.model == "hybrid"


# ------------------------------------------------------------------ real recordings of the demo

RECORD_SECONDS = 3.0
SETTLE_S = 1.5
"""After a toggle, before recording: the flood opens 300 connections in ~0.6 s, the churn needs
a moment to start queueing, a slow reader a moment to fill its window."""

# name -> (stage key to press, or None for calm; expected headline rule; words it must contain)
SCENARIOS: dict[str, tuple[str | None, set[str], str]] = {
    "calm": (None, {"calm"}, "event loop"),
    "slow_db": ("2", {"executors"}, "run_report_query"),
    "big_json": ("3", {"loop-busy", "loop-stall"}, "handle_fast"),
    "block_loop": ("4", {"loop-stall"}, "blocked in blocking_call: every other request waits"),
    "gil_hog": ("5", {"gil"}, "One thread (gil-hog) holds the GIL"),
    "accept_stall": ("6", {"accept-queue"}, "accept"),
    "slow_readers": ("7", {"send-queue"}, "slow clients (layer 5)"),
    "flood": ("8", {"keepalive"}, "idle keep-alive connections each hold a file descriptor"),
}


def record_scenario(name: str, directory: Path) -> Path:
    key, _, _ = SCENARIOS[name]
    out = directory / f"{name}.lsrec"
    server = start_demo_server()
    try:
        # The demo's own traffic shape (lifescope demo runs 40 req/s, concurrency 8).
        load_gen = start_load(
            server.url, rate=40, concurrency=8, duration=60, mix="fast=5,db=2,sleep=2"
        )
        try:
            if key is not None:
                for target, toggle, value in toggles.KEYMAP[key].actions(True):
                    if target == toggles.SERVER:
                        server.set_toggle(toggle, value)
                    else:
                        load_gen.set_mode(toggle, value)
            time.sleep(SETTLE_S)
            done = subprocess.run(
                [sys.executable, "-m", "lifescope", "record", str(server.pid), "-o", str(out),
                 "--seconds", f"{RECORD_SECONDS:g}"],
                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        finally:
            load_gen.stop()
    finally:
        server.stop()
    return out


def replayed_report(path: Path) -> Report:
    recording = load(str(path))
    assert recording.problem is None, recording.problem
    player = Player(recording)
    player.seek(recording.end)
    return report.build(player.timeline.window())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_headline_on_a_real_recording(name: str, tmp_path: Path) -> None:
    path = record_scenario(name, tmp_path)
    result = narrate(replayed_report(path))
    _, expected_rules, words = SCENARIOS[name]
    shown = [(s.rule, s.severity.name, s.text, s.detail) for s in result]
    assert result[0].rule in expected_rules, (path, shown)
    assert words in result[0].text, (path, shown)
    if name != "calm":
        assert result[0].severity >= Severity.WARNING, shown
        assert "calm" not in [s.rule for s in result]
