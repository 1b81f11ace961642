"""The collector process: runs the probes against one target and writes the sample stream.

It is a separate process from the UI because a Textual repaint holds the UI interpreter's GIL
for 30–45 ms (measured here), which would tear holes in kHz sampling done in the same
interpreter. The collector only does cheap reads and writes a compact stream (`stream.py`)
to stdout or a file; `attach` reads it live, `snapshot` reads it headless, and a saved
stream is a recording.

Run directly: `python -m lifescope.collector PID [--seconds N] [--output FILE]`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol

from lifescope import __version__, lifecycle, outputs, redact, stream
from lifescope.options import DEFAULTS, PROBES, CollectorOptions
from lifescope.probes.base import Emit, Probe
from lifescope.probes.budget import LEAN_SCALE, Budget
from lifescope.probes.family import Family
from lifescope.probes.gil import NATIVE_STACKS, GilProbe
from lifescope.probes.packets import PacketsProbe
from lifescope.probes.pyspy import DumpProbe, StacksProbe
from lifescope.probes.sockets import SocketsProbe
from lifescope.probes.tasks import TasksProbe
from lifescope.probes.threads import ThreadsProbe
from lifescope.probes.workers import WorkersProbe
from lifescope.samples import CollectorCost, Hello, Sample, TargetGone
from lifescope.target import Target, TargetError, parse_pid, python_children, resolve

if TYPE_CHECKING:
    from lifescope.prometheus import MetricsExporter

QUEUE_MAX = 20_000
"""Samples waiting for the writer; ~10 s of every probe at defaults."""
FLUSH_EVERY_S = 0.1
"""Stream latency bound; also what a SIGKILLed recording can lose at most."""


THREADS_ON_GIL = os.environ.get("LIFESCOPE_THREADS_ON_GIL", "1") != "0"
"""``LIFESCOPE_THREADS_ON_GIL=0``: the threads probe samples in its own loop (to compare)."""


def build_probes(
    target: Target,
    emit: Emit,
    names: Sequence[str],
    http_lines: bool = False,
    stacks_run: float = 1.0,
) -> list[Probe]:
    family = Family(target)  # a pre-fork master's workers are read as part of it
    factories = {
        "gil": lambda: GilProbe(target, emit),
        "threads": lambda: ThreadsProbe(target, emit, family=family),
        "stacks": lambda: StacksProbe(target, emit, family=family, run_s=stacks_run),
        "dump": lambda: DumpProbe(target, emit),
        "sockets": lambda: SocketsProbe(target, emit, family=family),
        "packets": lambda: PacketsProbe(target, emit, http_lines=http_lines),
        "tasks": lambda: TasksProbe(target, emit, family=family),
        "workers": lambda: WorkersProbe(target, emit, family=family),
    }
    probes = {name: factories[name]() for name in names}
    gil, stacks, threads = probes.get("gil"), probes.get("stacks"), probes.get("threads")
    # The GIL loop wakes 2,000 times a second; the walker's stacks and the threads probe's
    # /proc reads ride those wake-ups (issue 17). It reads one process, so a pre-fork
    # master's workers keep py-spy (--subprocesses) and the threads probe's own loop.
    if isinstance(gil, GilProbe) and family.workers() == ():
        if NATIVE_STACKS and isinstance(stacks, StacksProbe):
            stacks.ride.wanted = True
            gil.stacks = stacks
        if THREADS_ON_GIL and isinstance(threads, ThreadsProbe):
            threads.ride.wanted = True
            gil.threads = threads
    dump = probes.get("dump")
    if isinstance(dump, DumpProbe) and "gil" in probes and "stacks" in probes:
        dump.covered_by = (probes["gil"], probes["stacks"])
    return list(probes.values())


def _own_cpu_seconds() -> float:
    """CPU of this process plus reaped children (py-spy runs as short-lived children)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Collector:
    """Owns the probes and the one writer; everything else only enqueues samples."""

    def __init__(
        self,
        target: Target,
        out: Sink,
        options: CollectorOptions = DEFAULTS,
        exporter: MetricsExporter | None = None,
    ) -> None:
        self.target = target
        self.out = out
        self.options = options
        self.exporter = exporter
        self._queue: queue.Queue[Sample] = queue.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0
        self.probes = build_probes(
            target, self._offer, options.probes, options.http_lines, options.stacks_run
        )
        self.budget = Budget(
            enabled=not options.full_rate,
            pid=target.pid,
            ceiling=LEAN_SCALE if options.lean else 1.0,
        )
        for probe in self.probes:
            probe.budget = self.budget
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def _offer(self, sample: Sample) -> None:
        """Probes hand samples here. If the reader stalls (a slow UI, a full disk), the queue
        fills and new samples are dropped and counted — memory stays bounded and the probes
        never block on the reader."""
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            self.dropped += 1

    def run(self, seconds: float | None = None) -> int:
        """Stream until stopped, `seconds` pass, the target exits or the reader goes away."""
        started = time.monotonic()
        self._write(stream.header_line())
        self._send(self._hello(started))
        for probe in self.probes:
            probe.start()
        next_flush = next_cost = time.monotonic()
        gone: str | None = None
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if seconds is not None and now - started >= seconds:
                    break
                # Sleep until the next flush and then write everything queued: samples were
                # only flushed every FLUSH_EVERY_S anyway, and waking this thread for each one
                # (~120 a second at defaults) cost more than encoding them.
                self._stop.wait(max(0.0, min(next_flush, next_cost) - now))
                self._drain()
                now = time.monotonic()
                if now >= next_cost:
                    next_cost = now + 1.0
                    self.budget.update(now)
                    self._send(self._cost(now))
                    gone = self.target.gone_reason()
                    if gone is not None:
                        break
                if now >= next_flush:
                    self.out.flush()
                    next_flush = now + FLUSH_EVERY_S
        except BrokenPipeError:
            return 0  # the UI closed the stream: a normal way to end
        finally:
            for probe in self.probes:
                probe.stop()
            for probe in self.probes:
                probe.join(timeout=3)
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._drain()
            now = time.monotonic()
            self._send(self._cost(now))
            if gone:
                self._send(TargetGone(now, gone))
            self.out.flush()
        return 0

    def _drain(self) -> None:
        """Send every sample queued so far."""
        while True:
            try:
                sample = self._queue.get_nowait()
            except queue.Empty:
                return
            self._send(sample)

    def _write(self, line: bytes) -> None:
        self.out.write(line)

    def _send(self, sample: Sample) -> None:
        """Every sample goes to the stream and, when serving metrics, to their timeline."""
        self._write(stream.encode(sample))
        if self.exporter is not None:
            self.exporter.add(sample)

    def _hello(self, started: float) -> Hello:
        t = self.target
        return Hello(
            schema=stream.SCHEMA,
            pid=t.pid,
            start_ticks=t.start_ticks,
            command=t.command if self.options.keep_command_line else redact.command_line(t.argv),
            python=t.python,
            executable=t.executable,
            mono_at_start=started,
            wall_at_start=time.time(),
            collector_pid=os.getpid(),
            clock_ticks=os.sysconf("SC_CLK_TCK"),
            lifescope_version=__version__,
            workers=tuple(python_children(t.pid)),
        )

    def _cost(self, now: float) -> CollectorCost:
        return CollectorCost(
            t=now,
            cpu_s=_own_cpu_seconds(),
            rss_bytes=_rss_bytes(),
            samples=tuple((p.probe_name, p.samples) for p in self.probes),
            errors=tuple((p.probe_name, p.errors) for p in self.probes),
            dropped=self.dropped,
            rate_scale=self.budget.scale,
            machine_idle=_round4(self.budget.idle_share),
            target_cpu_wait=_round4(self.budget.waiting_share),
            lean=self.options.lean,
        )


class Sink(Protocol):
    """Where the stream is written: a file, a pipe, several of them (`Tee`), or nowhere."""

    def write(self, data: bytes) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class Tee:
    """Write the stream to several files at once: the UI's pipe and a recording.

    A recording must survive the UI (or the whole session) dying: it is flushed on the
    same 100 ms cadence as the pipe, so a SIGKILL loses at most the last flush interval.
    """

    def __init__(self, *outs: Sink) -> None:
        self.outs = outs

    def write(self, data: bytes) -> int:
        for out in self.outs:
            out.write(data)
        return len(data)

    def flush(self) -> None:
        for out in self.outs:
            out.flush()

    def close(self) -> None:
        for out in self.outs:
            _close(out)


def _close(out: Sink) -> None:
    """Close, and for a gzip recording also the file beneath it (GzipFile leaves it open)."""
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
        out.close()
        inner = getattr(out, "fileobj", None)
        if inner is not None:
            inner.close()


def open_recording(path: str, force: bool = False) -> BinaryIO:
    """A recording: the stream, gzip-compressed, in a file only lifescope created (mode 0600;
    see `outputs`: it describes a production process and lifescope often runs as root).

    gzip because the stream compresses ~10× (measured: 1.75 MB/min raw, 180 KB/min gzipped
    for the demo server with every probe on). `GzipFile.flush()` is a zlib sync flush, so
    each 100 ms flush leaves a prefix any gzip reader can decode: a recorder killed with
    SIGKILL loses at most the last 100 ms.
    """
    raw = outputs.open_stream(path, force)
    return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)  # type: ignore[return-value]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lifescope.collector",
        description="Sample a Python process and write lifescope's sample stream.",
    )
    parser.add_argument("pid")
    CollectorOptions.add_arguments(parser, [f.name for f in dataclasses.fields(CollectorOptions)])
    parser.add_argument("--version", action="version", version=f"lifescope {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        target = resolve(parse_pid(args.pid))
    except TargetError as exc:
        print(exc.line(), file=sys.stderr)
        return exc.exit_code
    return run(target, CollectorOptions.from_namespace(args))


def run(target: Target, options: CollectorOptions) -> int:
    """Collect from `target` until done; the in-process entry point (`lifescope record`)."""
    unknown = options.unknown_probes()
    if unknown:
        print(
            f"lifescope: unknown probe(s) {', '.join(unknown)} — choose from {', '.join(PROBES)}",
            file=sys.stderr,
        )
        return 2
    exporter = None
    if options.prometheus is not None:
        from lifescope.prometheus import AddressError, MetricsExporter, check_host, parse_address

        try:
            host, port = parse_address(options.prometheus)
            check_host(host, options.prometheus_allow_remote)
            exporter = MetricsExporter(window_s=options.prometheus_window)
        except ValueError as exc:  # AddressError is a ValueError; so is a bad window
            print(f"lifescope: {exc}", file=sys.stderr)
            return 2
        try:
            bound = exporter.start(host, port, allow_remote=options.prometheus_allow_remote)
        except AddressError as exc:
            print(f"lifescope: {exc}", file=sys.stderr)
            return 1
        print(f"lifescope: metrics on http://{bound[0]}:{bound[1]}/metrics", file=sys.stderr,
              flush=True)  # fmt: skip
    # Started by a UI (attach, snapshot): die with it, even if it is SIGKILLed. Run on its own
    # (`record`, or by hand under nohup) it keeps running when its shell goes away.
    lifecycle.arm_parent_death()
    outs: list[Sink] = []
    try:
        if options.output is None and exporter is not None:
            outs.append(_Discard())  # metrics only: no stream to keep
        elif options.output in (None, outputs.STDOUT):
            outs.append(sys.stdout.buffer)
        else:
            outs.append(open_recording(options.output, options.force))
        if options.record:
            outs.append(open_recording(options.record, options.force))
        if options.record_fd is not None:
            raw = os.fdopen(options.record_fd, "wb")
            outs.append(gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6))
    except outputs.OutputError as exc:
        print(f"lifescope: {exc}", file=sys.stderr)
        for out in outs:
            _close(out)
        if exporter is not None:
            exporter.stop()
        return 1
    out = Tee(*outs) if len(outs) > 1 else outs[0]
    collector = Collector(target, out, options, exporter=exporter)
    signal.signal(signal.SIGTERM, collector.stop)
    signal.signal(signal.SIGINT, collector.stop)
    signal.signal(signal.SIGHUP, collector.stop)
    try:
        return collector.run(options.seconds)
    finally:
        _close(out)
        if exporter is not None:
            exporter.stop()


class _Discard:
    """A stream nobody keeps (`record --prometheus` without -o): no file is opened at all,
    not even /dev/null."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
