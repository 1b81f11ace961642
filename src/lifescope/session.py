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
from typing import IO, Any

from lifescope import lifecycle, privsep, stream
from lifescope.options import DEFAULTS, CollectorOptions
from lifescope.samples import Sample
from lifescope.timeline import Timeline


class CollectorFailed(Exception):
    """The collector could not start streaming; the message is its own one-line error."""


class CollectorProcess:
    """A collector and its stream: our own child, or — after `privsep.separate()` under sudo —
    a root collector started for us by the broker, of which we hold only the pipes."""

    def __init__(
        self,
        pid: int,
        options: CollectorOptions = DEFAULTS,
        python: str = sys.executable,
    ) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._broker = privsep.broker()
        if self._broker is not None:
            self.pid, out, err = self._broker.spawn(pid, options)
            self.stdout: IO[bytes] = os.fdopen(out, "rb")
            self._stderr: IO[bytes] = os.fdopen(err, "rb")
            return
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [python, "-m", "lifescope.collector", str(pid), *options.argv()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=lifecycle.child_env(die_with_parent=True),
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it directly
        )
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout
        self.pid = self.proc.pid
        lifecycle.track(self.proc)

    def samples(self) -> Iterator[Sample]:
        """Every sample until the collector ends; raises CollectorFailed if it never began."""
        try:
            yield from stream.read(self.stdout)
        except stream.StreamError as exc:
            if exc.offset == 0:
                self.wait()
                raise CollectorFailed(self.error_text() or str(exc)) from exc
            raise
        except ValueError:
            # `stop()` closed the stream under a reader in another thread: that reader's
            # read fails (a closed file, or its buffer freed mid-read) and the stream has ended.
            if not self._stopping:
                raise

    def wait(self) -> int:
        """Its exit code once it ended (a brokered collector is not ours to reap: 0 once its
        stream has ended, which is when callers ask)."""
        return 0 if self.proc is None else self.proc.wait()

    def error_text(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return text.splitlines()[-1] if text else ""

    def stop(self, timeout: float = 3.0) -> None:
        """Close its stream (a collector whose reader is gone ends at its next write), then
        SIGTERM and SIGKILL; always reaps. Safe to call twice."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self.stdout.close()
        if self._broker is not None:
            self._broker.stop(self.pid)
        elif self.proc.poll() is None:  # type: ignore[union-attr]
            proc = self.proc
            assert proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.proc is not None:
            lifecycle.untrack(self.proc)
        self._stderr.close()


def collect(
    pid: int, seconds: float, probes: Sequence[str] | None = None, **options: Any
) -> Timeline:
    """Run a collector for `seconds` and return everything it saw (the `snapshot` path).
    `options` are `CollectorOptions` fields (``full_rate=True``)."""
    if probes is not None:
        options["probes"] = tuple(probes)
    return gather(pid, CollectorOptions(seconds=seconds, **options))


def gather(pid: int, options: CollectorOptions) -> Timeline:
    """Everything a child collector with `options` (which must end: `seconds`) saw."""
    timeline = Timeline()
    collector = CollectorProcess(pid, options)
    try:
        for sample in collector.samples():
            timeline.add(sample)
        if collector.wait() != 0 and timeline.hello is None:
            raise CollectorFailed(collector.error_text() or "collector failed")
    finally:
        collector.stop()
    return timeline
