"""A small, bounded, loopback-only load generator for the demo server.

lifescope needs traffic to show anything, and a demo needs traffic that is steady (fixed rate, so a
stall shows up as a queue rather than as a lull) and mixed (so the healthy routes contrast with the
pathological ones). It is bounded in every dimension — rate, concurrency, duration, request count —
and refuses any non-loopback target, because a load generator is one typo away from being a
nuisance to someone else's server.

``run_load`` is the in-process API for benchmarks; ``python -m lifescope.demo.load`` wraps it and
prints one ``key=value`` summary line that ``children.LoadGen`` parses.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import math
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from lifescope.demo.children import arm_parent_death_signal, check_loopback_url

DEFAULT_RATE = 50.0
DEFAULT_CONCURRENCY = 8
DEFAULT_DURATION = 60.0
DEFAULT_MAX_REQUESTS = 1_000_000
DEFAULT_MIX = "fast=6,db=2,sleep=1,cpu=1"
"""Healthy-looking traffic; add ``block=1`` or ``bigjson=1`` to inject the pathologies."""

REQUEST_TIMEOUT_S = 30.0
DRAIN_GRACE_S = 5.0  # after the duration ends: let in-flight requests finish, up to this long
STOP_GRACE_S = 1.0  # after SIGTERM/stop: shorter, children.stop() escalates to SIGKILL at 3 s


@dataclass(frozen=True)
class LoadResult:
    """What a run did. Latencies cover requests that got a response (any status)."""

    requests: int  # completed: responses received plus transport failures
    errors: int  # transport failures, timeouts and HTTP statuses >= 400
    elapsed_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    statuses: tuple[tuple[int, int], ...]  # (status, count), sorted by status
    error_kinds: tuple[tuple[str, int], ...]  # (exception name or "http_NNN", count)
    stopped_by: str  # "duration", "max_requests" or "stop"

    def summary_line(self) -> str:
        return (
            f"requests={self.requests} errors={self.errors} rps={self.rps:.1f} "
            f"p50_ms={self.p50_ms:.2f} p99_ms={self.p99_ms:.2f} max_ms={self.max_ms:.2f} "
            f"elapsed_s={self.elapsed_s:.2f} stopped_by={self.stopped_by}"
        )


def parse_mix(spec: str | Mapping[str, float]) -> list[tuple[str, float]]:
    """``"fast=5,db=2,/block?ms=100=1"`` -> ``[("/fast", 5), ("/db", 2), ("/block?ms=100", 1)]``.

    A bare name is a demo route; a key starting with ``/`` is a path (query allowed) taken as is.
    The weight is after the *last* ``=``, so paths may carry query strings. Zero weights drop out.
    """
    items: list[tuple[str, float]]
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, weight = part.rpartition("=")
            if not sep or not key:
                raise ValueError(f"mix entry {part!r} is not NAME=WEIGHT")
            try:
                items.append((key.strip(), float(weight)))
            except ValueError:
                raise ValueError(f"mix weight in {part!r} is not a number") from None
    else:
        items = [(k, float(v)) for k, v in spec.items()]
    out: list[tuple[str, float]] = []
    for key, weight in items:
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"mix weight for {key!r} must be a finite number >= 0")
        if weight == 0:
            continue
        path = key if key.startswith("/") else "/" + key
        if any(c.isspace() for c in path) or "#" in path:
            raise ValueError(f"mix path {path!r} is not a valid path")
        out.append((path, weight))
    if not out:
        raise ValueError("mix has no route with a positive weight")
    return out


class _SmoothWeightedCycle:
    """nginx's smooth weighted round-robin: deterministic and evenly interleaved.

    Deterministic so two benchmark runs send the same sequence; interleaved so ``block=1`` among
    ``fast=9`` lands every tenth request instead of in random clumps.
    """

    def __init__(self, weighted: list[tuple[str, float]]) -> None:
        self._items = weighted
        self._current = [0.0] * len(weighted)
        self._total = sum(w for _, w in weighted)

    def next(self) -> str:
        best = 0
        for i, (_, weight) in enumerate(self._items):
            self._current[i] += weight
            if self._current[i] > self._current[best]:
                best = i
        self._current[best] -= self._total
        return self._items[best][0]


def _targets(url: str, mix: str | Mapping[str, float] | None) -> list[tuple[str, float]]:
    """Full URLs with weights. Without a mix, a URL with a path is hit as is (any loopback app)."""
    parts = urlsplit(url)
    if mix is None:
        if parts.path not in ("", "/") or parts.query:
            return [(url, 1.0)]
        mix = DEFAULT_MIX
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return [(base + path, weight) for path, weight in parse_mix(mix)]


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; 0.0 for no data (a summary line must always be printable)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _Stats:
    def __init__(self) -> None:
        self.latencies_ms = array.array("d")  # 8 bytes a request; bounded by max_requests
        self.statuses: Counter[int] = Counter()
        self.error_kinds: Counter[str] = Counter()
        self.failures = 0

    def result(self, elapsed_s: float, stopped_by: str) -> LoadResult:
        lat = sorted(self.latencies_ms)
        requests = len(lat) + self.failures
        http_errors = sum(n for status, n in self.statuses.items() if status >= 400)
        return LoadResult(
            requests=requests,
            errors=self.failures + http_errors,
            elapsed_s=elapsed_s,
            rps=requests / elapsed_s if elapsed_s > 0 else 0.0,
            p50_ms=_percentile(lat, 50),
            p90_ms=_percentile(lat, 90),
            p99_ms=_percentile(lat, 99),
            max_ms=lat[-1] if lat else 0.0,
            mean_ms=sum(lat) / len(lat) if lat else 0.0,
            statuses=tuple(sorted(self.statuses.items())),
            error_kinds=tuple(sorted(self.error_kinds.items())),
            stopped_by=stopped_by,
        )


async def _one_request(session: aiohttp.ClientSession, url: str, stats: _Stats) -> None:
    started = time.perf_counter()
    try:
        async with session.get(url) as resp:
            await resp.read()  # the latency a client sees includes the body
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        stats.failures += 1
        stats.error_kinds[type(exc).__name__] += 1
        return
    stats.latencies_ms.append((time.perf_counter() - started) * 1000.0)
    stats.statuses[status] += 1
    if status >= 400:
        stats.error_kinds[f"http_{status}"] += 1


async def run_load(
    url: str,
    rate: float = DEFAULT_RATE,
    concurrency: int = DEFAULT_CONCURRENCY,
    duration: float = DEFAULT_DURATION,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    mix: str | Mapping[str, float] | None = None,
    *,
    stop: asyncio.Event | None = None,
    request_timeout: float = REQUEST_TIMEOUT_S,
) -> LoadResult:
    """Send GETs to a loopback ``url`` at ``rate`` req/s with at most ``concurrency`` in flight.

    ``rate <= 0`` means no pacing (as fast as the concurrency cap allows); ``duration <= 0`` means
    until ``stop`` is set or ``max_requests`` have been sent. Pacing is open-loop but does not
    "catch up": if the server falls behind and the cap is hit, the schedule slips instead of
    bursting later, so a stall in the server shows up as a stall, not as a spike after it.
    Raises ValueError for a non-loopback URL or a bad argument.
    """
    check_loopback_url(url)
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if max_requests < 1:
        raise ValueError("max_requests must be >= 1")
    if not math.isfinite(rate) or not math.isfinite(duration):
        raise ValueError("rate and duration must be finite")
    cycle = _SmoothWeightedCycle(_targets(url, mix))
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    stats = _Stats()
    interval = 1.0 / rate if rate > 0 else 0.0
    inflight: set[asyncio.Task[None]] = set()
    stop_waiter = loop.create_task(stop.wait())
    stopped_by = "duration"

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=request_timeout)
    started = loop.time()
    deadline = started + duration if duration > 0 else math.inf
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            sent = 0
            next_at = started
            while True:
                if stop.is_set():
                    stopped_by = "stop"
                    break
                if sent >= max_requests:
                    stopped_by = "max_requests"
                    break
                now = loop.time()
                if now >= deadline:
                    break
                if len(inflight) >= concurrency:
                    await asyncio.wait(
                        {*inflight, stop_waiter},
                        timeout=min(deadline - now, 3600.0),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                if interval:
                    if next_at > now:
                        await asyncio.wait({stop_waiter}, timeout=min(next_at, deadline) - now)
                        continue
                    next_at = max(next_at + interval, now - interval)
                task = loop.create_task(_one_request(session, cycle.next(), stats))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                sent += 1
            # Let in-flight requests finish (they are part of the run), within a grace period
            # that a stop() arriving mid-drain shortens.
            drain_until = loop.time() + (STOP_GRACE_S if stop.is_set() else DRAIN_GRACE_S)
            while inflight:
                if stop.is_set():
                    drain_until = min(drain_until, loop.time() + STOP_GRACE_S)
                remaining = drain_until - loop.time()
                if remaining <= 0:
                    break
                waiters = set(inflight) if stop.is_set() else {*inflight, stop_waiter}
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
            for task in list(inflight):
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
    return stats.result(loop.time() - started, stopped_by)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lifescope.demo.load",
        description="Bounded, loopback-only HTTP load for the lifescope demo server.",
    )
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="requests/s; 0 = unpaced (default 50)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"max requests in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULT_DURATION,
        help="seconds; 0 = until stopped (default 60)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=DEFAULT_MAX_REQUESTS,
        help=f"stop after this many requests (default {DEFAULT_MAX_REQUESTS})",
    )
    parser.add_argument(
        "--mix",
        default=None,
        help=f"route weights, e.g. fast=5,db=2,block=1 or /block?ms=100=1 (default {DEFAULT_MIX})",
    )
    args = parser.parse_args(argv)
    if not math.isfinite(args.rate) or args.rate < 0:
        parser.error("--rate must be a finite number >= 0")
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if not math.isfinite(args.duration) or args.duration < 0:
        parser.error("--duration must be a finite number >= 0")
    if args.max_requests < 1:
        parser.error("--max-requests must be >= 1")
    if args.mix is not None:
        try:
            parse_mix(args.mix)
        except ValueError as exc:
            parser.error(f"--mix: {exc}")
    return args


async def _main_async(args: argparse.Namespace) -> LoadResult:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return await run_load(
        args.url,
        rate=args.rate,
        concurrency=args.concurrency,
        duration=args.duration,
        max_requests=args.max_requests,
        mix=args.mix,
        stop=stop,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_loopback_url(args.url)
    except ValueError as exc:
        print(f"lifescope.demo.load: {exc}", file=sys.stderr)
        return 2
    arm_parent_death_signal()
    result = asyncio.run(_main_async(args))
    print(result.summary_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
