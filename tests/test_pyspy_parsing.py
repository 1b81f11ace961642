"""py-spy output parsers, on files py-spy really wrote (see fixtures/README.md)."""

from __future__ import annotations

import json
import os
import time
from itertools import pairwise
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from lifescope.analysis.frames import innermost_app, kind, label, short_file
from lifescope.probes.pyspy import (
    _written_at,
    classify_failure,
    last_sampled,
    parse_chrometrace,
    parse_dump,
    split_window,
    stacks_rate_for,
)
from lifescope.samples import Frame, StackSpan, StacksWindow

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text())


def test_alternating_thread_gives_one_span_per_phase() -> None:
    frames, spans, names = parse_chrometrace(load("pyspy-chrometrace-alternating.json"), 100.0)
    assert len(names) == 1 and names[0][1] == "MainThread"
    assert len(spans) == 10
    functions = [frames[span.stack[0]].name for span in spans]
    # strictly alternating, as the target does
    assert all(a != b for a, b in pairwise(functions))
    assert set(functions) == {"busy_a", "wait_b"}
    inner = [s for s in spans[1:-1]]  # the first and last are cut by the window edges
    for span in inner:
        assert 0.06 <= span.end - span.start <= 0.14, span  # the target switches every 100 ms
    # spans tile the window without overlap, ending where we anchored it
    for a, b in pairwise(spans):
        assert abs(a.end - b.start) < 1e-9
    assert spans[-1].end == 100.0
    assert 0.85 <= spans[-1].end - spans[0].start <= 1.0


def test_idle_threads_are_present_throughout() -> None:
    frames, spans, names = parse_chrometrace(load("pyspy-chrometrace-hog-sleeper.json"), 50.0)
    by_name = dict((name, tid) for tid, name in names)
    assert set(by_name) == {"MainThread", "hog", "sleepy"}
    for name, function in (("hog", "spin"), ("sleepy", "sleeper"), ("MainThread", "<module>")):
        mine = [s for s in spans if s.tid == by_name[name]]
        assert len(mine) == 1, name
        assert frames[mine[0].stack[0]].name == function
        assert mine[0].end - mine[0].start > 0.9


def test_dump_gives_gil_owner_and_app_frames() -> None:
    sample = parse_dump(load("pyspy-dump-hog-sleeper.json"), 1.0)
    names = dict(sample.threads)
    owners = [names[tid] for tid in sample.owners]
    assert owners == ["hog"]
    assert [names[tid] for tid in sample.active] == ["hog"]
    tops = {names[tid]: frame for tid, frame in sample.top_frames}
    assert tops["hog"].startswith("spin (")
    assert tops["sleepy"].startswith("sleeper (")


def test_frame_kinds() -> None:
    assert kind("/usr/lib/python3.11/selectors.py") == "stdlib"
    assert kind("/venv/lib/python3.11/site-packages/aiohttp/web.py") == "library"
    assert kind("/srv/app/handlers.py") == "app"
    # an application pip-installed into a virtualenv is still the application
    assert kind("/venv/lib/python3.11/site-packages/myshop/views.py") == "app"
    assert kind("/venv/lib/python3.11/site-packages/starlette/routing.py") == "library"
    assert kind("<frozen runpy>") == "native"
    assert short_file("/venv/lib/python3.11/site-packages/aiohttp/web.py") == "aiohttp/web.py"
    stack = [
        Frame("select", "/usr/lib/python3.11/selectors.py", 1),
        Frame("_run_once", "/usr/lib/python3.11/asyncio/base_events.py", 2),
        Frame("handle", "/venv/lib/python3.11/site-packages/aiohttp/web_protocol.py", 3),
        Frame("orders", "/srv/app/views.py", 40),
    ]
    assert innermost_app(stack) == stack[3]
    assert label(stack[3]) == "orders (views.py:40)"
    assert innermost_app(stack[:3]) == stack[2]
    assert innermost_app([]) is None


def test_stacks_rate_keeps_to_its_budget() -> None:
    assert stacks_rate_for(2) == 100  # a small server: full rate
    assert stacks_rate_for(15) == 100  # 1,500 stacks/s exactly
    assert stacks_rate_for(30) == 50
    assert stacks_rate_for(200) == 10  # floor: a stall of 300 ms still spans 3 ticks
    assert stacks_rate_for(5000) == 10
    assert stacks_rate_for(0) == 100
    assert stacks_rate_for(2, max_hz=20) == 20  # a lower requested rate is honoured
    assert stacks_rate_for(500, max_hz=5) == 5


def test_failure_classification() -> None:
    status, reason, remedy = classify_failure("Error: Permission denied (os error 13)", 1)
    assert status == "denied" and "CAP_SYS_PTRACE" in remedy and "Permission denied" in reason


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ph": st.sampled_from(["B", "E", "X", "M"]),
                "ts": st.integers(0, 2_000_000),
                "tid": st.integers(0, 3),
                "name": st.one_of(st.text(max_size=20), st.just("thread (12): t")),
                "args": st.fixed_dictionaries(
                    {"filename": st.text(max_size=10), "line": st.integers(0, 99)}
                ),
            }
        ),
        max_size=60,
    )
)
def test_chrometrace_parser_never_crashes_on_odd_input(events: list[dict]) -> None:
    frames, spans, _ = parse_chrometrace(events, 10.0)
    for span in spans:
        assert span.start <= span.end
        assert all(0 <= i < len(frames) for i in span.stack)


def test_a_long_pyspy_run_is_cut_into_one_second_windows() -> None:
    """`record` to a file runs py-spy 5 s at a time (a fifth of the starts); the stream must
    still hold 1-second windows whose spans, frames and counts add up to the run's."""
    a, b, c = Frame("a", "/app/x.py", 1), Frame("b", "/app/x.py", 2), Frame("c", "/app/y.py", 3)
    spans = (
        StackSpan(1, 100.0, 102.5, (0, 1)),  # crosses two cuts
        StackSpan(2, 100.0, 105.0, (2,)),  # the whole run
        StackSpan(1, 102.5, 105.0, (1,)),
        StackSpan(3, 105.0, 105.0, (2,)),  # one sample at the very end
    )
    run = StacksWindow(105.0, 100.0, (a, b, c), spans, ((1, "main"), (2, "w")), 499, 3, 100, ())
    windows = split_window(run, 5)
    assert [(w.start, w.t) for w in windows] == [(100.0 + i, 101.0 + i) for i in range(5)]
    assert sum(w.samples for w in windows) == 499 and sum(w.errors for w in windows) == 3
    assert all(w.thread_names == run.thread_names for w in windows)
    for w in windows:
        assert all(w.start <= s.start <= s.end <= w.t for s in w.spans)
        assert all(max(s.stack) < len(w.frames) for s in w.spans)

    def covered(tid: int) -> float:
        return sum(s.end - s.start for w in windows for s in w.spans if s.tid == tid)

    assert covered(1) == covered(2) == 5.0
    first = windows[0]
    assert [tuple(first.frames[i].name for i in s.stack) for s in first.spans] == [
        ("a", "b"),
        ("c",),
    ]
    assert [s.tid for s in windows[-1].spans] == [2, 1, 3]
    assert split_window(run, 1) == [run]


def test_the_last_sample_a_file_shows_is_before_pyspys_closing_of_its_slices() -> None:
    """py-spy closes every open slice when it writes its file: the newest timestamp is that
    write, not a sample. The last sample shown is the newest stack change."""
    events = load("pyspy-chrometrace-alternating.json")
    _, spans, _ = parse_chrometrace(events, 100.0)
    written = max(float(e["ts"]) for e in events)
    sampled = last_sampled(events)
    assert sampled is not None and sampled < written
    assert abs(100.0 - (written - sampled) / 1e6 - spans[-1].start) < 1e-6
    # stacks that never change show only the samples that first saw each thread
    steady = load("pyspy-chrometrace-hog-sleeper.json")
    newest = max(float(e["ts"]) for e in steady if e.get("ph") == "B")
    assert last_sampled(steady) == newest < 0.01 * max(float(e["ts"]) for e in steady)
    assert last_sampled([]) is None


def test_split_windows_share_the_runs_last_sample() -> None:
    span = StackSpan(1, 100.0, 103.0, (0,))
    run = StacksWindow(103.0, 100.0, (Frame("a", "/app/x.py", 1),), (span,), (), 300, 0, 100,
                       (), 101.5)  # fmt: skip
    assert [w.sampled_to for w in split_window(run, 3)] == [101.0, 101.5, 102.0]


def test_a_window_is_anchored_when_pyspy_wrote_its_file(tmp_path: Path) -> None:
    """Our wake-up after py-spy exits comes later than its write; the file's mtime says when.
    A mtime more than a second off (a stepped wall clock) is not believed."""
    out = tmp_path / "window.json"
    before = time.monotonic()
    out.write_text("[]")
    after = time.monotonic()
    woke = after + 0.3
    assert before - 0.02 <= _written_at(str(out), woke) <= after  # mtime ticks are coarse
    old = time.time() - 10
    os.utime(out, (old, old))
    assert _written_at(str(out), woke) == woke
    assert _written_at(str(tmp_path / "missing.json"), woke) == woke
