"""A small, bounded, loopback-only load generator for the demo server.

lifescope needs traffic to show anything, and a demo needs traffic that is steady (fixed rate, so a
stall shows up as a queue rather than as a lull) and mixed (so the healthy routes contrast with the
pathological ones). It is bounded in every dimension — rate, concurrency, duration, request count —
and refuses any non-loopback target, because a load generator is one typo away from being a
nuisance to someone else's server.

``run_load`` is the in-process API for benchmarks; ``python -m lifescope.demo.load`` wraps it and
prints one ``key=value`` summary line that ``children.LoadGen`` parses.

Besides the steady traffic, the child runs *modes* that misbehave the way real clients do, switched
at run time (``lifescope.demo.toggles.LOAD_MODES``): ``slow_readers`` (clients that read their
responses a few bytes at a time, so responses sit in the server's send queue: layer 5), ``flood``
(idle keep-alive connections held open: layer 6) and ``churn`` (new connections, one request each:
what an accept stall needs in order to show, layer 1). The child prints ``READY <port>`` first; on
that loopback port it serves the same control protocol as the demo server
(``GET /_lifescope/toggles``, ``POST /_lifescope/toggles/NAME?on=1|0|value=N``).

Why one file of ~720 lines: it is a program the demo and the tests start as
``python -m lifescope.demo.load`` under whatever interpreter runs the target (3.8 and up), and
its steady load, its misbehaving-client modes and its control server share one event loop and
one set of counters.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import math
import resource
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from lifescope.demo.children import check_loopback_url
from lifescope.demo.control import control_refusal
from lifescope.demo.toggles import CONTROL_PATH, LOAD_MODES
from lifescope.lifecycle import arm_parent_death

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
            key, sep, number = part.rpartition("=")
            if not sep or not key:
                raise ValueError(f"mix entry {part!r} is not NAME=WEIGHT")
            try:
                items.append((key.strip(), float(number)))
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


# ------------------------------------------------------------------------------ misbehaving clients

SLOW_READER_RCVBUF = 4096
"""Set before connect, so the window the server sees (and its scale) is tiny from the start."""
SLOW_READ_BYTES = 256
SLOW_READ_INTERVAL_S = 0.1
SLOW_READER_PATH = "/bigjson?n=2000"
"""About 280 KB: far more than the server's send buffer plus our window, so most of it waits in
the server's kernel (and aiohttp's transport) for minutes at 2.5 KB/s."""
FLOOD_PATH = "/health"
"""One real request per flood connection, so it is a keep-alive connection, not a bare socket."""
FLOOD_CONNECTS_PER_TICK = 50  # per 0.1 s: a flood of 300 is open in under a second, no SYN storm
CHURN_PATH = "/fast"
CHURN_MAX_INFLIGHT = 256
"""Above a default backlog (128), so an accept stall both fills the queue and overflows it."""
CONNECT_TIMEOUT_S = 10.0
CHURN_TIMEOUT_S = 15.0
RETRY_S = 1.0  # after a failed connection, before the next attempt: never a hot loop
FD_RESERVE = 128  # descriptors kept for the steady traffic, the control server and Python


def _fd_room() -> int:
    """How many connections a flood may hold without exhausting our own descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    slow_max = int(LOAD_MODES["slow_readers"].maximum)
    return max(0, soft - FD_RESERVE - CHURN_MAX_INFLIGHT - slow_max)


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 response with a Content-Length body (all the demo server sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return head + await reader.readexactly(length)


class Modes:
    """The load generator's live modes: tasks opened and closed as their values change.

    Everything runs on the load generator's event loop; ``set`` only adjusts targets and
    starts or cancels tasks, so a control request never waits on the network.
    """

    def __init__(self, url: str) -> None:
        check_loopback_url(url)
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError("load modes speak plain HTTP; use an http:// URL")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._netloc = parts.netloc
        self.values: dict[str, float] = {name: 0.0 for name in LOAD_MODES}
        self._slow: list[asyncio.Task[None]] = []
        self._flood: set[asyncio.Task[None]] = set()
        self._flood_supervisor: asyncio.Task[None] | None = None
        self._churn_supervisor: asyncio.Task[None] | None = None
        self._churn: set[asyncio.Task[None]] = set()
        self.slow_open = 0
        self.slow_bytes = 0
        self.flood_open = 0
        self.churn_done = 0
        self.churn_failed = 0

    # ---- control

    def snapshot(self) -> dict[str, object]:
        toggles = {name: LOAD_MODES[name].render(v) for name, v in self.values.items()}
        return {
            "toggles": toggles,
            "status": {
                "slow_readers_open": self.slow_open,
                "slow_bytes_read": self.slow_bytes,
                "flood_open": self.flood_open,
                "flood_tasks": len(self._flood),
                "churn_inflight": len(self._churn),
                "churn_done": self.churn_done,
                "churn_failed": self.churn_failed,
            },
        }

    def set(self, name: str, value: float) -> None:
        """Change one mode now; ValueError if it would exceed what this process can hold."""
        loop = asyncio.get_running_loop()
        if name == "flood" and value > _fd_room():
            raise ValueError(f"flood: at most {_fd_room()} connections with this fd limit")
        self.values[name] = value
        if name == "slow_readers":
            target = int(value)
            while len(self._slow) < target:
                self._slow.append(loop.create_task(self._slow_reader()))
            while len(self._slow) > target:
                self._slow.pop().cancel()
        elif name == "flood":
            if value > 0 and (self._flood_supervisor is None or self._flood_supervisor.done()):
                self._flood_supervisor = loop.create_task(self._supervise_flood())
        elif (
            name == "churn"
            and value > 0
            and (self._churn_supervisor is None or self._churn_supervisor.done())
        ):
            self._churn_supervisor = loop.create_task(self._supervise_churn())

    async def close(self) -> None:
        tasks = [*self._slow, *self._flood, *self._churn]
        tasks += [t for t in (self._flood_supervisor, self._churn_supervisor) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._slow.clear()

    # ---- helpers

    def _request(self, path: str, close: bool = False) -> bytes:
        connection = "close" if close else "keep-alive"
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self._netloc}\r\nUser-Agent: lifescope-demo-load\r\n"
            f"Connection: {connection}\r\n\r\n"
        ).encode("ascii")

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
        )

    # ---- slow readers (layer 5)

    async def _slow_reader(self) -> None:
        """A client on a bad network: asks for a large response, then reads it a few bytes per
        100 ms through a 4 KB window. Raw socket, not a StreamReader: asyncio's transport would
        read ahead eagerly into user space and hide the slowness from the server's kernel."""
        loop = asyncio.get_running_loop()
        while True:
            sock: socket.socket | None = None
            connected = False
            try:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                family, _, _, _, address = infos[0]
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READER_RCVBUF)
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT_S)
                connected = True
                self.slow_open += 1
                while True:
                    await loop.sock_sendall(sock, self._request(SLOW_READER_PATH))
                    await self._read_slowly(sock)
            except (OSError, EOFError, ValueError, asyncio.TimeoutError):
                pass
            finally:
                if connected:
                    self.slow_open -= 1
                if sock is not None:
                    sock.close()
            await asyncio.sleep(RETRY_S)

    async def _read_slowly(self, sock: socket.socket) -> None:
        """Read one response at SLOW_READ_BYTES per SLOW_READ_INTERVAL_S; EOFError if closed."""
        loop = asyncio.get_running_loop()
        buffered = b""
        remaining: int | None = None
        while remaining is None or remaining > 0:
            await asyncio.sleep(SLOW_READ_INTERVAL_S)
            chunk = await loop.sock_recv(sock, SLOW_READ_BYTES)
            if not chunk:
                raise EOFError
            self.slow_bytes += len(chunk)
            if remaining is None:
                buffered += chunk
                head, sep, body = buffered.partition(b"\r\n\r\n")
                if not sep:
                    if len(buffered) > 65536:
                        raise ValueError("response head too long")
                    continue
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value.strip())
                remaining = length - len(body)
                buffered = b""
            else:
                remaining -= len(chunk)

    # ---- flood (layer 6)

    async def _supervise_flood(self) -> None:
        """Keep the number of flood connections at the target, opening at a bounded pace."""
        loop = asyncio.get_running_loop()
        while True:
            target = int(self.values["flood"])
            if target <= 0:
                for task in list(self._flood):
                    task.cancel()
                if not self._flood:
                    return  # no await since the check: a set() cannot have slipped in
                await asyncio.sleep(0.1)
                continue
            missing = target - len(self._flood)
            for _ in range(max(0, min(missing, FLOOD_CONNECTS_PER_TICK))):
                task = loop.create_task(self._flood_connection())
                self._flood.add(task)
                task.add_done_callback(self._flood.discard)
            for task in list(self._flood)[: max(0, -missing)]:
                task.cancel()
            await asyncio.sleep(0.1)

    async def _flood_connection(self) -> None:
        """One idle keep-alive client: a request, its response, then silence until the server
        gives up on it (aiohttp's keep-alive timeout); the supervisor then opens another."""
        held = False
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await self._open()
            writer.write(self._request(FLOOD_PATH))
            await _read_response(reader)
            held = True
            self.flood_open += 1
            await reader.read()  # b"" when the server closes it
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError, ValueError):  # fmt: skip
            await asyncio.sleep(RETRY_S)
        finally:
            if held:
                self.flood_open -= 1
            if writer is not None:
                writer.close()

    # ---- churn (new connections: what makes an accept stall visible, layer 1)

    async def _supervise_churn(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            rate = self.values["churn"]
            if rate <= 0:
                return  # connections in flight finish (or time out) on their own
            if len(self._churn) < CHURN_MAX_INFLIGHT:
                task = loop.create_task(self._churn_once())
                self._churn.add(task)
                task.add_done_callback(self._churn.discard)
            await asyncio.sleep(1.0 / rate)

    async def _churn_once(self) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await self._open()
            writer.write(self._request(CHURN_PATH, close=True))
            await asyncio.wait_for(reader.read(), CHURN_TIMEOUT_S)  # read to EOF
            self.churn_done += 1
        except (OSError, asyncio.TimeoutError):
            self.churn_failed += 1
        finally:
            if writer is not None:
                writer.close()


# -------------------------------------------------------------------------------- control server


MODES_KEY: web.AppKey[Modes] = web.AppKey("modes", Modes)


async def _handle_state(request: web.Request) -> web.Response:
    refusal = control_refusal(request)
    if refusal is not None:
        return refusal
    return web.json_response(request.app[MODES_KEY].snapshot())


async def _handle_set(request: web.Request) -> web.Response:
    refusal = control_refusal(request)
    if refusal is not None:
        return refusal
    name = request.match_info["name"]
    spec = LOAD_MODES.get(name)
    if spec is None:
        known = sorted(LOAD_MODES)
        return web.json_response({"error": f"no mode {name!r}", "known": known}, status=404)
    modes = request.app[MODES_KEY]
    try:
        modes.set(name, spec.parse(request.query.get("on"), request.query.get("value")))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(modes.snapshot())


async def start_control(modes: Modes, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve the control protocol on 127.0.0.1:port; returns the runner and the bound port."""
    app = web.Application()
    app[MODES_KEY] = modes
    app.router.add_get(CONTROL_PATH, _handle_state)
    app.router.add_post(CONTROL_PATH + "/{name}", _handle_set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
    return runner, bound


# ------------------------------------------------------------------------------------------ main


def _mode_arg(text: str) -> tuple[str, float]:
    name, sep, raw = text.partition("=")
    spec = LOAD_MODES.get(name.strip())
    if not sep or spec is None:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME one of {', '.join(LOAD_MODES)}"
        )
    try:
        return spec.name, spec.parse(None, raw.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lifescope.demo.load",
        description="Bounded, loopback-only HTTP load for the lifescope demo server. Prints "
        "'READY <control-port>' first, then a summary line when it ends.",
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
    parser.add_argument(
        "--mode",
        type=_mode_arg,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"initial value of a live mode (repeatable): {', '.join(LOAD_MODES)}",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=0,
        metavar="PORT",
        help="loopback port of the control endpoint (default 0: any free one)",
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
    if not 0 <= args.control_port <= 65535:
        parser.error("--control-port must be in [0, 65535]")
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
    modes = Modes(args.url)
    runner, port = await start_control(modes, args.control_port)
    print(f"READY {port}", flush=True)
    try:
        for name, value in args.mode:
            modes.set(name, value)
        return await run_load(
            args.url,
            rate=args.rate,
            concurrency=args.concurrency,
            duration=args.duration,
            max_requests=args.max_requests,
            mix=args.mix,
            stop=stop,
        )
    finally:
        await modes.close()
        with contextlib.suppress(Exception):
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_loopback_url(args.url)
        Modes(args.url)  # refuses an https URL before anything starts
    except ValueError as exc:
        print(f"lifescope.demo.load: {exc}", file=sys.stderr)
        return 2
    arm_parent_death()
    result = asyncio.run(_main_async(args))
    print(result.summary_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
