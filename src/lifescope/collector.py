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
import gzip
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from lifescope import __version__, lifecycle, stream
from lifescope.probes.base import Emit, Probe
from lifescope.probes.budget import Budget
from lifescope.probes.gil import GilProbe
from lifescope.probes.packets import PacketsProbe
from lifescope.probes.pyspy import DumpProbe, StacksProbe
from lifescope.probes.sockets import SocketsProbe
from lifescope.probes.tasks import TasksProbe
from lifescope.probes.threads import ThreadsProbe
from lifescope.probes.workers import WorkersProbe
from lifescope.samples import CollectorCost, Hello, TargetGone
from lifescope.target import Target, TargetError, parse_pid, python_children, resolve

if TYPE_CHECKING:
    from lifescope.prometheus import MetricsExporter

PROBES = ("gil", "threads", "stacks", "dump", "sockets", "packets", "tasks", "workers")
QUEUE_MAX = 20_000
"""Samples waiting for the writer; ~10 s of every probe at defaults."""
FLUSH_EVERY_S = 0.1
"""Stream latency bound; also what a SIGKILLed recording can lose at most."""


def build_probes(
    target: Target, emit: Emit, names: Sequence[str], http_lines: bool = False
) -> list[Probe]:
    factories = {
        "gil": lambda: GilProbe(target, emit),
        "threads": lambda: ThreadsProbe(target, emit),
        "stacks": lambda: StacksProbe(target, emit),
        "dump": lambda: DumpProbe(target, emit),
        "sockets": lambda: SocketsProbe(target, emit),
        "packets": lambda: PacketsProbe(target, emit, http_lines=http_lines),
        "tasks": lambda: TasksProbe(target, emit),
        "workers": lambda: WorkersProbe(target, emit),
    }
    probes = {name: factories[name]() for name in names}
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
        out: BinaryIO,
        probes: Sequence[str] = PROBES,
        http_lines: bool = False,
        exporter: MetricsExporter | None = None,
        full_rate: bool = False,
    ) -> None:
        self.target = target
        self.out = out
        self.exporter = exporter
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0
        self.probes = build_probes(target, self._offer, probes, http_lines)
        self.budget = Budget(enabled=not full_rate, pid=target.pid)
        for probe in self.probes:
            probe.budget = self.budget
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def _offer(self, sample: object) -> None:
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
                try:
                    sample = self._queue.get(timeout=0.05)
                    self._send(sample)
                except queue.Empty:
                    pass
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
            while True:
                try:
                    self._send(self._queue.get_nowait())
                except queue.Empty:
                    break
            now = time.monotonic()
            self._send(self._cost(now))
            if gone:
                self._send(TargetGone(now, gone))
            self.out.flush()
        return 0

    def _write(self, line: bytes) -> None:
        self.out.write(line)

    def _send(self, sample: object) -> None:
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
            command=t.command,
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
        )


class Tee:
    """Write the stream to several files at once: the UI's pipe and a recording.

    A recording must survive the UI (or the whole session) dying: it is flushed on the
    same 100 ms cadence as the pipe, so a SIGKILL loses at most the last flush interval.
    """

    def __init__(self, *outs: BinaryIO) -> None:
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


def _close(out: BinaryIO) -> None:
    """Close, and for a gzip recording also the file beneath it (GzipFile leaves it open)."""
    with contextlib.suppress(BrokenPipeError, ValueError, OSError):
        out.close()
        inner = getattr(out, "fileobj", None)
        if inner is not None:
            inner.close()


def open_recording(path: str) -> BinaryIO:
    """A recording: the stream, gzip-compressed, created 0600 (it describes a production
    process; never group/world readable).

    gzip because the stream compresses ~10× (measured: 1.75 MB/min raw, 180 KB/min gzipped
    for the demo server with every probe on). `GzipFile.flush()` is a zlib sync flush, so
    each 100 ms flush leaves a prefix any gzip reader can decode: a recorder killed with
    SIGKILL loses at most the last 100 ms.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode under O_CREAT; fix it
    raw = os.fdopen(fd, "wb")
    return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lifescope.collector",
        description="Sample a Python process and write lifescope's sample stream.",
    )
    parser.add_argument("pid")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument(
        "--output",
        "-o",
        default=None,
        help="file to write, or - for stdout (default: stdout; with --prometheus, none)",
    )
    parser.add_argument("--record", default=None, help="also save the stream to this file")
    parser.add_argument(
        "--http-lines",
        action="store_true",
        help="keep the first line of HTTP/1.x requests and responses (opt-in)",
    )
    parser.add_argument("--probes", default=",".join(PROBES), help="comma-separated probe names")
    parser.add_argument(
        "--full-rate",
        action="store_true",
        help="never slow sampling down, even while the machine is saturated",
    )
    parser.add_argument(
        "--prometheus",
        metavar="HOST:PORT",
        default=None,
        help="serve the headline numbers as Prometheus metrics on HOST:PORT (loopback only "
        "unless --prometheus-allow-remote; PORT alone means 127.0.0.1:PORT)",
    )
    parser.add_argument(
        "--prometheus-allow-remote",
        action="store_true",
        help="allow --prometheus on a non-loopback address (the labels carry the command line)",
    )
    parser.add_argument(
        "--prometheus-window",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the window each scrape reports on (default 10)",
    )
    parser.add_argument("--version", action="version", version=f"lifescope {__version__}")
    args = parser.parse_args(argv)
    names = [n for n in args.probes.split(",") if n]
    unknown = sorted(set(names) - set(PROBES))
    if unknown:
        print(
            f"lifescope: unknown probe(s) {', '.join(unknown)} — choose from {', '.join(PROBES)}",
            file=sys.stderr,
        )
        return 2
    try:
        target = resolve(parse_pid(args.pid))
    except TargetError as exc:
        print(exc.line(), file=sys.stderr)
        return exc.exit_code
    exporter = None
    if args.prometheus is not None:
        from lifescope.prometheus import AddressError, MetricsExporter, check_host, parse_address

        try:
            host, port = parse_address(args.prometheus)
            check_host(host, args.prometheus_allow_remote)
            exporter = MetricsExporter(window_s=args.prometheus_window)
        except ValueError as exc:  # AddressError is a ValueError; so is a bad window
            print(f"lifescope: {exc}", file=sys.stderr)
            return 2
        try:
            bound = exporter.start(host, port, allow_remote=args.prometheus_allow_remote)
        except AddressError as exc:
            print(f"lifescope: {exc}", file=sys.stderr)
            return 1
        print(f"lifescope: metrics on http://{bound[0]}:{bound[1]}/metrics", file=sys.stderr,
              flush=True)  # fmt: skip
    # Started by a UI (attach, snapshot): die with it, even if it is SIGKILLed. Run on its own
    # (`record`, or by hand under nohup) it keeps running when its shell goes away.
    lifecycle.arm_parent_death()
    outs: list[BinaryIO] = []
    try:
        if args.output is None and exporter is not None:
            outs.append(open(os.devnull, "wb"))  # metrics only: no stream to keep
        elif args.output in (None, "-"):
            outs.append(sys.stdout.buffer)
        else:
            outs.append(open_recording(args.output))
        if args.record:
            outs.append(open_recording(args.record))
    except OSError as exc:
        print(f"lifescope: cannot write {exc.filename}: {exc.strerror} — choose a writable path",
              file=sys.stderr)  # fmt: skip
        if exporter is not None:
            exporter.stop()
        return 1
    out = Tee(*outs) if len(outs) > 1 else outs[0]
    collector = Collector(
        target,
        out,  # type: ignore[arg-type]
        names,
        http_lines=args.http_lines,
        exporter=exporter,
        full_rate=args.full_rate,
    )
    signal.signal(signal.SIGTERM, collector.stop)
    signal.signal(signal.SIGINT, collector.stop)
    signal.signal(signal.SIGHUP, collector.stop)
    try:
        return collector.run(args.seconds)
    finally:
        _close(out)
        if exporter is not None:
            exporter.stop()


if __name__ == "__main__":
    sys.exit(main())
