"""Request layers against real servers, each dominated by a known layer.

Shares are compared among the layers lifescope can attribute (L0–L6): where an asyncio
request's code is not visible, its time is "unknown" by design, never guessed.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lifescope.analysis import lifetimes, report
from lifescope.analysis.layers import analyse, classify
from lifescope.demo.children import start_demo_server
from lifescope.rules import load as load_rules
from lifescope.samples import Frame, StackSpan, StacksWindow, ThreadsSample, ThreadStat
from lifescope.session import collect
from lifescope.timeline import Timeline
from tests.conftest import PYTHON, free_port, stop_pid, wait_for
from tests.interpreters import python_for

KNOWN = ("L0", "L1", "L2", "L3", "L4", "L5", "L6")


def largest(result: report.Report) -> str:
    assert result.layers is not None
    shares = dict(result.layers.shares)
    return max(KNOWN, key=lambda layer: shares[layer])


def observe(pid: int, seconds: float = 4.0) -> report.Report:
    return report.build(collect(pid, seconds, probes=("threads", "stacks", "sockets")).window())


def hammer(port: int, path: str, stop: threading.Event, workers: int = 4) -> list[threading.Thread]:
    """Bounded loopback clients: keep-alive GETs until `stop` (and at most 60 s)."""

    def run() -> None:
        deadline = time.monotonic() + 60
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", path)
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                time.sleep(0.05)
        conn.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    return threads


def wait_listening(port: int) -> None:
    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(ready, timeout=20)


# --- aiohttp (the demo server) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "layer", "version"),
    [
        ("/cpu?ms=80", "L4", "this"),
        ("/bigjson?n=40000", "L5", "this"),
        ("/cpu?ms=80", "L4", "3.14"),
        ("/bigjson?n=40000", "L5", "3.15"),
    ],
)
def test_aiohttp_dominant_layer(path: str, layer: str, version: str) -> None:
    """One closed-loop client (no think time): the connection's time is the server's.

    The handler's own work must dwarf the client's turn-around (a few ms), or the
    connection honestly spends much of its time idle on the client's side (L6)."""
    server = start_demo_server(port=0, python=python_for(version))
    stop = threading.Event()
    clients = hammer(server.port, path, stop, workers=1)
    try:
        time.sleep(0.5)
        result = observe(server.pid)
    finally:
        stop.set()
        for client in clients:
            client.join(15)
        server.stop()
    assert largest(result) == layer, result.layers
    evidence = [f.evidence for f in result.layers.in_flight if f.layer == layer]  # type: ignore[union-attr]
    assert evidence or dict(result.layers.shares)[layer] > 0.05  # type: ignore[union-attr]


def test_idle_keepalive_clients_are_layer_6() -> None:
    server = start_demo_server(port=0)
    conns = []
    try:
        for _ in range(4):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/fast")
            conn.getresponse().read()
            conns.append(conn)
        result = observe(server.pid, 2.5)
    finally:
        for conn in conns:
            conn.close()
        server.stop()
    assert largest(result) == "L6"
    assert dict(result.layers.now).get("L6", 0) >= 4  # type: ignore[union-attr]


def test_accept_stall_is_layer_1(python_target) -> None:  # type: ignore[no-untyped-def]
    proc = python_target(
        """
        import socket, time
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        print("READY", s.getsockname()[1], flush=True)
        time.sleep(120)  # never accepts: every client waits in the kernel's queue
        """
    )
    port = int(proc.ready_line)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        result = observe(proc.pid, 2.5)
    finally:
        for client in clients:
            client.close()
    assert largest(result) == "L1"
    assert dict(result.layers.now).get("L1") == 6  # type: ignore[union-attr]


# --- Flask under gunicorn --------------------------------------------------------------

FLASK_APP = """
import json, sqlite3, time
from flask import Flask, request
app = Flask(__name__)
db = sqlite3.connect(":memory:", check_same_thread=False)
db.execute("create table t(x)")
db.executemany("insert into t values (?)", [(i,) for i in range(20000)])

@app.before_request
def authenticate():
    if request.path == "/slow-auth":
        time.sleep(0.2)  # an auth check that calls out: layer 3

@app.route("/slow-auth")
def slow_auth():
    return "ok"

@app.route("/db")
def orders():
    rows = db.execute(
        "select count(*) from t a, t b where a.x < 1500 and b.x < 1500 and a.x % 7 = b.x % 5"
    ).fetchall()
    return str(rows)
"""


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[[], tuple[int, int]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(workers: int = 1) -> tuple[int, int]:
        (tmp_path / "flaskapp.py").write_text(textwrap.dedent(FLASK_APP))
        port = free_port()
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
                "--chdir",
                str(tmp_path),
                "flaskapp:app",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_listening(port)
        return proc.pid, port

    yield start
    for proc in procs:
        stop_pid(proc)


def only_worker(master: int) -> int:
    from lifescope.target import python_children

    wait_for(lambda: python_children(master), timeout=20)
    return python_children(master)[0]


@pytest.mark.parametrize(("path", "layer"), [("/slow-auth", "L3"), ("/db", "L4")])
def test_flask_gunicorn_dominant_layer(gunicorn, path: str, layer: str) -> None:  # type: ignore[no-untyped-def]
    master, port = gunicorn()
    worker = only_worker(master)
    stop = threading.Event()
    clients = hammer(port, path, stop, workers=1)  # one sync worker: more would queue (L1)
    try:
        time.sleep(0.5)
        result = observe(worker)
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    assert largest(result) == layer, result.layers


def test_gunicorn_master_finds_and_aggregates_all_workers(gunicorn) -> None:  # type: ignore[no-untyped-def]
    """Truth: 6 clients connect and send nothing. Each of the 3 sync workers accepts one and
    blocks reading it; the other 3 wait in the shared accept queue, owned by nobody. So every
    worker owns exactly one connection and the master none."""
    import json

    master, port = gunicorn(workers=3)
    from lifescope.target import python_children

    wait_for(lambda: len(python_children(master)) == 3, timeout=20)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
    try:
        time.sleep(0.5)
        rep = report.build(collect(master, 2.5).window())
    finally:
        for client in clients:
            client.close()
    snap = json.loads(json.dumps(report.to_json(rep)))
    processes = snap["target"]["processes"]
    assert [p["role"] for p in processes] == ["main", "worker", "worker", "worker"]
    assert {p["pid"] for p in processes[1:]} == set(python_children(master))
    assert [p["connections"] for p in processes] == [0, 1, 1, 1], processes
    for p in processes:
        assert p["threads"] == len(os.listdir(f"/proc/{p['pid']}/task")), p
        assert p["cpu_share"] is not None and p["cpu_share"] < 0.2, p  # all blocked
        assert p["rss_bytes"] > 5 * 2**20, p
    assert snap["probes"]["workers"]["status"] == "ok"
    # the same numbers on the Prometheus endpoint, one series per process
    from lifescope.prometheus import metrics

    scraped = {
        (family.name, sample.labels["process_pid"], sample.labels["role"]): sample.value
        for family in metrics(rep)
        if family.name.startswith("lifescope_process_")
        for sample in family.samples
    }
    for p in processes:
        key = (str(p["pid"]), p["role"])
        assert scraped[("lifescope_process_connections", *key)] == p["connections"]
        assert scraped[("lifescope_process_cpu_ratio", *key)] == p["cpu_share"]
        assert scraped[("lifescope_process_resident_memory_bytes", *key)] == p["rss_bytes"]


def test_attached_to_the_master_the_workers_requests_are_seen(gunicorn) -> None:  # type: ignore[no-untyped-def]
    """Truth: 2 sync workers, 2 closed-loop clients on a route whose before_request sleeps
    (L3). Attached to the master — which serves nothing — the layers are the workers', and
    every request in flight names the worker serving it."""
    from lifescope.target import python_children

    master, port = gunicorn(workers=2)
    wait_for(lambda: len(python_children(master)) == 2, timeout=20)
    workers = set(python_children(master))
    stop = threading.Event()
    clients = hammer(port, "/slow-auth", stop, workers=2)
    try:
        time.sleep(0.5)
        result = report.build(collect(master, 4.0).window())
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    assert largest(result) == "L3", result.layers
    code = [f for f in result.layers.in_flight if f.tid is not None]  # type: ignore[union-attr]
    assert code and {f.pid for f in code} <= workers, code
    assert [p.role for p in result.processes].count("worker") == 2


FASTAPI_SLEEPS = """
import asyncio
from fastapi import FastAPI
app = FastAPI()

@app.get("/wait")
async def wait():
    # The handler waits: layer 4, parked as a task. A second, not 0.2 s: under a CPU hog
    # the rest of a request's round trip took long enough that the last tasks sample once
    # found only 1 of the 4 clients' requests parked.
    await asyncio.sleep(1.0)
    return "ok"
"""


def test_uvicorn_workers_master_aggregates_the_workers_tasks(tmp_path: Path) -> None:
    """`uvicorn --workers 2`: the master is a supervisor without an event loop; the requests
    are parked tasks in the workers. multiprocessing's resource tracker is a Python child too,
    and is named for what it is, not counted as a worker."""
    pytest.importorskip("fastapi")
    (tmp_path / "sleepy.py").write_text(textwrap.dedent(FASTAPI_SLEEPS))
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-m", "uvicorn", "--app-dir", str(tmp_path), "--port", str(port),
         "--workers", "2", "--log-level", "warning", "sleepy:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    stop = threading.Event()
    clients: list[threading.Thread] = []
    try:
        wait_listening(port)
        from lifescope.probes.family import Family
        from lifescope.target import resolve

        wait_for(lambda: len(Family(resolve(proc.pid)).workers()) == 2, timeout=30)
        clients = hammer(port, "/wait", stop, workers=4)
        time.sleep(1.0)
        result = report.build(collect(proc.pid, 4.0).window())
    finally:
        stop.set()
        for client in clients:
            client.join(15)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert largest(result) == "L4", result.layers
    roles = sorted(p.role for p in result.processes)
    assert roles == ["main", "resource-tracker", "worker", "worker"], result.processes
    workers = {p.pid for p in result.processes if p.role == "worker"}
    parked = [f for f in result.layers.in_flight if f.task]  # type: ignore[union-attr]
    assert len(parked) >= 2 and {f.pid for f in parked} <= workers, parked
    assert len(result.loops) == 2 and {loop.pid for loop in result.loops} == workers


# --- FastAPI under uvicorn -------------------------------------------------------------

FASTAPI_APP = """
import sqlite3
from fastapi import FastAPI
app = FastAPI()

@app.get("/db")
def orders():  # a sync endpoint: FastAPI runs it in a worker thread
    db = sqlite3.connect(":memory:")
    db.execute("create table t(x)")
    db.executemany("insert into t values (?)", [(i,) for i in range(3000)])
    rows = db.execute(
        "select count(*) from t a, t b where a.x < 300 and b.x < 300 and a.x % 7 = b.x % 5"
    ).fetchall()
    return {"rows": rows[0][0]}
"""


def test_fastapi_uvicorn_db_is_layer_4(tmp_path: Path) -> None:
    (tmp_path / "fastapp.py").write_text(textwrap.dedent(FASTAPI_APP))
    port = free_port()
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "uvicorn",
            "--app-dir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "fastapp:app",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stop = threading.Event()
    clients: list[threading.Thread] = []
    try:
        wait_listening(port)
        clients = hammer(port, "/db", stop, workers=3)
        time.sleep(0.5)
        result = observe(proc.pid)
    finally:
        stop.set()
        for client in clients:
            client.join(15)
        stop_pid(proc)
    assert largest(result) == "L4", result.layers
    assert any("db" in f.evidence for f in result.layers.in_flight), result.layers  # type: ignore[union-attr]


# --- http.server ------------------------------------------------------------------------

HTTP_SERVER = """
import sqlite3, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        db = sqlite3.connect(":memory:")
        db.execute("create table t(x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(3000)])
        rows = db.execute(
            "select count(*) from t a, t b where a.x < 300 and b.x < 300 and a.x % 7 = b.x % 5"
        ).fetchall()
        body = str(rows).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("READY", server.server_address[1], flush=True)
server.serve_forever()
"""


def collect_under_load(  # type: ignore[no-untyped-def]
    proc,
    workers: int,
    seconds: float = 4.0,
    probes: tuple[str, ...] = ("threads", "stacks", "sockets"),
    lean: bool = False,
) -> Timeline:
    """`proc` (a `python_target` printing its port) collected while `workers` clients GET /."""
    stop = threading.Event()
    clients = hammer(int(proc.ready_line), "/", stop, workers=workers)
    try:
        time.sleep(0.5)
        return collect(proc.pid, seconds, probes=probes, lean=lean)
    finally:
        stop.set()
        for client in clients:
            client.join(15)


@pytest.mark.parametrize(
    ("probes", "lean"),
    [
        (("gil", "threads", "stacks", "sockets"), False),  # the walker, as on 3.11
        (("threads", "stacks", "sockets"), True),  # py-spy's windows at a shed 25 Hz
    ],
    ids=["walker", "pyspy-shed"],
)
def test_http_server_db_is_layer_4(python_target, probes, lean) -> None:  # type: ignore[no-untyped-def]
    # py-spy's windows (pre-fork workers, 3.14+): under two hogs and load shedding, 2 runs in
    # 8 ended with all three requests "code not visible" until a window ended where py-spy
    # stopped sampling rather than where it wrote its file (lifetimes.sampled_end).
    timeline = collect_under_load(python_target(HTTP_SERVER), 3, probes=probes, lean=lean)
    result = report.build(timeline.window())
    assert largest(result) == "L4", result.layers
    # A thread per request (HTTP/1.0 closes each connection): the L4 evidence names one.
    assert any(
        "process_request_thread" in (f.thread or "") or f.evidence.startswith("L4 db")
        for f in result.layers.in_flight
    ), result.layers  # type: ignore[union-attr]
    assert result.model == "threads"


SLEEP_PER_REQUEST_THREAD = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(0.2)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("READY", server.server_address[1], flush=True)
server.serve_forever()
"""


def test_a_thread_that_served_a_request_and_exited_is_not_in_flight(python_target) -> None:  # type: ignore[no-untyped-def]
    """A new thread per request, four clients, each one request at a time: never more than
    four in flight. py-spy keeps an exited thread's last stack until its recording ends, so
    every thread of the last second read as still in its handler (12 for 4 on werkzeug)."""
    timeline = collect_under_load(python_target(SLEEP_PER_REQUEST_THREAD), 4, seconds=3.0)
    result = report.build(timeline.window())
    assert result.layers is not None
    handlers = [f for f in result.layers.in_flight if f.layer == "L4"]
    served = {span.tid for window in timeline.window().stacks for span in window.spans}
    assert len(served) > 8, "the clients should have been served by many threads"
    assert 1 <= len(handlers) <= 4, result.layers.in_flight
    assert largest(result) == "L4", result.layers


# --- rules, pure ------------------------------------------------------------------------


def test_a_thread_missing_from_the_last_listing_is_not_in_flight() -> None:
    """The moment of the hog run that read 6 in flight for 4 clients, as data: listings at a
    shed 25 Hz, four threads in their handler at the last walk, two more whose handler spans
    end 10 and 25 ms before the last listing because they exited (the walker's next walk, or
    `lifetimes.clip`'s midpoint) — inside the 50 ms that bridges stack samples and listings."""
    rules, _ = load_rules(user_dir=None)
    server = "/usr/lib/python3.11/http/server.py"
    frames = (
        Frame("Handler.do_GET", "/srv/app.py", 7, code="time.sleep(0.2)"),
        Frame("BaseHTTPRequestHandler.handle_one_request", server, 424),
        Frame("BaseHTTPRequestHandler.handle", server, 436),
    )
    serving, exited = (11, 12, 13, 14), (21, 22)
    ends = {21: 9.99, 22: 9.975}  # the last listing is at 10.0, the last walk at 10.02
    spans = [StackSpan(tid, 9.85, 10.02, (0, 1, 2)) for tid in serving]
    spans += [StackSpan(tid, 9.8, ends[tid], (0, 1, 2)) for tid in exited]
    window = StacksWindow(10.02, 9.02, frames, tuple(spans), (), 600, 0, 100.0)

    def listing(t: float, tids: tuple[int, ...]) -> ThreadsSample:
        return ThreadsSample(t, tuple(ThreadStat(tid, "t", "S", 0, 230, 0) for tid in tids))

    threads = [listing(9.96, (1, *serving, *exited)), listing(10.0, (1, *serving))]
    stats = analyse([window], [], None, [], rules, 9.02, 10.02, threads)
    assert sorted(f.thread or 0 for f in stats.in_flight) == list(serving), stats.in_flight


def test_a_window_ends_where_pyspy_stopped_sampling() -> None:
    """The hog run that read all three requests "code not visible", as data: py-spy's last
    sample at 9.73, its file written at 10.0, and two request threads born in between
    (listings every 40 ms) that it never saw. Its stacks are evidence up to 9.73 only, and
    there the three threads it did see were in their handler. A thread it never saw but
    listed before 9.73 (not Python) cuts nothing; walker windows are not cut; a run stopped
    before its first sample covers nothing."""
    rules, _ = load_rules(user_dir=None)
    server = "/usr/lib/python3.11/http/server.py"
    frames = (
        Frame("Handler.do_GET", "/srv/app.py", 7, code="db.execute(QUERY)"),
        Frame("BaseHTTPRequestHandler.handle_one_request", server, 424),
    )
    seen = (11, 12, 13)
    spans = tuple(StackSpan(tid, 9.5, 10.0, (0, 1)) for tid in seen)
    window = StacksWindow(10.0, 9.0, frames, spans, (), 75, 0, 25.0, (), 9.73)

    def listing(t: float, tids: tuple[int, ...]) -> ThreadsSample:
        return ThreadsSample(t, tuple(ThreadStat(tid, "t", "S", 0, 230, 0) for tid in tids))

    native = (1, 5)  # 5: a native thread, born at 9.2
    threads = [listing(9.0 + 0.04 * i, (1, *seen)) for i in range(5)]
    threads += [listing(9.0 + 0.04 * i, (*native, *seen)) for i in range(5, 19)]  # to 9.72
    threads += [listing(9.76, (*native, *seen, 21)), listing(9.8, (*native, 21, 22))]
    threads += [listing(9.84 + 0.04 * i, (*native, 21, 22)) for i in range(5)]
    (cut,) = lifetimes.clip([window], threads)
    assert cut.t == 9.73 and all(span.end == 9.73 for span in cut.spans)
    stats = analyse([cut], [], None, [], rules, 9.0, 10.0, threads)
    assert sorted(f.thread or 0 for f in stats.in_flight) == list(seen), stats.in_flight
    assert {f.layer for f in stats.in_flight} == {"L4"}
    # the same threads under the walker (no `sampled_to`), and a run that sampled nothing
    assert lifetimes.clip([replace(window, sampled_to=None)], threads)[0].t == 10.0
    assert lifetimes.clip([replace(window, spans=())], threads)[0].t == 9.0
    # a thread that lived less than a sampling interval (40 ms) may fall between two samples
    brief = [*threads[:19], listing(9.76, (*native, *seen, 31)), listing(9.8, (*native, *seen))]
    assert lifetimes.clip([window], brief)[0].t == 10.0
    # still in the newest listing: alive to no known end, as good as a whole interval
    newest = [*threads[:19], listing(9.76, (*native, *seen, 41))]
    assert lifetimes.clip([window], newest)[0].t == 9.73
    # py-spy listed the new thread 21 (its span starts at 9.77): it was still sampling then
    late = replace(window, spans=(*spans, StackSpan(21, 9.77, 10.0, (0, 1))), sampled_to=9.77)
    assert lifetimes.clip([late], threads)[0].t == 9.77  # 22's birth: after 9.76
    # Nothing cut (the threads born after 9.73 each lived under an interval), and every thread
    # py-spy saw gone by the last listings: "now" is asked where py-spy last sampled, not in
    # the 0.27 s its file claims beyond that, where no thread it sampled was left.
    churn = [*threads[:19], listing(9.76, (*native, 11, 12, 13, 31)), listing(9.8, (*native, 32))]
    churn += [listing(9.84, (*native, 33)), listing(9.88, native)]
    (kept,) = lifetimes.clip([window], churn)
    assert kept.t == 10.0
    stats = analyse([kept], [], None, [], rules, 9.0, 10.0, churn)
    assert sorted(f.thread or 0 for f in stats.in_flight) == list(seen), stats.in_flight


def test_listings_past_the_stacks_end_still_say_who_is_gone() -> None:
    """The hog run that read 5 in flight for 4 clients, as data: the stacks end at 10.0 (a
    py-spy window cut where it stopped sampling) while listings go on to 10.06. Thread 21
    left after the 9.94 listing; its spans, cut at its exit (9.96), end inside the 50 ms
    that bridge stacks and listings. The last listing before 10.0 says it is gone."""
    rules, _ = load_rules(user_dir=None)
    server = "/usr/lib/python3.11/http/server.py"
    frames = (
        Frame("Handler.do_GET", "/srv/app.py", 7, code="time.sleep(0.2)"),
        Frame("BaseHTTPRequestHandler.handle_one_request", server, 424),
    )
    serving = (11, 12, 13, 14)
    spans = [StackSpan(tid, 9.8, 10.0, (0, 1)) for tid in serving]
    spans.append(StackSpan(21, 9.7, 10.0, (0, 1)))
    window = StacksWindow(10.0, 9.0, frames, tuple(spans), (), 100, 0, 25.0)

    def listing(t: float, tids: tuple[int, ...]) -> ThreadsSample:
        return ThreadsSample(t, tuple(ThreadStat(tid, "t", "S", 0, 230, 0) for tid in tids))

    threads = [listing(9.9, (1, *serving, 21)), listing(9.94, (1, *serving, 21))]
    threads += [listing(t, (1, *serving)) for t in (9.98, 10.02, 10.06)]
    (cut,) = lifetimes.clip([window], threads)
    stats = analyse([cut], [], None, [], rules, 9.0, 10.0, threads)
    assert sorted(f.thread or 0 for f in stats.in_flight) == list(serving), stats.in_flight


def test_in_flight_is_the_state_at_the_listing_not_just_after() -> None:
    """A hog run's last moment, as data: the last listing at 9.98 has four threads in do_GET
    (300 ms sleeps); their stacks go on to 10.02, back in handle_one_request reading the
    next request from 10.0. At 9.98 they were in their handler: the 50 ms after the listing
    only stand in for a thread whose stack was not sampled at it."""
    rules, _ = load_rules(user_dir=None)
    server = "/usr/lib/python3.11/http/server.py"
    frames = (
        Frame("Handler.do_GET", "/srv/app.py", 7, code="time.sleep(0.3)"),
        Frame("BaseHTTPRequestHandler.handle_one_request", server, 404),
        Frame("SocketIO.readinto", "/usr/lib/python3.11/socket.py", 706),
    )
    tids = (11, 12, 13, 14)
    spans = [StackSpan(tid, 9.7, 10.0, (0, 1)) for tid in tids]
    spans += [StackSpan(tid, 10.0, 10.02, (2, 1)) for tid in tids]
    window = StacksWindow(10.02, 9.02, frames, tuple(spans), (), 400, 0, 100.0)
    threads = [
        ThreadsSample(t, tuple(ThreadStat(tid, "t", "S", 0, 230, 0) for tid in (1, *tids)))
        for t in (9.94, 9.96, 9.98)
    ]
    stats = analyse([window], [], None, [], rules, 9.02, 10.02, threads)
    assert [f.layer for f in stats.in_flight] == ["L4"] * 4, stats.in_flight


def test_rules_classify_innermost_first_and_waits_inherit() -> None:
    rules, problems = load_rules(user_dir=None)
    assert problems == ()
    sleep_in_middleware = [
        Frame("sleep", "/usr/lib/python3.11/asyncio/tasks.py", 640),
        Frame("auth_middleware", "/srv/app/middleware.py", 12),
        Frame("Application._handle", "/venv/lib/python3.11/site-packages/aiohttp/web_app.py", 1),
    ]
    decision = classify(sleep_in_middleware, rules)
    assert decision is not None and decision.layer == "L3" and decision.wait == "sleep"
    db_in_handler = [
        Frame("orders", "/srv/app/views.py", 30, code="rows = cur.execute(QUERY).fetchall()"),
        Frame("auth_middleware", "/srv/app/middleware.py", 14),
    ]
    decision = classify(db_in_handler, rules)
    assert decision is not None and (decision.layer, decision.kind) == ("L4", "db")
    idle_loop = [
        Frame("EpollSelector.select", "/usr/lib/python3.11/selectors.py", 468),
        Frame("BaseEventLoop._run_once", "/usr/lib/python3.11/asyncio/base_events.py", 1884),
        Frame("main", "/srv/app/server.py", 80),
    ]
    assert classify(idle_loop, rules) is None


def test_bad_user_rule_file_is_named_and_builtins_still_work(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('[[rules]]\nlayer = "L3"\nfile = "x.py"\nkind = \n')
    (tmp_path / "worse.toml").write_text('[[rules]]\nlayer = "L9"\nfile = "x.py"\n')
    rules, problems = load_rules(user_dir=tmp_path)
    assert len(problems) == 2
    assert any("mine.toml" in p and "line 4" in p for p in problems), problems
    assert any("worse.toml" in p and "L0..L6" in p for p in problems), problems
    assert len(rules) >= 40


def test_user_rules_override_builtins(tmp_path: Path) -> None:
    (tmp_path / "ours.toml").write_text(
        '[[rules]]\nlayer = "L3"\nkind = "auth"\nfile = "/srv/app/views.py"\n'
    )
    rules, _ = load_rules(user_dir=tmp_path)
    frames = [Frame("orders", "/srv/app/views.py", 30, code="cur.execute(q)")]
    decision = classify(frames, rules)
    assert decision is not None and (decision.layer, decision.kind) == ("L3", "auth")
    assert decision.rule == "ours.toml#1"


@pytest.mark.parametrize("version", ["this", "3.14", "3.15"])
def test_aiohttp_slow_middleware_is_layer_3_from_parked_tasks(version: str) -> None:
    """Issue 9's truth: requests parked in a middleware's `await asyncio.sleep(0.2)` are read
    from the target's memory, counted at that await point, and make L3 the largest layer."""
    server = start_demo_server(
        port=0, flags=["--slow-middleware", "200"], python=python_for(version)
    )
    stop = threading.Event()
    clients = hammer(server.port, "/fast", stop, workers=4)
    try:
        time.sleep(0.5)
        result = report.build(
            collect(server.pid, 4.0, probes=("threads", "stacks", "sockets", "tasks")).window()
        )
    finally:
        stop.set()
        for client in clients:
            client.join(15)
        server.stop()
    assert result.layers is not None and result.layers.measured == "stacks+tasks"
    assert largest(result) == "L3", result.layers
    loop = result.loops[0]
    assert loop.task_source == "memory" and loop.tasks is not None
    # aiohttp parks each connection's task on its request's task ("RequestHandler.start →
    # task") and the request task in the middleware's sleep: both points are counted.
    points = {p.frame: p.count for p in loop.tasks.top_awaiting}
    parked = [n for frame, n in points.items() if "slow_middleware" in frame and "sleep" in frame]
    assert parked, points
    assert 2 <= parked[0] <= 4, points  # four clients, one request each at most


async def test_pick_a_gunicorn_worker_in_the_ui(gunicorn) -> None:  # type: ignore[no-untyped-def]
    """Attach to the master, press w, pick a worker: the app now watches that worker."""
    from textual.widgets import DataTable as Table

    from lifescope.target import python_children
    from lifescope.ui.app import LifescopeApp

    master, _ = gunicorn(workers=2)
    wait_for(lambda: len(python_children(master)) == 2, timeout=20)
    app = LifescopeApp(master)
    async with app.run_test(size=(100, 30)) as pilot:
        loop = __import__("asyncio").get_running_loop()
        deadline = loop.time() + 15
        while not app.processes_seen and loop.time() < deadline:
            await pilot.pause(0.2)
        await pilot.press("w")
        await pilot.pause(0.3)
        picker = app.screen.query_one("#workers", Table)
        assert picker.row_count == 3  # the master and its two workers
        # the aggregate columns are filled from what the master's collector saw
        rows = [[str(c) for c in picker.get_row_at(i)] for i in range(3)]
        assert [r[1] for r in rows] == ["master", "worker", "worker"]
        assert all(r[3].isdigit() and int(r[3]) >= 1 for r in rows), rows  # threads
        assert "workers:" in str(app.query_one("#header").render())
        picker.focus()
        picker.move_cursor(row=1)
        await pilot.press("enter")
        await pilot.pause(0.3)
        worker = python_children(master)[0]
        assert app.pid == worker
        header = app.query_one("#header")
        loop = __import__("asyncio").get_running_loop()
        deadline = loop.time() + 15
        while f"pid {worker}" not in str(header.render()) and loop.time() < deadline:
            await pilot.pause(0.2)
        assert f"pid {worker}" in str(header.render())
        await pilot.press("q")
