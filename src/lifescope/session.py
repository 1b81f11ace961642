"""The UI side of the pipe: start a collector process and read its sample stream.

Used by `attach` (live, in a reader thread) and `snapshot` (headless, until the collector
ends). The collector is our child: it is stopped by pid when the session ends or a signal
arrives (`lifecycle`), and it asks the kernel to SIGTERM it if we die first, so no sampler
outlives the tool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO

from lifescope import lifecycle, stream
from lifescope.timeline import Timeline


class CollectorFailed(Exception):
    """The collector could not start streaming; the message is its own one-line error."""


class CollectorProcess:
    def __init__(
        self,
        pid: int,
        seconds: float | None = None,
        probes: Sequence[str] | None = None,
        python: str = sys.executable,
        record: str | None = None,
        http_lines: bool = False,
        full_rate: bool = False,
    ) -> None:
        argv = [python, "-m", "lifescope.collector", str(pid)]
        if full_rate:
            argv.append("--full-rate")
        if record is not None:
            argv += ["--record", record]
        if http_lines:
            argv.append("--http-lines")
        if seconds is not None:
            argv += ["--seconds", str(seconds)]
        if probes:
            argv += ["--probes", ",".join(probes)]
        self.argv = argv
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=lifecycle.child_env(die_with_parent=True),
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it directly
        )
        self.pid = self.proc.pid
        lifecycle.track(self.proc)

    def samples(self) -> Iterator[object]:
        """Every sample until the collector ends; raises CollectorFailed if it never began."""
        assert self.proc.stdout is not None
        try:
            yield from stream.read(self.proc.stdout)
        except stream.StreamError as exc:
            if exc.offset == 0:
                self.proc.wait()
                raise CollectorFailed(self.error_text() or str(exc)) from exc
            raise

    def error_text(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text.splitlines()[-1] if text else ""

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL; always reaps. Safe to call twice."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        lifecycle.untrack(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def collect(
    pid: int,
    seconds: float,
    probes: Sequence[str] | None = None,
    http_lines: bool = False,
    full_rate: bool = False,
) -> Timeline:
    """Run a collector for `seconds` and return everything it saw (the `snapshot` path)."""
    timeline = Timeline()
    collector = CollectorProcess(
        pid, seconds=seconds, probes=probes, http_lines=http_lines, full_rate=full_rate
    )
    try:
        for sample in collector.samples():
            timeline.add(sample)
        if collector.proc.wait() != 0 and timeline.hello is None:
            raise CollectorFailed(collector.error_text() or "collector failed")
    finally:
        collector.stop()
    return timeline
