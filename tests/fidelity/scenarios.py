"""The scenario table: real servers × a bounded loopback load × the truth lifescope must show.

A truth is known by construction: the app spends its time in one layer on purpose (see
``apps/fidelity_common.py`` for what each path does), the load fixes how many requests are in
flight, and the server's command fixes how many workers it has. Where a server has a master,
the same scenario runs attached to the master and to one worker, as issue 12 asks.

``KNOWN_WRONG`` says which checks lifescope fails today, with what it shows instead (measured
by ``tools/fidelity.py``); the tests mark exactly those ``xfail(strict=True)``, so a check the
engine starts getting right fails loudly until its entry here is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LAYERS = ("L0", "L1", "L2", "L3", "L4", "L5", "L6")


@dataclass(frozen=True)
class Server:
    """How to start one server. ``argv`` may use ``{python}`` (this interpreter), ``{bin}``
    (its scripts folder, for servers that are programs, like uWSGI) and ``{port}``."""

    name: str
    argv: tuple[str, ...]
    ready: str = "http"
    """"http": ``GET /ping`` answers; "listen": the port is listening (a server that never
    accepts cannot answer)."""
    workers: int = 0
    """Worker processes the server forks (0: it serves in its own process)."""
    worker_mark: str | None = None
    """A substring of a worker's command line, telling workers from helpers (multiprocessing's
    resource tracker, uWSGI's HTTP router); None: every Python child is a worker."""
    note: str = ""


@dataclass(frozen=True)
class Load:
    """Bounded loopback clients (each ends within 60 s, all stop when the scenario ends).

    kinds: "none"; "loop" (back-to-back keep-alive GETs of ``path``); "slow-read" (GET a
    16 MiB body, read 16 KiB every 50 ms); "keepalive" (one GET, then hold the connection
    idle); "connect" (connect, send nothing); "flood" (a new connect every 50 ms to the
    server's own listener); "flood-neighbour" (the same, to a backlog-1 listener of another
    process that never accepts)."""

    kind: str = "none"
    path: str = "/ping"
    clients: int = 0

    def describe(self) -> str:
        if self.kind == "none":
            return "no client"
        if self.kind in ("flood", "flood-neighbour"):
            target = "its listener" if self.kind == "flood" else "a neighbour's backlog-1 listener"
            return f"a connect every 50 ms to {target}"
        what = {"loop": "back-to-back GET", "slow-read": "slow-reading GET"}.get(self.kind, "")
        if self.kind == "keepalive":
            return f"{self.clients} idle keep-alive clients"
        if self.kind == "connect":
            return f"{self.clients} clients that connect and send nothing"
        return f"{self.clients}× {what} {self.path}"


@dataclass(frozen=True)
class Truth:
    layer: str | None = None
    """The largest layer among L0–L6."""
    in_flight: int | None = None
    """Requests in flight at the end of the window (every in-flight item but L6)."""
    frame: str | None = None
    """Text an in-flight request's evidence names, in the truth's layer: the app code that
    waits (the frame that waits keeps its own layer, so it is the one to name)."""
    slack: int | None = None
    """How many fewer may be seen (a client between two requests); by default 1 from three
    clients up, else 0 (a client spends ~1 ms of a 300 ms request between requests)."""
    stall_ms: tuple[float, float] | None = None
    """Every complete event-loop stall lasts within this range (at least 3 of them)."""
    workers: int | None = None
    """Worker processes listed by a master (helpers are not workers)."""
    pids: bool = False
    """Each in-flight request names the worker process serving it (``in_flight[].pid``)."""
    drops: str | None = None
    """"own": the target's listener drops SYNs and lifescope shows drops on it; "none": only a
    neighbour's listener drops, and lifescope shows none on the target's."""
    model: str | None = None
    """The concurrency model the snapshot names (asyncio, threads, hybrid, greenlets)."""

    @property
    def fewest_in_flight(self) -> int:
        assert self.in_flight is not None
        slack = self.slack if self.slack is not None else (1 if self.in_flight >= 3 else 0)
        return max(0, self.in_flight - slack)

    def checks(self) -> tuple[str, ...]:
        names = []
        if self.layer is not None:
            names.append("layer")
        if self.in_flight is not None:
            names.append("in_flight")
        if self.frame is not None:
            names.append("frame")
        if self.stall_ms is not None:
            names.append("stalls")
        if self.workers is not None:
            names.append("workers")
        if self.pids:
            names.append("pids")
        if self.drops is not None:
            names.append("drops")
        if self.model is not None:
            names.append("model")
        return tuple(names)

    def describe(self) -> str:
        parts = []
        if self.layer:
            parts.append(self.layer)
        if self.in_flight is not None:
            parts.append(f"{self.in_flight} in flight")
        if self.frame:
            parts.append(f"in `{self.frame}`")
        if self.stall_ms:
            parts.append(f"stalls {self.stall_ms[0]:.0f}–{self.stall_ms[1]:.0f} ms each")
        if self.workers is not None:
            parts.append(f"{self.workers} worker{'s' if self.workers != 1 else ''}")
        if self.pids:
            parts.append("in-flight pids")
        if self.drops == "own":
            parts.append("own listener drops")
        elif self.drops == "none":
            parts.append("no drops on the target's listener")
        if self.model:
            parts.append(f"model {self.model}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Scenario:
    server: Server
    name: str
    load: Load
    truth: Truth
    attach: str = "main"
    """"main": the process the command started (a master, where there is one); "worker": the
    worker holding the most connections once the load runs."""

    @property
    def id(self) -> str:
        if self.server.workers == 0:
            return f"{self.server.name}/{self.name}"
        return f"{self.server.name}/{self.name}@{'master' if self.attach == 'main' else 'worker'}"


@dataclass(frozen=True)
class Setup:
    server: Server
    scenarios: tuple[Scenario, ...] = field(default_factory=tuple)


def _gunicorn(worker_class: str, app: str, *extra: str) -> tuple[str, ...]:
    return (
        "{python}", "-m", "gunicorn", "-k", worker_class, "-w", "1", "-b", "127.0.0.1:{port}",
        "--graceful-timeout", "1", *extra, app,
    )  # fmt: skip


HTTP_SERVER = Server("http.server", ("{python}", "stdlib_http.py", "{port}"),
                     note="ThreadingHTTPServer, HTTP/1.1")  # fmt: skip
WERKZEUG = Server("werkzeug", ("{python}", "werkzeug_app.py", "{port}"),
                  note="run_simple(threaded=True)")  # fmt: skip
FLASK_SYNC = Server("gunicorn-sync+flask", _gunicorn("sync", "flask_app:app"), workers=1)
FLASK_GTHREAD = Server(
    "gunicorn-gthread+flask",
    _gunicorn("gthread", "flask_app:app", "--threads", "4", "--keep-alive", "30"),
    workers=1,
)
FLASK_GEVENT = Server("gunicorn-gevent+flask", _gunicorn("gevent", "flask_app:app"), workers=1)
DJANGO = Server("gunicorn-sync+django", _gunicorn("sync", "django_app:application"), workers=1)
UVICORN = Server(
    "uvicorn+fastapi",
    ("{python}", "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}",
     "--log-level", "warning", "asgi_app:app"),
)  # fmt: skip
UVICORN_2 = Server(
    "uvicorn-w2+fastapi",
    ("{python}", "-m", "uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", "{port}",
     "--log-level", "warning", "asgi_app:app"),
    workers=2,
    worker_mark="spawn_main",
)  # fmt: skip
AIOHTTP = Server("aiohttp", ("{python}", "aiohttp_app.py", "{port}"))
TORNADO = Server("tornado", ("{python}", "tornado_app.py", "{port}"))
HYPERCORN = Server(
    "hypercorn+fastapi",
    ("{python}", "-m", "hypercorn", "-b", "127.0.0.1:{port}", "asgi_app:app"),
    workers=1,
    worker_mark="spawn_main",
    note="default: one spawned worker beside multiprocessing's resource tracker",
)
GRANIAN = Server(
    "granian+fastapi",
    ("{python}", "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
     "--port", "{port}", "--log-level", "warning", "asgi_app:app"),
    workers=1,
)  # fmt: skip
UWSGI = Server(
    "uwsgi+flask",
    ("{bin}/uwsgi", "--master", "--workers", "2", "--http", "127.0.0.1:{port}",
     "--wsgi-file", "flask_app.py", "--callable", "app", "--auto-procname", "--die-on-term",
     "--disable-logging"),
    workers=2,
    worker_mark="uWSGI worker",
    note="master, 2 workers and the HTTP router (--http)",
)  # fmt: skip
STALLED = Server("listener", ("{python}", "listener.py", "{port}", "16"), ready="listen",
                 note="listen(16), never accepts")  # fmt: skip
STALLED_1 = Server("listener-backlog1", ("{python}", "listener.py", "{port}", "1"),
                   ready="listen", note="listen(1), never accepts")  # fmt: skip

IDLE = Load()
STALLS = Truth(stall_ms=(250.0, 400.0))


def loop(path: str, clients: int) -> Load:
    return Load("loop", path, clients)


def _both(server: Server, name: str, load: Load, worker: Truth, master: Truth) -> list[Scenario]:
    """The same load seen from one worker and from the master."""
    return [Scenario(server, name, load, worker, "worker"), Scenario(server, name, load, master)]


def _table() -> tuple[Scenario, ...]:
    s, t = Scenario, Truth
    w = "worker"
    rows: list[Scenario] = [
        s(HTTP_SERVER, "idle", IDLE, t(in_flight=0)),
        s(HTTP_SERVER, "sleep", loop("/sleep", 4), t("L4", 4, "do_GET", model="threads")),
        # the query is CPU work in sqlite: one client, so it never takes both cores
        s(HTTP_SERVER, "db", loop("/db", 1), t("L4", 1, "slow_query")),
        s(HTTP_SERVER, "db-4s", loop("/db-long", 1), t("L4", 1, "slow_query")),
        s(HTTP_SERVER, "big-json", loop("/big", 1), t("L5")),
        s(HTTP_SERVER, "slow-read", Load("slow-read", "/stream", 3), t("L5", 3)),
        s(HTTP_SERVER, "keepalive", Load("keepalive", "/ping", 4), t("L6", 0)),
        s(HTTP_SERVER, "neighbour-drops", Load("flood-neighbour"), t(drops="none")),
        s(WERKZEUG, "idle", IDLE, t(in_flight=0)),
        s(WERKZEUG, "sleep", loop("/sleep", 4), t("L4", 4, "werkzeug_app", model="threads")),
        # gunicorn sync: one worker serves one request at a time (more clients would queue: L1)
        s(FLASK_SYNC, "idle", IDLE, t(in_flight=0, workers=1)),
        *_both(FLASK_SYNC, "sleep", loop("/sleep", 1),
               t("L4", 1, "flask_app"), t("L4", 1, workers=1, pids=True)),
        s(FLASK_SYNC, "before-request-sleep", loop("/mw-sleep", 1), t("L3", 1, "authenticate"), w),
        s(FLASK_SYNC, "db", loop("/db", 1), t("L4", 1, "slow_query"), w),
        s(FLASK_SYNC, "big-json", loop("/big", 1), t("L5"), w),
        s(FLASK_SYNC, "slow-read", Load("slow-read", "/stream", 1), t("L5", 1), w),
        *_both(FLASK_GTHREAD, "sleep", loop("/sleep", 4),
               t("L4", 4, "flask_app"), t("L4", 4, workers=1, pids=True)),
        s(FLASK_GTHREAD, "keepalive", Load("keepalive", "/ping", 3), t("L6", 0), w),
        *_both(FLASK_GEVENT, "sleep", loop("/sleep", 4),
               t("L4", 4, "flask_app", model="greenlets"), t("L4", 4, workers=1, pids=True)),
        s(DJANGO, "function-middleware-sleep", loop("/mw-func", 1),
          t("L3", 1, "func_middleware"), w),
        s(DJANGO, "class-middleware-sleep", loop("/mw-class", 1),
          t("L3", 1, "CallMiddleware"), w),
        s(DJANGO, "mixin-middleware-sleep", loop("/mw-mixin", 1),
          t("L3", 1, "MixinMiddleware.process_request"), w),
        *_both(DJANGO, "view-sleep", loop("/sleep", 1),
               t("L4", 1, "django_app"), t("L4", 1, workers=1, pids=True)),
        s(UVICORN, "idle", IDLE, t(in_flight=0)),
        s(UVICORN, "async-sleep", loop("/sleep", 4), t("L4", 4, "asgi_app")),
        s(UVICORN, "sync-sleep", loop("/sync-sleep", 4), t("L4", 4, "sync_sleep")),
        s(UVICORN, "sync-db", loop("/sync-db", 1), t("L4", 1, "slow_query")),
        s(UVICORN, "base-middleware-sleep", loop("/mw/base-sleep", 4),
          t("L3", 4, "SlowBaseMiddleware")),
        s(UVICORN, "asgi-middleware-sleep", loop("/mw/asgi-sleep", 4),
          t("L3", 4, "SlowAsgiMiddleware")),
        s(UVICORN, "big-json", loop("/big", 1), t("L5")),
        s(UVICORN, "slow-read", Load("slow-read", "/stream", 3), t("L5", 3)),
        s(UVICORN, "keepalive", Load("keepalive", "/ping", 4), t("L6", 0)),
        s(UVICORN, "blocking-sleep", loop("/block", 4), STALLS),
        s(UVICORN_2, "idle", IDLE, t(in_flight=0, workers=2)),
        *_both(UVICORN_2, "async-sleep", loop("/sleep", 4),
               t("L4", frame="asgi_app"), t("L4", 4, workers=2, pids=True)),
        s(AIOHTTP, "idle", IDLE, t(in_flight=0)),
        s(AIOHTTP, "sleep", loop("/sleep", 4), t("L4", 4, "aiohttp_app", model="asyncio")),
        s(AIOHTTP, "middleware-sleep", loop("/mw-sleep", 4), t("L3", 4, "slow_auth")),
        s(AIOHTTP, "blocking-sleep", loop("/block", 4), STALLS),
        s(TORNADO, "idle", IDLE, t(in_flight=0)),
        s(TORNADO, "sleep", loop("/sleep", 4), t("L4", 4, "Sleep.get", model="asyncio")),
        s(HYPERCORN, "idle", IDLE, t(in_flight=0, workers=1)),
        *_both(HYPERCORN, "async-sleep", loop("/sleep", 4),
               t("L4", 4, "asgi_app"), t("L4", 4, workers=1, pids=True)),
        s(GRANIAN, "idle", IDLE, t(in_flight=0, workers=1)),
        *_both(GRANIAN, "async-sleep", loop("/sleep", 10),
               t("L4", 10, "asgi_app"), t("L4", 10, workers=1, pids=True)),
        # uWSGI: two single-threaded workers, so two clients are both being served
        s(UWSGI, "idle", IDLE, t(in_flight=0, workers=2)),
        *_both(UWSGI, "sleep", loop("/sleep", 2),
               t("L4", frame="flask_app"), t("L4", 2, workers=2, pids=True)),
        s(STALLED, "accept-stall", Load("connect", clients=6), t("L1", 6, slack=0)),
        s(STALLED_1, "own-drops", Load("flood"), t(drops="own")),
    ]
    return tuple(rows)


SCENARIOS: tuple[Scenario, ...] = _table()
BY_ID = {scenario.id: scenario for scenario in SCENARIOS}
assert len(BY_ID) == len(SCENARIOS), "scenario ids must be unique"

# Why lifescope is wrong today, by cause (the first matrix, on 13546b7, and each one since
# are in the git history of docs/FIDELITY.md).
_DOUBLE = "a request is counted twice: once by its thread's code, once by its connection"
_IDLE_POOL = (
    "an idle AnyIO worker thread (left from the sync endpoints, waiting for work in "
    "WorkerThread.run) is a request: 'L4 handler: WorkerThread.run (lock)'"
)
_GEVENT = (
    "py-spy sees only the gevent hub (Hub.run): the greenlets serving the requests are "
    "invisible, their connections 'request received, response not finished; its code is not "
    "visible'"
)

KNOWN_WRONG: dict[tuple[str, str], str] = {
    ("gunicorn-gevent+flask/sleep@worker", "layer"): f"{_GEVENT}; unknown 0.99",
    ("gunicorn-gevent+flask/sleep@worker", "frame"): _GEVENT,
    ("gunicorn-gevent+flask/sleep@master", "layer"): f"{_GEVENT}, in the workers as on one",
    ("gunicorn-gevent+flask/sleep@master", "pids"): (
        "no request's code is visible (greenlets), so none names its worker"
    ),
}
"""(scenario id, check) → what lifescope shows instead today, measured (see docs/FIDELITY.md).
Wrong in every run: a strict xfail."""

KNOWN_FLAKY: dict[tuple[str, str], str] = {
    ("http.server/db-4s", "layer"): (
        "the connection's tcp_info timers tie (the request landed in the ms of the last "
        "response) and a tie older than 1 s (TIE_ACTIVE_MS) reads as idle, so a 4 s query's "
        "connection is L6 while its thread is L4, both counted: L4 0.44-0.53 vs L6 0.47-0.56"
    ),
    ("uvicorn+fastapi/blocking-sleep", "stalls"): (
        "split per callback since 6b1e919, but some 300 ms time.sleep stalls read short "
        "(measured 315, 283, 240, 289, 302, 244, 306; another run 168, 300, 284, 291, 245, ...)"
    ),
    ("aiohttp/blocking-sleep", "stalls"): (
        "split per callback since 6b1e919 (right twice running once), but in another run some "
        "300 ms time.sleep stalls read short twice running: 260, 304, 300, 299, 304, 300, 235, "
        "237, then 104, 299, 300, ..."
    ),
    ("uvicorn+fastapi/big-json", "layer"): (
        f"a near tie: {_IDLE_POOL} for the whole window, L4 0.50 vs L5 0.50 (before the "
        "request model: the lifespan task's L3 0.41-0.45 vs L5 0.46-0.49)"
    ),
    ("uvicorn+fastapi/asgi-middleware-sleep", "in_flight"): (
        f"4-10 for 4 over five runs; 5 on main: {_IDLE_POOL}"
    ),
    ("uwsgi+flask/sleep@worker", "frame"): (
        "on main: 1 of 2 in-flight items named the view ('L4 handler: sleep'), then 0 of 2 on "
        "the re-measurement ('request received, response not finished; its code is not "
        "visible'); before the request model the worker's stacks, reported under the master's "
        "thread id, never joined"
    ),
    ("http.server/db", "in_flight"): (
        "under a CPU hog, in two hog runs of four (both measurements each time): 2 for 1, the "
        "query's thread (L4) and the previous request's connection, still open with "
        "unacknowledged response bytes (L5): one client, a new connection per request, and "
        "the previous thread not yet past its close when the next request began"
    ),
    ("uvicorn+fastapi/base-middleware-sleep", "in_flight"): (
        "right in five hog runs on 2026-12-04, then 5 for 4 twice running in a quiet run: "
        "4 in SlowBaseMiddleware.dispatch plus call_next's inner coroutine (the same "
        "request counted twice), then plus a response still being written (L5)"
    ),
    ("http.server/db", "frame"): (
        "right in six runs before the request model; on main, once, wrong twice running: the "
        "one request read 'code is not visible', then 'L2 request: handle_one_request "
        "(http/server.py:404)'"
    ),
    ("uvicorn+fastapi/slow-read", "layer"): (
        "right in seven runs; on main, once, L4 0.56 vs L5 0.44 twice running: idle AnyIO "
        "worker threads left by the sync endpoints ('L4 handler: WorkerThread.run (lock)') "
        "count as requests for the whole window"
    ),
    # the idle AnyIO worker threads (see _IDLE_POOL) weigh as L4 in every uvicorn scenario
    # after the sync endpoints, so the truth's layer is near a tie with L4
    ("uvicorn+fastapi/base-middleware-sleep", "layer"): (
        f"near a tie on main: {_IDLE_POOL}: L3 0.48 vs L4 0.49 twice running once"
    ),
    ("uvicorn+fastapi/asgi-middleware-sleep", "layer"): (
        f"near a tie on main: {_IDLE_POOL}: L3 0.53 vs L4 0.47"
    ),
    ("uvicorn+fastapi/keepalive", "layer"): f"near a tie on main: {_IDLE_POOL}: L6 0.51 vs L4 0.49",
    # right in the latest runs: promote to plain tests once they stay right
    ("gunicorn-sync+flask/slow-read@worker", "layer"): (
        f"was right by a hair before the request model ({_DOUBLE}: L5 0.52 vs L2 0.48); L5 "
        "1.00 on main"
    ),
    ("http.server/keepalive", "layer"): (
        "was a coin flip before the request model (each idle connection's thread blocked on "
        "the next request read as L2 parse, beside the connection's L6); L6 1.00 on main"
    ),
    ("werkzeug/sleep", "frame"): "was wrong in three runs of four before; right on main",
    ("uvicorn+fastapi/asgi-middleware-sleep", "frame"): (
        "in one run of four before the request model the waits read as BaseHTTPMiddleware's "
        "call_next.send_no_error"
    ),
    ("aiohttp/sleep", "in_flight"): (
        "4 or 5 for 4: a request between handler and response (StreamResponse._write_headers,"
        " _fix_request_current_app.impl) was counted beside the four parked ones"
    ),
    ("aiohttp/middleware-sleep", "in_flight"): "4 or 5 for 4, as aiohttp/sleep",
    ("hypercorn+fastapi/async-sleep@worker", "in_flight"): (
        "5 for 4 in three runs of four before the request model: a finished response's "
        "transport.write / H11Protocol.stream_send counted as one more request"
    ),
    ("hypercorn+fastapi/async-sleep@worker", "frame"): (
        "in one run of four the 4 sleeping requests were 'code is not visible' (tasks not read)"
    ),
}
"""Checks lifescope passes in some runs and fails in others (right by coincidence, or a near
tie between two layers), or that became right too recently to be sure: a non-strict xfail, so
the suite stays green either way; each is meant to become a plain test once it is right every
time."""
