"""py-spy output parsers, on files py-spy really wrote (see fixtures/README.md)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from lifescope.analysis.frames import innermost_app, kind, label, short_file
from lifescope.probes.pyspy import (
    classify_failure,
    parse_chrometrace,
    parse_dump,
    stacks_rate_for,
)
from lifescope.samples import Frame

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
