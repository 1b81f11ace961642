"""The text snapshot (`lifescope snapshot PID`): every list it shortens says so, and no column
cuts a value — on the committed recording of the demo, the path `snapshot --from` takes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lifescope.analysis import report
from lifescope.recording import load
from lifescope.replay import Player

FIXTURE = Path(__file__).parent / "fixtures" / "demo-session.lsr"


def recorded() -> report.Report:
    player = Player(load(str(FIXTURE)))
    player.seek(player.end)
    return report.build(player.timeline.window())


def test_a_shortened_stall_list_says_how_many_it_shows() -> None:
    result = recorded()
    loop = result.loops[0]
    assert len(loop.stalls) > report.TEXT_STALLS
    text = report.to_text(result)
    assert f"{len(loop.stalls)} stalls ≥100 ms (the last {report.TEXT_STALLS}:)" in text
    listed = [line for line in text.splitlines() if line.startswith("  +")]
    assert len(listed) == report.TEXT_STALLS


def test_a_short_list_is_not_said_to_be_shortened() -> None:
    result = recorded()
    loop = dataclasses.replace(result.loops[0], stalls=result.loops[0].stalls[:2])
    text = report.to_text(dataclasses.replace(result, loops=(loop,)))
    assert "2 stalls ≥100 ms\n" in text and "(the last" not in text


def test_a_shortened_in_flight_list_says_how_many_it_shows() -> None:
    result = recorded()
    assert result.layers is not None and result.layers.in_flight
    many = result.layers.in_flight * 4
    layers = dataclasses.replace(result.layers, in_flight=many)
    text = report.to_text(dataclasses.replace(result, layers=layers))
    assert f"in flight: {len(many)} (the first {report.TEXT_IN_FLIGHT}:)" in text


def test_no_column_cuts_a_syscall_or_a_name() -> None:
    result = recorded()
    sleeper = dataclasses.replace(
        result.threads[0], name="ThreadPoolExecutor-0_0", syscall="clock_nanosleep"
    )
    text = report.to_text(dataclasses.replace(result, threads=(sleeper, *result.threads[1:])))
    row = next(line for line in text.splitlines() if "ThreadPoolExecutor-0_0" in line)
    assert " clock_nanosleep " in row
    header = next(line for line in text.splitlines() if line.lstrip().startswith("tid"))
    assert header.index("syscall") == row.index("clock_nanosleep")
