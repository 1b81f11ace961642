"""The local side of `ssh://`: one connection (`RemoteCollector`), and the session that
survives a broken link (`RemoteSession`).

A dropped link is a state, not an end: the session yields a `LinkGap` (ongoing) at once, so
the UI says "link down since HH:MM:SS" and keeps every sample it had; it reconnects with
back-off (`BACKOFF_S`), and when a new collector streams, yields the closed `LinkGap` so the
timeline and the recording both mark what was not seen. The recording of a remote session is
written here, from the received samples (the host keeps nothing): through
`collector.open_recording`, so it is created like every other output (`outputs`), gzip, sync-
flushed every 100 ms, and a gap is in it the moment the drop is seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, BinaryIO

from lifescope import __version__, lifecycle, stream
from lifescope.options import CollectorOptions
from lifescope.remote import bundle, transport
from lifescope.remote.spec import RemoteTarget
from lifescope.samples import Hello, LinkGap, Sample, TargetGone
from lifescope.session import CollectorFailed
from lifescope.timeline import Timeline

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
"""Waits before each reconnection attempt; the last repeats until the session ends."""
HANDSHAKE_TIMEOUT_S = 60.0
"""Login, finding Python, and shipping the bundle over a slow link must finish in this."""
NO_PYTHON = (
    "no CPython 3.8+ on the host's PATH — install python3 (3.8 or newer) there; lifescope needs "
    "nothing else"
)
"""What a host without a usable interpreter is told: the one thing lifescope needs there."""
SSH_FAILED = 255
FLUSH_S = 0.1

_BOOT = os.path.join(os.path.dirname(__file__), "boot.py")
_GONE_WORDS = ("no process with pid", "is a zombie")
"""`target.resolve`'s words for a pid that no longer runs: ended during an outage."""
_LOCAL_ONLY = {"output": None, "record": None, "record_fd": None, "force": False,
               "prometheus": None, "prometheus_allow_remote": False}  # fmt: skip
"""Options that name local files or ports: never passed to the host's collector."""


class RemoteCollector:
    """One ssh connection running one collector on the host. Quacks like
    `session.CollectorProcess` (`samples`, `stop`, `error_text`, `proc`)."""

    def __init__(self, target: RemoteTarget, options: CollectorOptions, sudo: bool = False) -> None:
        self.target = target
        self.lean = options.lean
        remote = dataclasses.replace(options, **_LOCAL_ONLY)  # type: ignore[arg-type]
        with open(_BOOT, "rb") as handle:
            self._boot = handle.read()
        command = transport.remote_command(
            len(self._boot), [__version__, str(target.pid), *remote.argv()], sudo=sudo
        )
        self.argv = transport.ssh_argv(target, command, lean=options.lean)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not ssh directly
        )
        self.pid = self.proc.pid
        lifecycle.track(self.proc)
        self.ready = False
        self.mode = ""
        """"installed" (the host's own lifescope) or "bundle" (shipped this time)."""
        self.host_python = ""
        self.shipped_bytes = 0
        self.bundle_note = ""
        self.ready_s: float | None = None
        self.first_sample_s: float | None = None
        """Seconds from starting ssh to the first sample (not the header): what a user waits."""

    # ------------------------------------------------------------------------------ handshake

    def _line(self) -> list[str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise CollectorFailed(self.explain())
        words = line.decode(errors="replace").split()
        if words[:1] != ["lifescope-remote"]:
            raise CollectorFailed(f"{self.target.host} answered {line[:80]!r}, not lifescope's "
                                  "boot — a login script printing to stdout? ssh -T must be "
                                  "quiet")  # fmt: skip
        return words[1:]

    def connect(self) -> None:
        """Send the boot program, the bundle if asked, and wait for READY."""
        assert self.proc.stdin is not None
        timer = threading.Timer(HANDSHAKE_TIMEOUT_S, self._kill)
        timer.daemon = True
        timer.start()
        try:
            self._send(self._boot)
            words = self._line()
            if words[:1] == ["SEND"]:
                facts = bundle.HostFacts.parse(words[1:])
                built = bundle.build(facts, lean=self.lean)
                self._send(b"%d\n" % len(built.data) + built.data)
                self.shipped_bytes = len(built.data)
                self.bundle_note = built.note
                words = self._line()
            if words[:1] != ["READY"]:
                raise CollectorFailed(
                    NO_PYTHON
                    if words[:1] == ["NO-PYTHON"]
                    else f"unexpected answer from the host: {' '.join(words)[:80]}"
                )
        finally:
            timer.cancel()
        self.shipped_bytes += len(self._boot)
        self.mode = words[1] if len(words) > 1 else ""
        self.host_python = next((w[7:] for w in words if w.startswith("python=")), "")
        self.ready = True
        self.ready_s = time.monotonic() - self.started

    def _send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            # A host without Python answers and exits before the boot program is all sent:
            # its answer is still in the pipe.
            said = b""
            if self.proc.stdout is not None:
                with contextlib.suppress(OSError, ValueError):
                    said = self.proc.stdout.read()
            if b"lifescope-remote NO-PYTHON" in said:
                raise CollectorFailed(NO_PYTHON) from None
            raise CollectorFailed(self.explain()) from None

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    # --------------------------------------------------------------------------------- stream

    def samples(self) -> Iterator[Sample]:
        """Every sample until the stream ends; CollectorFailed if it never began."""
        assert self.proc.stdout is not None
        self.connect()
        try:
            for sample in stream.read(self.proc.stdout):
                if self.first_sample_s is None and not isinstance(sample, Hello):
                    self.first_sample_s = time.monotonic() - self.started
                yield sample
        except stream.StreamError as exc:
            if exc.offset == 0:
                self.proc.wait()
                raise CollectorFailed(self.explain()) from exc
            raise

    def error_text(self) -> str:
        try:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").splitlines()
        except ValueError:  # closed by stop()
            return ""
        # ssh's own chatter is not the error ("Warning: Permanently added ... known hosts").
        useful = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("Warning:")]
        last = useful[-1] if useful else ""
        # The host's collector speaks as "lifescope: ..."; the caller adds its own prefix.
        return last[len("lifescope: ") :] if last.startswith("lifescope: ") else last

    def explain(self) -> str:
        """The failure in one line, with the fix where a known cause is recognised."""
        code = self.proc.wait()
        text = self.error_text()
        host = self.target.host
        if "a password is required" in text or "a terminal is required" in text:
            return (f"sudo on {host} wants a password, and lifescope never prompts (sudo -n)"
                    " — allow this user passwordless sudo, or connect as the target's user"
                    )  # fmt: skip
        if code == SSH_FAILED:
            return (f"ssh to {self.target.destination} failed: {text or 'no reason given'} — "
                    f"check that `ssh {self.target.destination}` logs in without a prompt "
                    "(keys or agent; lifescope runs ssh with BatchMode=yes)")  # fmt: skip
        return text or f"the remote collector ended with exit code {code}"

    def stop(self, timeout: float = 3.0) -> None:
        """Close the channel (the host's collector stops on EOF), then end ssh. Safe twice."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                self.proc.wait()
        lifecycle.untrack(self.proc)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        with contextlib.suppress(OSError):
            self._stderr.close()


class _Recorder:
    """The received stream, saved here as a recording (the host writes nothing)."""

    def __init__(self, path: str, force: bool) -> None:
        from lifescope.collector import open_recording

        self.out: BinaryIO = open_recording(path, force)
        self.out.write(stream.header_line())
        self._next_flush = 0.0

    def write(self, sample: Sample, flush: bool = False) -> None:
        self.out.write(stream.encode(sample))
        now = time.monotonic()
        if flush or now >= self._next_flush:
            self.out.flush()
            self._next_flush = now + FLUSH_S

    def close(self) -> None:
        from lifescope.collector import _close

        _close(self.out)


class RemoteSession:
    """Samples from a remote target across reconnections, with each outage marked."""

    def __init__(
        self,
        target: RemoteTarget,
        options: CollectorOptions,
        sudo: bool = False,
        reconnect: bool = True,
    ) -> None:
        self.target = target
        self.options = options
        self.sudo = sudo
        self.reconnect = reconnect
        self.current: RemoteCollector | None = None
        self.connections = 0
        self.attempt = 0
        """Failed attempts since the link went down (0 while it is up)."""
        self.retry_at: float | None = None
        """Monotonic time of the next attempt while the link is down."""
        self.last_error = ""
        self.first: RemoteCollector | None = None
        """The first connection that streamed (its handshake numbers are the ones to report)."""
        self._hello: Hello | None = None
        self._stopped = threading.Event()
        self._recorder = (
            _Recorder(options.record, options.force) if options.record is not None else None
        )
        self._deadline = time.monotonic() + options.seconds if options.seconds is not None else None

    def stop(self) -> None:
        self._stopped.set()
        current = self.current
        if current is not None:
            current.stop()

    def samples(self) -> Iterator[Sample]:
        try:
            for sample in self._samples():
                if self._recorder is not None:
                    self._recorder.write(sample, flush=isinstance(sample, LinkGap))
                yield sample
        finally:
            if self._recorder is not None:
                self._recorder.close()
            if self.current is not None:
                self.current.stop()

    def _options(self) -> CollectorOptions:
        if self._deadline is None:
            return self.options
        left = max(0.1, self._deadline - time.monotonic())
        return dataclasses.replace(self.options, seconds=left)

    def _samples(self) -> Iterator[Sample]:
        last_t: float | None = None
        down: LinkGap | None = None
        while not self._stopped.is_set():
            collector = self.current = RemoteCollector(self.target, self._options(), self.sudo)
            broke = False
            try:
                for sample in collector.samples():
                    if down is not None and isinstance(sample, Hello):
                        yield LinkGap(sample.mono_at_start, down.start, down.wall_start,
                                      down.reason)  # fmt: skip
                        down = None
                        self.attempt, self.retry_at = 0, None
                    if isinstance(sample, Hello):
                        self.connections += 1
                        if self.first is None:
                            self.first, self._hello = collector, sample
                        elif self._replaced(sample):
                            yield TargetGone(last_t or sample.mono_at_start,
                                             f"pid {sample.pid} is another process since the "
                                             "link came back (restarted or reused)")  # fmt: skip
                            return
                    t = getattr(sample, "t", None)
                    last_t = t if t is not None else last_t
                    yield sample
                    if isinstance(sample, TargetGone):
                        return
            except CollectorFailed as exc:
                if self.connections == 0 or not self._link_failed(collector):
                    if down is not None and any(w in str(exc) for w in _GONE_WORDS):
                        yield TargetGone(last_t or 0.0, f"gone while the link was down: {exc}")
                        return
                    if self._stopped.is_set():
                        return
                    raise
                self.last_error = str(exc)
            except stream.StreamError as exc:
                broke = True
                self.last_error = str(exc)
            link_failed = self._link_failed(collector)
            if not self.last_error or not broke:
                self.last_error = collector.error_text() or self.last_error
            collector.stop()
            if self._stopped.is_set() or not self.reconnect or lifecycle.exiting():
                return
            if not broke and not link_failed:
                return  # the host's collector ended by itself (--seconds, a clean stop)
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return
            if down is None:
                code = collector.proc.returncode
                reason = self.last_error or f"connection lost (ssh exit {code})"
                down = LinkGap(last_t or 0.0, last_t or 0.0, time.time(), reason, ongoing=True)
                yield down
            wait = BACKOFF_S[min(self.attempt, len(BACKOFF_S) - 1)]
            self.attempt += 1
            self.retry_at = time.monotonic() + wait
            if self._stopped.wait(wait):
                return

    def _replaced(self, hello: Hello) -> bool:
        """A reconnection found the pid held by a process started at another time."""
        return self._hello is not None and hello.start_ticks != self._hello.start_ticks

    @staticmethod
    def _link_failed(collector: RemoteCollector) -> bool:
        """ssh's own failure (255) or ssh killed by a signal not ours: the link, not the
        collector, ended the stream."""
        code = collector.proc.wait()
        return code == SSH_FAILED or code < 0


def gather(target: RemoteTarget, options: CollectorOptions, sudo: bool = False) -> Timeline:
    """`snapshot ssh://...`: everything one remote collection saw (no reconnection: a short
    headless run that loses its link is reported as failed)."""
    timeline = Timeline()
    session = RemoteSession(target, options, sudo=sudo, reconnect=False)
    try:
        for sample in session.samples():
            timeline.add(sample)
    finally:
        session.stop()
    if timeline.hello is None:
        raise CollectorFailed(session.last_error or "the remote collector sent nothing")
    return timeline
