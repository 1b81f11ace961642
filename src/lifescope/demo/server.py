"""A deliberately misbehaving aiohttp server: the target lifescope is demonstrated and tested on.

Every route exists to make one layer of a request, or one concurrency model, visible from outside
the process: executor threads (``/db``), a stalled event loop (``/block``), CPU work on the loop
(``/cpu``), serialization in the write phase (``/bigjson``), slow middleware
(``--slow-middleware``) and GIL contention from a background thread (``--gil-hog``). The healthy
contrasts (``/fast``, ``/sleep``) are there so the pathologies have something to stand out against.

Handler names (``handle_block``, ``handle_db``, ...) are part of the interface: lifescope shows the
innermost application frame as "the guilty frame", so they have to read well on screen.

Kept importable on older interpreters (no 3.10-only syntax at runtime) because lifescope attaches to
targets running CPython 3.8-3.13 and the demo is the obvious thing to run under each of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import random
import signal
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from lifescope.demo.children import arm_parent_death_signal, is_loopback_host

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


def run_report_query(pool: DatabasePool) -> list[dict[str, object]]:
    """The blocking part of ``/db``; runs in an executor thread (sqlite drops the GIL inside)."""
    return [dict(row) for row in pool.connection().execute(DB_QUERY).fetchall()]


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
    return web.json_response({"route": "fast", "ok": True})


async def handle_db(request: web.Request) -> web.Response:
    pool: DatabasePool = request.app[DB_POOL_KEY]
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    rows = await loop.run_in_executor(None, run_report_query, pool)
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
    body = json.dumps({"route": "bigjson", "n": n, "items": build_big_payload(n)})
    return web.Response(text=body, content_type="application/json")


async def handle_sleep(request: web.Request) -> web.Response:
    ms = _int_param(request, "ms", 100, 0, MAX_MS)
    await asyncio.sleep(ms / 1000.0)
    return web.json_response({"route": "sleep", "slept_ms": ms})


async def handle_health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_slow_middleware(ms: int) -> Middleware:
    """An L3 stall: the request is parsed but waits in middleware before any handler runs.

    ``/health`` is exempt so readiness checks stay meaningful while the demo is slowed down.
    """

    @web.middleware
    async def slow_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/health":
            await asyncio.sleep(ms / 1000.0)
        return await handler(request)

    return slow_middleware


DB_POOL_KEY: web.AppKey[DatabasePool] = web.AppKey("db_pool", DatabasePool)


def build_app(pool: DatabasePool, slow_middleware_ms: int = 0) -> web.Application:
    middlewares = [make_slow_middleware(slow_middleware_ms)] if slow_middleware_ms > 0 else []
    app = web.Application(middlewares=middlewares)
    app[DB_POOL_KEY] = pool
    app.router.add_get("/fast", handle_fast)
    app.router.add_get("/db", handle_db)
    app.router.add_get("/block", handle_block)
    app.router.add_get("/cpu", handle_cpu)
    app.router.add_get("/bigjson", handle_bigjson)
    app.router.add_get("/sleep", handle_sleep)
    app.router.add_get("/health", handle_health)
    return app


# ------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lifescope.demo.server",
        description="Demo aiohttp target for lifescope (loopback by default).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    parser.add_argument(
        "--slow-middleware",
        type=int,
        default=0,
        metavar="MS",
        help="sleep MS milliseconds in a middleware before every handler (0 = off)",
    )
    parser.add_argument(
        "--gil-hog",
        action="store_true",
        help="run a background thread 'gil-hog' that spins pure-Python CPU work forever",
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


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    pool = DatabasePool()
    # A named default executor, so run_in_executor threads read as "db-executor_N" everywhere.
    executor = ThreadPoolExecutor(thread_name_prefix="db-executor", initializer=pool.worker_init)
    loop.set_default_executor(executor)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    hog_stop = threading.Event()
    if args.gil_hog:
        threading.Thread(target=gil_hog_spin, args=(hog_stop,), name="gil-hog", daemon=True).start()

    # Short shutdown_timeout: SIGTERM must end the process in about a second even with keep-alive
    # clients attached or a /sleep in flight; the demo has no work worth draining.
    runner = web.AppRunner(
        build_app(pool, args.slow_middleware), access_log=None, shutdown_timeout=0.25
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, args.host, args.port, backlog=args.backlog)
        await site.start()
        port = _bound_port(runner, args.port)
        print(f"READY {port}", flush=True)
        await stop.wait()
    finally:
        hog_stop.set()
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arm_parent_death_signal()
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
