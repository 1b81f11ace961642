"""`lifescope.snapshot/1` is a contract: the JSON (and the text) of a report built from the
committed recording must not change by accident — a refactor of `analysis.report` keeps them
byte for byte. Regenerate on purpose with `python -m tests.test_report_golden`, and say why in
the commit."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lifescope.analysis import report
from lifescope.analysis.processes import ProcessView
from lifescope.recording import load
from lifescope.replay import Player
from lifescope.timeline import Timeline

HERE = Path(__file__).parent
FIXTURE = HERE / "fixtures" / "demo-session.lsr"
GOLDEN = HERE / "fixtures" / "report-golden"


def _at(offset: float | None, seconds: float | None = None) -> report.Report:
    player = Player(load(str(FIXTURE)))
    player.seek(player.end if offset is None else player.start + offset)
    return report.build(player.timeline.window(seconds))


def _prefork() -> report.Report:
    """The recording with a pre-fork server's processes and a target without a GIL: the
    branches the single-process demo does not reach."""
    base = _at(None)
    no_gil = report.GilView(
        held_share=None,
        source="none",
        samples=0,
        no_gil="free-threaded build, GIL disabled",
        runnable_mean=1.5,
        runnable_max=3,
    )
    processes = (
        ProcessView(100, "master", 0.01, 30_000_000, 2, 12, 0, 0),
        ProcessView(101, "worker", 0.5, 40_000_000, 4, 20, 7, 2),
        ProcessView(102, "worker", None, 41_000_000, 4, 19, 3, 1),
    )
    return dataclasses.replace(
        base, gil=no_gil, processes=processes, workers=(101, 102), layers=None, packets=None
    )


CASES: dict[str, Callable[[], report.Report]] = {
    "demo-end": lambda: _at(None),
    "demo-mid-2s": lambda: _at(3.0, 2.0),
    "demo-young": lambda: _at(0.6),
    "prefork-no-gil": _prefork,
    "empty": lambda: report.build(Timeline().window()),
}


def render(name: str) -> tuple[str, str]:
    built = CASES[name]()
    return json.dumps(report.to_json(built), indent=2) + "\n", report.to_text(built) + "\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_report_renders_as_recorded(name: str) -> None:
    as_json, as_text = render(name)
    assert as_json == (GOLDEN / f"{name}.json").read_text()
    assert as_text == (GOLDEN / f"{name}.txt").read_text()


if __name__ == "__main__":
    for case in CASES:
        as_json, as_text = render(case)
        (GOLDEN / f"{case}.json").write_text(as_json)
        (GOLDEN / f"{case}.txt").write_text(as_text)


def test_a_stall_cut_by_the_first_stack_sample_says_so() -> None:
    """A stall under way when the loop thread's first stack sample was taken (the start of a
    recording, or of the stack windows a window holds) is shown as 'at least' its visible
    part; a stall seen whole is not, and has the same length in every window that holds it."""
    player = Player(load(str(FIXTURE)))
    player.seek(player.end)
    whole = report.build(player.timeline.window(None))
    late = report.build(player.timeline.window(player.end - player.start - 1.5))
    for result in (whole, late):
        stalls = result.loops[0].stalls
        assert stalls[0].cut_start and not any(s.cut_start for s in stalls[1:]), stalls[:2]
    shift = whole.window_s - late.window_s
    for stall in late.loops[0].stalls[1:]:
        same = [
            s for s in whole.loops[0].stalls
            if s.frame == stall.frame and abs(s.start_s - (stall.start_s + shift)) < 0.01
        ]  # fmt: skip
        assert [s.duration_ms for s in same] == [stall.duration_ms], (stall, same)
