"""A deliberately misbehaving aiohttp server: the target lifescope is demonstrated and tested on.

Every route exists to make one layer of a request, or one concurrency model, visible from outside
the process: executor threads (``/db``), a stalled event loop (``/block``), CPU work on the loop
(``/cpu``), serialization in the write phase (``/bigjson``), slow middleware
(``--slow-middleware``) and GIL contention from a background thread (``--gil-hog``). The healthy
contrasts (``/fast``, ``/sleep``) are there so the pathologies have something to stand out against.

Live toggles (see ``lifescope.demo.toggles`` for the table and the protocol) make one layer
dominant at a time on stage, without a restart: ``GET /_lifescope/toggles`` reads them and
``POST /_lifescope/toggles/NAME?on=1|0`` or ``?value=N`` changes one — on the main port, and
on a second, control-only loopback port (the second number of the ``READY <port> <control-port>``
line) that keeps answering while the main listener is in an accept stall. The start-up flags
(``--slow-middleware``, ``--gil-hog``, ``--toggle NAME=VALUE``) only set their initial values.
The control endpoints answer loopback peers only, and refuse requests a browser page on another
origin could forge (a cross-site ``POST`` to localhost needs no CORS permission to be *sent*).

Handler names (``handle_block``, ``handle_db``, ...) are part of the interface: lifescope shows the
innermost application frame as "the guilty frame", so they have to read well on screen.

Kept importable on older interpreters (no 3.10-only syntax at runtime) because lifescope attaches to
targets running CPython 3.8-3.13 and the demo is the obvious thing to run under each of them.

Why one file of ~700 lines: it is one program, the target itself, run under every CPython from
3.8; its routes, the pathologies they switch and ``main`` are read together when a frame of it
shows up on screen as "the guilty frame" (``server.py:LINE``), so they stay in one module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import math
import random
import signal
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from lifescope.demo.children import is_loopback_host
from lifescope.demo.control import control_refusal
from lifescope.demo.toggles import BLOCK_LOOP_SLEEP_S, CONTROL_PATH, SERVER_TOGGLES
from lifescope.lifecycle import arm_parent_death

if TYPE_CHECKING:
    # Aliases only under TYPE_CHECKING: subscripting collections.abc at runtime needs 3.9+.
    from collections.abc import Awaitable, Callable, Sequence

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
    Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

# Bounds on query parameters: the demo must never be talked into unbounded sleeps or allocations.
MAX_MS = 60_000
MAX_BIGJSON_ITEMS = 1_000_000
DEFAULT_BIGJSON_ITEMS = 25_000  # about 3.5 MB of JSON
DEFAULT_BACKLOG = 128

DB_CUSTOMERS = 500
DB_ORDERS = 6_000
DB_QUERY = """
WITH RECURSIVE days(d) AS (SELECT 0 UNION ALL SELECT d + 1 FROM days WHERE d < 59)
SELECT c.region AS region, COUNT(*) AS orders, ROUND(SUM(o.amount), 2) AS revenue
FROM days
JOIN orders AS o ON o.created % 60 = days.d
JOIN customers AS c ON c.id = o.customer_id
GROUP BY c.region
ORDER BY revenue DESC
"""

_PR_SET_NAME = 15

# Bound once, before any thread exists, so naming a thread never has to dlopen anything.
_libc: ctypes.CDLL | None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
except OSError:  # pragma: no cover - not Linux/glibc
    _libc = None


def set_os_thread_name(name: str) -> None:
    """Copy a Python thread name into the kernel's ``comm`` for the calling thread.

    CPython before 3.14 never does this, so ``/proc/PID/task/TID/comm`` would say "python" for
    every thread, and anything that looks from outside (lifescope's thread probe, ``top -H``,
    ``ps -L``) could not tell the GIL hog from an executor worker. The kernel keeps 15 bytes.
    """
    if _libc is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(AttributeError, OSError):
        _libc.prctl(_PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0)


# --------------------------------------------------------------------------------------- database


def build_seed_database() -> sqlite3.Connection:
    """Build the in-memory DB once; workers copy it, since an in-memory DB is per connection."""
    rnd = random.Random(1234)  # deterministic, so query timings are comparable across runs
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT NOT NULL);
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER NOT NULL REFERENCES customers(id),
            amount REAL NOT NULL,
            created INTEGER NOT NULL
        );
        """
    )
    regions = ("north", "south", "east", "west")
    conn.executemany(
        "INSERT INTO customers VALUES (?, ?, ?)",
        [(i, f"customer-{i}", rnd.choice(regions)) for i in range(DB_CUSTOMERS)],
    )
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?)",
        [
            (i, rnd.randrange(DB_CUSTOMERS), round(rnd.random() * 100, 2), rnd.randrange(10**6))
            for i in range(DB_ORDERS)
        ],
    )
    conn.commit()
    return conn


class DatabasePool:
    """One sqlite connection per executor thread, each a private copy of the seed DB.

    Per-thread copies (rather than a shared-cache DB) keep the workers from contending on sqlite's
    table locks, so what lifescope shows for ``/db`` is executor threads and the GIL, not sqlite
    locking.
    """

    def __init__(self) -> None:
        self._seed = build_seed_database()
        self._seed_lock = threading.Lock()
        self._local = threading.local()

    def worker_init(self) -> None:
        """Runs in each new executor thread: name it for ``/proc`` and give it its connection."""
        set_os_thread_name(threading.current_thread().name)
        self.connection()

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(":memory:")
            conn.row_factory = sqlite3.Row
            with self._seed_lock:
                self._seed.backup(conn)
            self._local.conn = conn
        return conn


def run_report_query(pool: DatabasePool, min_ms: float = 0.0) -> list[dict[str, object]]:
    """The blocking part of ``/db``; runs in an executor thread (sqlite drops the GIL inside).

    With ``min_ms`` (the ``slow_db`` toggle) the query is re-run until that much time has
    passed: real database work in sqlite's C code, like a report that outgrew its index, rather
    than a sleep — so what lifescope sees is an executor thread busy in ``execute``.
    """
    conn = pool.connection()
    deadline = time.perf_counter() + min(min_ms, MAX_MS) / 1000.0
    rows = conn.execute(DB_QUERY).fetchall()
    while time.perf_counter() < deadline:
        rows = conn.execute(DB_QUERY).fetchall()
    return [dict(row) for row in rows]


# ------------------------------------------------------------------------------------ CPU workers


def burn_cpu(ms: float) -> int:
    """Pure-Python arithmetic for about ``ms`` milliseconds; holds the GIL the whole time."""
    deadline = time.perf_counter() + ms / 1000.0
    x = 0
    rounds = 0
    while time.perf_counter() < deadline:
        for i in range(2_000):
            x = (x * 31 + i) % 1_000_003
        rounds += 1
    return x ^ rounds


def gil_hog_spin(stop: threading.Event) -> None:
    """Body of the ``gil-hog`` thread: CPU-bound Python that keeps taking the GIL back."""
    set_os_thread_name(threading.current_thread().name)
    x = 0
    while not stop.is_set():
        for i in range(50_000):
            x = (x * 31 + i) % 1_000_003


def build_big_payload(n: int) -> list[dict[str, object]]:
    """Many small dicts: the shape that makes ``json.dumps`` slow (per-object overhead)."""
    return [
        {
            "id": i,
            "name": f"item-{i}",
            "tags": ["alpha", "beta", "gamma"],
            "price": i * 0.25,
            "in_stock": i % 3 != 0,
            "dims": {"w": i % 17, "h": i % 23, "d": i % 29},
        }
        for i in range(n)
    ]


_PAYLOADS: dict[int, list[dict[str, object]]] = {}


def cached_payload(n: int) -> list[dict[str, object]]:
    """The object /bigjson serializes, built once per size: the route is about the cost of
    serialization (layer 5), as when a handler returns rows it already has."""
    if n not in _PAYLOADS:
        _PAYLOADS.clear()  # keep one size only: bounded memory
        _PAYLOADS[n] = build_big_payload(n)
    return _PAYLOADS[n]


# ------------------------------------------------------------------------------------ live toggles


class Pathologies:
    """The live toggles of one running server, and the machinery each one switches.

    (Not `ui.stage.Stage`, the UI's stage keys, which switch these from outside.)

    Plain attributes read on every request: toggles change only from control handlers on the
    loop thread, so the loop never sees a half-applied change and no lock is needed. (The GIL
    hog thread reads nothing but its own stop event.)
    """

    def __init__(self) -> None:
        self.values: dict[str, float] = {name: 0.0 for name in SERVER_TOGGLES}
        self.requests = 0
        """Requests that went through the pathology middleware (health/control excluded)."""
        self.blocked = 0
        self._payload: tuple[int, list[dict[str, object]]] | None = None
        self._hog: threading.Thread | None = None
        self._hog_stop = threading.Event()
        self._server: asyncio.Server | None = None
        self._accept_paused = False
        self._resume: asyncio.TimerHandle | None = None
        self._stall_until = 0.0

    # ---- reading

    def value(self, name: str) -> float:
        return self.values[name]

    def snapshot(self) -> dict[str, object]:
        """The control endpoint's JSON: every toggle's value, and what is running because of it."""
        values = dict(self.values)
        if self._accept_paused:
            values["accept_stall"] = max(0.0, self._stall_until - time.monotonic())
        toggles = {name: SERVER_TOGGLES[name].render(v) for name, v in values.items()}
        hog = self._hog
        return {
            "toggles": toggles,
            "status": {
                "accepting": not self._accept_paused,
                "requests": self.requests,
                "blocked": self.blocked,
                "gil_hog_running": hog is not None and hog.is_alive(),
            },
        }

    def big_payload(self, n: int) -> list[dict[str, object]]:
        """The object ``big_json`` serializes, built once per size: the toggle is about the cost
        of serialization (layer 5), so building it must not be part of every request."""
        if self._payload is None or self._payload[0] != n:
            self._payload = (n, build_big_payload(n))
        return self._payload[1]

    # ---- changing

    def attach_server(self, server: asyncio.Server | None) -> None:
        """Called once the listener exists, so ``accept_stall`` has something to pause."""
        self._server = server
        if self.values["accept_stall"] > 0:
            self.set("accept_stall", self.values["accept_stall"])

    def set(self, name: str, value: float) -> None:
        """Apply one toggle now. Raises RuntimeError if this interpreter cannot do it."""
        if name == "gil_hog":
            self._set_gil_hog(value > 0)
        elif name == "accept_stall":
            self._set_accept_stall(value)
            return  # _set_accept_stall records the value (it may refuse)
        elif name == "big_json" and value == 0:
            self._payload = None  # give the memory back
        self.values[name] = value

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._set_gil_hog(False)

    def _set_gil_hog(self, on: bool) -> None:
        hog = self._hog
        if on:
            if hog is not None and hog.is_alive():
                return
            self._hog_stop = threading.Event()
            hog = threading.Thread(
                target=gil_hog_spin, args=(self._hog_stop,), name="gil-hog", daemon=True
            )
            hog.start()
            self._hog = hog
        elif hog is not None:
            self._hog_stop.set()
            # The hog checks its event every ~5 ms of spinning; joining here (on the loop, a
            # moment) means a caller that saw the toggle go off also sees the thread gone.
            hog.join(2.0)
            self._hog = None

    def _set_accept_stall(self, seconds: float) -> None:
        """Pause or resume accept(): the listening socket stays open, so connections complete
        their handshake in the kernel and wait in its accept queue — which is layer 1.

        asyncio has no public pause for a listener (``pause_reading`` is per connection, and
        ``Server.close()`` closes the socket, so new SYNs would be refused instead of queued).
        So pausing removes the listener's reader from the selector (public ``remove_reader``);
        resuming re-registers it through ``Server._start_serving`` — private, but the same code
        on 3.8-3.13. Other loops (uvloop) are refused rather than half-supported.
        """
        server = self._server
        loop = asyncio.get_running_loop()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if seconds > 0:
            if server is None:  # before the listener exists (a start-up flag): just record it
                self.values["accept_stall"] = seconds
                return
            if not self._accept_paused:
                if not hasattr(server, "_start_serving") or not hasattr(loop, "remove_reader"):
                    raise RuntimeError("accept_stall needs asyncio's default event loop")
                for sock in server.sockets or ():
                    loop.remove_reader(sock.fileno())
                self._accept_paused = True
            self._stall_until = time.monotonic() + seconds
            self._resume = loop.call_later(seconds, self._set_accept_stall, 0.0)
            self.values["accept_stall"] = seconds
            return
        if self._accept_paused and server is not None:
            server._serving = False  # type: ignore[attr-defined]
            server._start_serving()  # type: ignore[attr-defined]
        self._accept_paused = False
        self.values["accept_stall"] = 0.0


PATHOLOGIES_KEY: web.AppKey[Pathologies] = web.AppKey("pathologies", Pathologies)


def _exempt(path: str) -> bool:
    """Health checks and the control endpoints bypass the pathologies, so a slowed-down demo can
    still be checked and switched back."""
    return path == "/health" or path.startswith("/_lifescope/")


# --------------------------------------------------------------------------------------- handlers


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer\n") from None
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(text=f"{name} must be in [{lo}, {hi}]\n")
    return value


async def handle_fast(request: web.Request) -> web.Response:
    items = int(request.app[PATHOLOGIES_KEY].value("big_json"))
    if items <= 0:
        return web.json_response({"route": "fast", "ok": True})
    # big_json: the same tiny route, now paying for serialization on the loop (layer 5).
    payload = request.app[PATHOLOGIES_KEY].big_payload(items)
    body = json.dumps({"route": "fast", "ok": True, "items": payload})
    return web.Response(text=body, content_type="application/json")


async def handle_db(request: web.Request) -> web.Response:
    pool: DatabasePool = request.app[DB_POOL_KEY]
    slow_ms = request.app[PATHOLOGIES_KEY].value("slow_db")
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    rows = await loop.run_in_executor(None, run_report_query, pool, slow_ms)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return web.json_response({"route": "db", "rows": rows, "query_ms": round(elapsed_ms, 3)})


async def handle_block(request: web.Request) -> web.Response:
    ms = _int_param(request, "ms", 300, 0, MAX_MS)
    time.sleep(ms / 1000.0)  # the pathology: a synchronous sleep on the event loop thread
    return web.json_response({"route": "block", "blocked_ms": ms})


async def handle_cpu(request: web.Request) -> web.Response:
    ms = _int_param(request, "ms", 50, 0, MAX_MS)
    result = burn_cpu(ms)
    return web.json_response({"route": "cpu", "ms": ms, "result": result})


async def handle_bigjson(request: web.Request) -> web.Response:
    n = _int_param(request, "n", DEFAULT_BIGJSON_ITEMS, 0, MAX_BIGJSON_ITEMS)
    body = json.dumps({"route": "bigjson", "n": n, "items": cached_payload(n)})
    return web.Response(text=body, content_type="application/json")


async def handle_sleep(request: web.Request) -> web.Response:
    ms = _int_param(request, "ms", 100, 0, MAX_MS)
    await asyncio.sleep(ms / 1000.0)
    return web.json_response({"route": "sleep", "slept_ms": ms})


async def handle_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def handle_toggles(request: web.Request) -> web.Response:
    refusal = control_refusal(request)
    if refusal is not None:
        return refusal
    return web.json_response(request.app[PATHOLOGIES_KEY].snapshot())


async def handle_set_toggle(request: web.Request) -> web.Response:
    refusal = control_refusal(request)
    if refusal is not None:
        return refusal
    name = request.match_info["name"]
    spec = SERVER_TOGGLES.get(name)
    if spec is None:
        known = sorted(SERVER_TOGGLES)
        return web.json_response({"error": f"no toggle {name!r}", "known": known}, status=404)
    try:
        value = spec.parse(request.query.get("on"), request.query.get("value"))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    pathologies = request.app[PATHOLOGIES_KEY]
    try:
        pathologies.set(name, value)
    except RuntimeError as exc:
        return web.json_response({"error": str(exc)}, status=501)
    return web.json_response(pathologies.snapshot())


# ------------------------------------------------------------------------------------ middlewares


def blocking_call(seconds: float) -> None:
    """The ``block_loop`` pathology: a synchronous call on the event loop thread.

    Named for what it is, because it is what lifescope shows as the stall's guilty frame.
    """
    time.sleep(seconds)


@web.middleware
async def block_loop_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every Nth request (``block_loop`` = N) blocks the whole loop before it is handled."""
    pathologies = request.app[PATHOLOGIES_KEY]
    if not _exempt(request.path):
        pathologies.requests += 1
        every = int(pathologies.value("block_loop"))
        if every > 0 and pathologies.requests % every == 0:
            pathologies.blocked += 1
            blocking_call(BLOCK_LOOP_SLEEP_S)
    return await handler(request)


@web.middleware
async def slow_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An L3 stall: the request is parsed but waits in middleware before any handler runs,
    like an auth or rate-limit call to another service. Reads the toggle on every request."""
    ms = request.app[PATHOLOGIES_KEY].value("slow_middleware")
    if ms > 0 and not _exempt(request.path):
        await asyncio.sleep(ms / 1000.0)
    return await handler(request)


def make_slow_middleware(ms: int) -> Middleware:
    """A fixed-delay slow middleware, independent of the toggles (kept for embedding callers)."""

    @web.middleware
    async def fixed_slow_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/health":
            await asyncio.sleep(ms / 1000.0)
        return await handler(request)

    return fixed_slow_middleware


DB_POOL_KEY: web.AppKey[DatabasePool] = web.AppKey("db_pool", DatabasePool)


def build_control_app(pathologies: Pathologies) -> web.Application:
    """The control endpoints alone, for the out-of-band control listener.

    Out of band because the toggles must work when the main listener does not: during an
    accept stall a new connection to the main port waits in the very queue being demonstrated.
    """
    app = web.Application()
    app[PATHOLOGIES_KEY] = pathologies
    app.router.add_get(CONTROL_PATH, handle_toggles)
    app.router.add_post(CONTROL_PATH + "/{name}", handle_set_toggle)
    return app


def build_app(
    pool: DatabasePool, slow_middleware_ms: float = 0, pathologies: Pathologies | None = None
) -> web.Application:
    pathologies = pathologies if pathologies is not None else Pathologies()
    if slow_middleware_ms > 0:
        pathologies.set("slow_middleware", float(slow_middleware_ms))
    app = web.Application(middlewares=[block_loop_middleware, slow_middleware])
    app[DB_POOL_KEY] = pool
    app[PATHOLOGIES_KEY] = pathologies
    app.router.add_get("/fast", handle_fast)
    app.router.add_get("/db", handle_db)
    app.router.add_get("/block", handle_block)
    app.router.add_get("/cpu", handle_cpu)
    app.router.add_get("/bigjson", handle_bigjson)
    app.router.add_get("/sleep", handle_sleep)
    app.router.add_get("/health", handle_health)
    app.router.add_get(CONTROL_PATH, handle_toggles)
    app.router.add_post(CONTROL_PATH + "/{name}", handle_set_toggle)
    return app


# ------------------------------------------------------------------------------------------- main


def _milliseconds(text: str) -> float:
    """``--slow-middleware`` value: whole or fractional ms (``lifescope demo`` passes "200.0")."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("must be a finite number of milliseconds")
    return value


def _toggle_arg(text: str) -> tuple[str, float]:
    name, sep, raw = text.partition("=")
    spec = SERVER_TOGGLES.get(name.strip())
    if not sep or spec is None:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME one of {', '.join(SERVER_TOGGLES)}"
        )
    try:
        return spec.name, spec.parse(None, raw.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lifescope.demo.server",
        description="Demo aiohttp target for lifescope (loopback by default).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument(
        "--slow-middleware",
        type=_milliseconds,
        default=0,
        metavar="MS",
        help="initial slow_middleware toggle: wait MS ms before every handler (0 = off)",
    )
    parser.add_argument(
        "--gil-hog",
        action="store_true",
        help="initial gil_hog toggle: a background thread 'gil-hog' spins pure-Python CPU work",
    )
    parser.add_argument(
        "--toggle",
        type=_toggle_arg,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"initial value of a live toggle (repeatable): {', '.join(SERVER_TOGGLES)}",
    )
    parser.add_argument(
        "--control-port",
        type=int,
        default=0,
        metavar="PORT",
        help="127.0.0.1 port for the toggles only, which keeps working during an accept stall "
        "(default 0: any free one; printed as the second number of the READY line)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=DEFAULT_BACKLOG,
        metavar="N",
        help=f"listen(2) backlog of the server socket (default {DEFAULT_BACKLOG})",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in [0, 65535]")
    if not 0 <= args.control_port <= 65535:
        parser.error("--control-port must be in [0, 65535]")
    if not 0 <= args.slow_middleware <= MAX_MS:
        parser.error(f"--slow-middleware must be in [0, {MAX_MS}]")
    if args.backlog < 1:
        parser.error("--backlog must be >= 1")
    if not is_loopback_host(args.host):
        # Same rule as the load generator: the demo is a pathology on purpose; keep it off the LAN.
        print(
            f"lifescope.demo.server: refusing to bind non-loopback host {args.host!r} "
            "(allowed: 127.0.0.0/8, ::1, localhost)",
            file=sys.stderr,
        )
        sys.exit(2)
    return args


def initial_toggles(args: argparse.Namespace) -> dict[str, float]:
    """The toggles the command line asks for; ``--toggle`` wins over the older flags."""
    values: dict[str, float] = {}
    if args.slow_middleware:
        values["slow_middleware"] = float(args.slow_middleware)
    if args.gil_hog:
        values["gil_hog"] = 1.0
    for name, value in args.toggle:
        values[name] = value
    return values


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    pool = DatabasePool()
    # A named default executor, so run_in_executor threads read as "db-executor_N" everywhere.
    executor = ThreadPoolExecutor(thread_name_prefix="db-executor", initializer=pool.worker_init)
    loop.set_default_executor(executor)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    pathologies = Pathologies()
    for name, value in initial_toggles(args).items():
        pathologies.set(name, value)

    # Short shutdown_timeout: SIGTERM must end the process in about a second even with keep-alive
    # clients attached or a /sleep in flight; the demo has no work worth draining.
    runner = web.AppRunner(
        build_app(pool, pathologies=pathologies), access_log=None, shutdown_timeout=0.25
    )
    control = web.AppRunner(build_control_app(pathologies), access_log=None, shutdown_timeout=0.25)
    await runner.setup()
    await control.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port, backlog=args.backlog)
        await site.start()
        await web.TCPSite(control, "127.0.0.1", args.control_port).start()
        # aiohttp keeps the asyncio Server private; accept_stall needs it to pause the listener.
        pathologies.attach_server(getattr(site, "_server", None))
        port = _bound_port(runner, args.port)
        print(f"READY {port} {_bound_port(control, args.control_port)}", flush=True)
        await stop.wait()
    finally:
        pathologies.close()
        await control.cleanup()
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arm_parent_death()
    # The loop runs in the main thread; say so in thread listings instead of "MainThread".
    threading.current_thread().name = "event-loop"
    try:
        asyncio.run(serve(args))
    except OSError as exc:  # e.g. port in use: one line, not a traceback
        print(f"lifescope.demo.server: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
