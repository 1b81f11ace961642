"""Free-threaded CPython: detected from the block it publishes, and shown as having no GIL.

No free-threaded interpreter can be had on this machine (Debian ships none, and installing
one is out of reach), so detection is tested on recorded ``_Py_DebugOffsets`` blocks
(``tests/fixtures/debug_offsets``, written by ``tools/record_debug_offsets.py``): for 3.14 and
3.15, the block read from a live Debian interpreter, and the block that version's own headers
initialise for the GIL build (equal to the live one but for two struct sizes on 3.15) and for
the free-threaded build (``Py_GIL_DISABLED``). What the analysis then shows is tested on a
window holding the GIL probe's "no GIL" status and samples that would otherwise yield a held
share: none may be made up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lifescope.analysis import report
from lifescope.probes.errors import GilUnavailable, NoGil
from lifescope.probes.gil_reader import free_threaded_verdict, parse_debug_offsets
from lifescope.probes.offsets import load_offsets
from lifescope.samples import GilOwnership, ProbeStatus, ThreadsSample, ThreadStat
from lifescope.timeline import Timeline

BLOCKS = Path(__file__).parent / "fixtures" / "debug_offsets"
VERSIONS = {"3.14": "3.14.10", "3.15": "3.15.2"}


def _layout(minor: str) -> dict[str, int]:
    table = load_offsets(3, int(minor.split(".")[1]))
    assert table is not None and table.debug_offsets_layout is not None
    return table.debug_offsets_layout


@pytest.mark.parametrize("minor", sorted(VERSIONS))
@pytest.mark.parametrize("kind", ["live", "headers"])
def test_gil_builds_are_not_free_threaded(minor: str, kind: str) -> None:
    block = parse_debug_offsets(
        (BLOCKS / f"cpython-{minor}-{kind}.bin").read_bytes(), _layout(minor)
    )
    assert block.version == VERSIONS[minor]
    assert not block.free_threaded
    # the GIL build publishes 0 for the "enabled" field it does not have
    assert block.value("interpreter_state.gil_runtime_state_enabled") == 0


@pytest.mark.parametrize("minor", sorted(VERSIONS))
def test_free_threaded_build_is_detected(minor: str) -> None:
    raw = (BLOCKS / f"cpython-{minor}-ft-headers.bin").read_bytes()
    block = parse_debug_offsets(raw, _layout(minor))
    assert block.version == VERSIONS[minor]
    assert block.free_threaded
    # "enabled" leads the free-threaded build's GIL struct (offset 0 within it), so the
    # fields lifescope reads in a GIL build sit elsewhere: the GIL-build table cannot be used.
    assert block.value("interpreter_state.gil_runtime_state_enabled") == 0
    gil_build = parse_debug_offsets(
        (BLOCKS / f"cpython-{minor}-live.bin").read_bytes(), _layout(minor)
    )

    def locked(b: object) -> int:
        return b.value("interpreter_state.gil_runtime_state_locked") - b.value(  # type: ignore[attr-defined]
            "interpreter_state.gil_runtime_state"
        )

    assert locked(block) != locked(gil_build)
    # and read with a neighbouring version's layout the leading fields still say so
    other = "3.15" if minor == "3.14" else "3.14"
    assert parse_debug_offsets(raw, _layout(other)).free_threaded


def test_not_a_debug_offsets_block() -> None:
    with pytest.raises(ValueError, match="cookie"):
        parse_debug_offsets(b"\0" * 800, _layout("3.14"))


def test_verdict_no_gil_only_when_disabled() -> None:
    disabled = free_threaded_verdict("3.14.10", 0)
    assert isinstance(disabled, NoGil) and disabled.reason.startswith("no GIL")
    enabled = free_threaded_verdict("3.14.10", 1)  # PYTHON_GIL=1: a GIL, another struct
    assert isinstance(enabled, GilUnavailable) and not isinstance(enabled, NoGil)
    assert "py-spy" in enabled.remedy


def test_no_gil_shows_no_held_share_and_what_runs_at_once() -> None:
    """Four threads, three runnable in every /proc sample; py-spy dumps that name an
    "owner" (a free-threaded py-spy may): the report must not turn them into a held share."""
    timeline = Timeline()
    reason = "no GIL: free-threaded CPython 3.14.10t with the GIL disabled"
    timeline.add(ProbeStatus(0.0, "gil", "unavailable", reason, "nothing to fix"))
    for i in range(20):
        t = 1.0 + i * 0.1
        states = ("R", "R", "R", "S")
        threads = tuple(
            ThreadStat(100 + k, f"t{k}", state, 10 * i * (state == "R"), -1, None)
            for k, state in enumerate(states)
        )
        timeline.add(ThreadsSample(t, threads))
        timeline.add(GilOwnership(t, (100,), (100, 101, 102), ((100, "t0"),)))
    result = report.build(timeline.window())
    assert result.gil.held_share is None
    assert result.gil.source == "none"
    assert result.gil.no_gil == reason
    assert result.gil.runnable_mean == 3 and result.gil.runnable_max == 3
    assert all(t.gil_share is None for t in result.threads)
    as_json = report.to_json(result)["gil"]
    assert as_json["held_share"] is None and as_json["runnable_max"] == 3
    assert "no GIL" in report.to_text(result)
