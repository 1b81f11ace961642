"""The fidelity matrix as tests: one test per scenario and truth (issue 12).

Each scenario is measured once (a session-wide runner keeps a server up while consecutive
scenarios share it), and every truth of it is its own test, so a report says exactly which
truths hold. The truths lifescope gets wrong today are strict xfails carrying what it shows
instead (``KNOWN_WRONG``): the day the engine gets one right, that test fails as XPASS until
its entry is removed — the matrix drives the engine work, one truth at a time. A verdict
that contradicts the table is measured once more before it counts (see `checks.verdict`).

~4-5 minutes on 2 cores: about sixty 3-second collections on fourteen servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fidelity.checks import verdict
from tests.fidelity.runner import Runner
from tests.fidelity.scenarios import KNOWN_FLAKY, KNOWN_WRONG, SCENARIOS, Scenario

SECONDS = 3.0


def _cases() -> list[object]:
    cases = []
    for scenario in SCENARIOS:
        for check in scenario.truth.checks():
            key = (scenario.id, check)
            marks = []
            if key in KNOWN_WRONG:
                marks.append(
                    pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN_WRONG[key])
                )
            elif key in KNOWN_FLAKY:
                marks.append(
                    pytest.mark.xfail(strict=False, raises=AssertionError, reason=KNOWN_FLAKY[key])
                )
            cases.append(pytest.param(scenario, check, id=f"{scenario.id}:{check}", marks=marks))
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
    ok, evidence, _ = verdict(matrix, scenario, check)
    assert ok, f"{scenario.id}: truth {scenario.truth.describe()}; {check}: {evidence}"


def test_known_wrong_names_real_checks() -> None:
    """A stale entry (renamed scenario, dropped truth) would silently vanish."""
    real = {(s.id, c) for s in SCENARIOS for c in s.truth.checks()}
    assert set(KNOWN_WRONG) <= real, sorted(set(KNOWN_WRONG) - real)
    assert set(KNOWN_FLAKY) <= real, sorted(set(KNOWN_FLAKY) - real)
    assert not set(KNOWN_WRONG) & set(KNOWN_FLAKY)
