"""The fidelity matrix as tests: one test per scenario and truth (issue 12).

Each scenario is measured once (a session-wide runner keeps a server up while consecutive
scenarios share it), and every truth of it is its own test, so a report says exactly which
truths hold. The truths lifescope gets wrong today are strict xfails carrying what it shows
instead (``KNOWN_WRONG``): the day the engine gets one right, that test fails as XPASS until
its entry is removed — the matrix drives the engine work, one truth at a time.

~4-5 minutes on 2 cores: about sixty 3-second collections on fourteen servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fidelity.checks import judge
from tests.fidelity.runner import Runner
from tests.fidelity.scenarios import KNOWN_WRONG, SCENARIOS, Scenario

SECONDS = 3.0


def _cases() -> list[object]:
    cases = []
    for scenario in SCENARIOS:
        for check in scenario.truth.checks():
            reason = KNOWN_WRONG.get((scenario.id, check))
            marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)]
            cases.append(
                pytest.param(
                    scenario, check, id=f"{scenario.id}:{check}", marks=marks if reason else ()
                )
            )
    return cases


@pytest.fixture(scope="session")
def matrix() -> Iterator[Runner]:
    runner = Runner(seconds=SECONDS)
    try:
        yield runner
    finally:
        runner.close()


@pytest.mark.parametrize(("scenario", "check"), _cases())
def test_truth(matrix: Runner, scenario: Scenario, check: str) -> None:
    measured = matrix.measure(scenario)
    ok, evidence = judge(scenario.truth, check, measured)
    assert ok, f"{scenario.id}: truth {scenario.truth.describe()}; {check}: {evidence}"


def test_known_wrong_names_real_checks() -> None:
    """A stale KNOWN_WRONG entry (renamed scenario, dropped truth) would silently vanish."""
    real = {(s.id, c) for s in SCENARIOS for c in s.truth.checks()}
    assert set(KNOWN_WRONG) <= real, sorted(set(KNOWN_WRONG) - real)
