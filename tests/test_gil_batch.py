"""The GIL probe's batch loops (issue 17): the compiled one and its pure-Python fallback must
hand back the same kind of records from the same pacing, so the probe above them cannot tell
them apart. Behaviour only — what they cost is measured in bench/bench_record_cost.py."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import time
from collections.abc import Callable

import pytest

from lifescope.probes import gil_batch
from lifescope.probes.gil_batch import Pace, batcher_for
from lifescope.probes.gil_reader import GilReader
from lifescope.probes.memory import PartialReadError, PreparedRead, ProcessGoneError
from tests.test_gil_reader import CPU_BOUND, IDLE, Target, spawn  # noqa: F401  (fixture)

LOOPS = [pytest.param(False, id="python")]
if gil_batch._sampler is not None:
    LOOPS.append(pytest.param(True, id="native"))


def _pace(reader: GilReader, period: float = 0.0005) -> Pace:
    raw = PreparedRead(reader.pid, reader.batch_layout.regions).read()
    now = time.monotonic()
    return Pace(period, max(period, 0.002), 0.2, now + period, period, now, now, raw, reads=1)


@pytest.mark.parametrize("native", LOOPS)
def test_a_batch_reads_until_its_deadline_and_returns_what_changed(
    spawn: Callable[..., Target],  # noqa: F811
    native: bool,
) -> None:
    target = spawn(sys.executable, CPU_BOUND)
    with GilReader.open(target.pid) as reader:
        run = batcher_for(reader, native)
        pace = _pace(reader)
        until = time.monotonic() + 0.1
        seen = []
        while pace.previous < until:
            run(pace, until, reader.known_holders())
            for previous, at, raw in pace.changes:
                assert previous < at and len(raw) == reader.batch_layout.size
                seen.append(reader.decode(raw))
            pace.changes.clear()
        assert pace.reads > 10  # paced reads happened, whatever the machine's load
        # Two spinning threads trade the GIL: the holder changes, and is named.
        assert any(value.locked and value.holder_tid in target.tids for value in seen)


@pytest.mark.parametrize("native", LOOPS)
def test_an_unknown_holder_ends_the_batch_at_once(
    spawn: Callable[..., Target],  # noqa: F811
    native: bool,
) -> None:
    """A holder the reader has not cached must be resolved now, not a batch later: thread
    states are freed and re-used, so a late look-up could name the wrong thread."""
    target = spawn(sys.executable, CPU_BOUND)
    with GilReader.open(target.pid) as reader:
        run = batcher_for(reader, native)
        pace = _pace(reader)
        pace.last = bytes(len(pace.last))  # nothing read yet: the first read is a change
        started = time.monotonic()
        run(pace, started + 5.0, ())
        assert time.monotonic() - started < 2.0
        assert pace.changes


@pytest.mark.parametrize("native", LOOPS)
def test_a_quiet_gil_is_read_at_the_idle_rate(
    spawn: Callable[..., Target],  # noqa: F811
    native: bool,
) -> None:
    target = spawn(sys.executable, IDLE)
    with GilReader.open(target.pid) as reader:
        run = batcher_for(reader, native)
        pace = _pace(reader)
        pace.quiet_since -= 1.0  # quiet for a second already
        until = time.monotonic() + 0.05
        while pace.previous < until:
            run(pace, until, reader.known_holders())
        assert pace.step == pace.idle_period


@pytest.mark.parametrize("native", LOOPS)
def test_the_target_exiting_is_an_error_the_probe_can_name(
    spawn: Callable[..., Target],  # noqa: F811
    native: bool,
) -> None:
    target = spawn(sys.executable, IDLE)
    with GilReader.open(target.pid) as reader:
        run = batcher_for(reader, native)
        pace = _pace(reader)
        os.kill(target.pid, 9)
        deadline = time.monotonic() + 5
        with pytest.raises((ProcessGoneError, PartialReadError)) as caught:
            while time.monotonic() < deadline:
                run(pace, time.monotonic() + 0.02, reader.known_holders())
        assert reader.read_error(caught.value).status in ("gone", "unavailable")


def test_the_compiled_loop_is_built_where_a_compiler_is() -> None:
    """`pip install .` builds it (optional) when gcc and Python's headers exist, as in CI; the
    fallback is for machines without them and says so in the probe's status."""
    headers = os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
    if not (shutil.which("gcc") or shutil.which("cc")) or not headers:
        pytest.skip("no C compiler or Python headers here: the Python loop is used")
    assert gil_batch._sampler is not None, "the optional extension was not built"
