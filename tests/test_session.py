"""The collector's stream as a caller holds it: stopping it while another thread reads."""

from __future__ import annotations

import threading

from lifescope.options import CollectorOptions
from lifescope.session import CollectorProcess

IDLE = """
import time
print("READY", flush=True)
time.sleep(120)
"""


def test_stop_under_a_reading_thread_ends_its_iteration(python_target) -> None:  # type: ignore[no-untyped-def]
    """`stop()` closes the stream a reader thread is blocked on (the UI and the tests read in
    a thread of their own). The reader's loop must end, not raise: it once raised
    `ValueError: PyMemoryView_FromBuffer()` in a thread at the end of a GIL test. After the
    stop, a new iteration ends at once too (that read is the deterministic half)."""
    proc = python_target(IDLE)
    collector = CollectorProcess(proc.pid, CollectorOptions(probes=("threads",)))
    got: list[object] = []
    failed: list[BaseException] = []
    first = threading.Event()

    def read() -> None:
        try:
            for sample in collector.samples():
                got.append(sample)
                first.set()
        except BaseException as exc:  # whatever the thread raised is the finding
            failed.append(exc)
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(20), "no sample from the collector"
    collector.stop()
    reader.join(10)
    assert not reader.is_alive()
    assert not failed, failed
    assert got
    assert list(collector.samples()) == []
