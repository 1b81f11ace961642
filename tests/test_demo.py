"""Real-process tests of the demo target, the load generator and the child-process helpers.

Everything here runs real processes on loopback; nothing is mocked, because what lifescope later
observes (thread names in /proc, listen backlogs, stalls of the event loop) only exists in a real
process. Every process a test starts is stopped by pid in a fixture or ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from lifescope.demo.children import (
    DemoServer,
    check_loopback_url,
    format_mix,
    is_loopback_host,
    start_demo_server,
    start_load,
)
from lifescope.demo.load import LoadResult, _percentile, parse_mix, run_load
from tests.conftest import wait_for

# ------------------------------------------------------------------------------------- helpers


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes, float]:
    """GET with a fresh connection; returns (status, body, seconds)."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body = exc.read()
        status = exc.code
    return status, body, time.perf_counter() - started


def get_json(url: str) -> dict[str, Any]:
    status, body, _ = get(url)
    assert status == 200, body
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def thread_comms(pid: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue
    return out


def thread_cpu_seconds(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def gone(pid: int) -> bool:
    """True if no process (not even a zombie) has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def demo_children() -> list[psutil.Process]:
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("lifescope.demo" in part for part in child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    srv = start_demo_server()
    try:
        yield srv
    finally:
        srv.stop()
    assert gone(srv.pid)


@pytest.fixture(autouse=True)
def no_leaked_children(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test must stop what it starts; the module-scoped server is the only allowed survivor."""
    before = {p.pid for p in demo_children()}
    yield
    leaked = [p for p in demo_children() if p.pid not in before]
    for proc in leaked:  # clean up by pid so one failure does not cascade, then fail loudly
        proc.kill()
        proc.wait(5)
    assert not leaked, f"test left demo processes running: {[p.pid for p in leaked]}"


# ------------------------------------------------------------------------------------- routes


def test_ready_line_gives_real_port(server: DemoServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.running
    assert psutil.Process(server.pid).is_running()
    # "READY <port> <control-port>": the toggles' own loopback listener (see test_toggles.py).
    assert server.stdout_tail(1) == [f"READY {server.port} {server.control_port}"]
    assert server.control_port not in (0, server.port)
    assert server.control_url == f"http://127.0.0.1:{server.control_port}"


def test_load_child_prints_ready_with_its_control_port(server: DemoServer) -> None:
    lg = start_load(server.url, rate=5, duration=1)
    try:
        assert lg.control_port > 0
        assert lg.wait(30) == 0
    finally:
        lg.stop()
    lines = lg.stdout_tail()
    assert lines[0] == f"READY {lg.control_port}" and lines[-1].startswith("requests=")


def test_fast(server: DemoServer) -> None:
    assert get_json(server.url + "/fast") == {"route": "fast", "ok": True}


def test_health(server: DemoServer) -> None:
    status, body, _ = get(server.url + "/health")
    assert (status, body) == (200, b"ok")


def test_db_returns_aggregate_rows(server: DemoServer) -> None:
    data = get_json(server.url + "/db")
    assert data["route"] == "db"
    rows = data["rows"]
    assert {r["region"] for r in rows} == {"north", "south", "east", "west"}
    assert sum(r["orders"] for r in rows) == 6_000  # every order lands in exactly one day bucket
    assert all(r["revenue"] > 0 for r in rows)
    assert data["query_ms"] > 0


def test_db_runs_in_named_executor_threads(server: DemoServer) -> None:
    get_json(server.url + "/db")
    names = set(thread_comms(server.pid).values())
    assert any(n.startswith("db-executor_") for n in names), names


def test_block_blocks_the_loop(server: DemoServer) -> None:
    status, body, elapsed = get(server.url + "/block?ms=300")
    assert status == 200
    assert json.loads(body) == {"route": "block", "blocked_ms": 300}
    assert elapsed >= 0.29

    # The point of the route: while it sleeps, nothing else on the loop is served.
    results: dict[str, float] = {}

    def hit_block() -> None:
        results["block"] = get(server.url + "/block?ms=1000")[2]

    blocker = threading.Thread(target=hit_block)
    blocker.start()
    try:
        time.sleep(0.2)  # let the blocking request reach the server first
        status, _, fast_elapsed = get(server.url + "/fast")
    finally:
        blocker.join(10)
    assert status == 200
    assert fast_elapsed >= 0.5, "a /fast request was served while the loop was blocked"
    assert results["block"] >= 0.99


def test_block_default_is_300ms(server: DemoServer) -> None:
    status, body, elapsed = get(server.url + "/block")
    assert status == 200 and json.loads(body)["blocked_ms"] == 300
    assert elapsed >= 0.29


def test_sleep_does_not_block_the_loop(server: DemoServer) -> None:
    results: dict[str, tuple[int, bytes, float]] = {}

    def hit_sleep() -> None:
        results["sleep"] = get(server.url + "/sleep?ms=1000")

    sleeper = threading.Thread(target=hit_sleep)
    sleeper.start()
    try:
        time.sleep(0.2)
        status, _, fast_elapsed = get(server.url + "/fast")
    finally:
        sleeper.join(10)
    assert status == 200 and fast_elapsed < 0.5  # a blocked loop would hold it ~0.8 s
    sleep_status, sleep_body, sleep_elapsed = results["sleep"]
    assert sleep_status == 200
    assert json.loads(sleep_body) == {"route": "sleep", "slept_ms": 1000}
    assert sleep_elapsed >= 0.99


def test_cpu_burns_about_ms(server: DemoServer) -> None:
    status, body, elapsed = get(server.url + "/cpu?ms=50")
    assert status == 200
    data = json.loads(body)
    assert data["route"] == "cpu" and data["ms"] == 50 and isinstance(data["result"], int)
    assert 0.049 <= elapsed < 2.0


def test_bigjson_is_large_and_valid(server: DemoServer) -> None:
    status, body, _ = get(server.url + "/bigjson")
    assert status == 200
    assert len(body) > 2_000_000
    data = json.loads(body)
    assert data["route"] == "bigjson" and data["n"] == len(data["items"])
    small = get_json(server.url + "/bigjson?n=3")
    assert [item["id"] for item in small["items"]] == [0, 1, 2]


@pytest.mark.parametrize(
    "path", ["/block?ms=abc", "/block?ms=-1", "/cpu?ms=999999999", "/bigjson?n=99999999"]
)
def test_bad_parameters_are_rejected(server: DemoServer, path: str) -> None:
    status, _, elapsed = get(server.url + path)
    assert status == 400
    assert elapsed < 1.0


def test_unknown_route_is_404(server: DemoServer) -> None:
    assert get(server.url + "/nope")[0] == 404


# ------------------------------------------------------------------------------------- flags


def test_gil_hog_thread_is_visible_and_busy() -> None:
    # CPython < 3.14 never writes thread names to /proc comm; the server does it via prctl so
    # that outside observers (lifescope, top -H) can tell the hog apart.
    srv = start_demo_server(flags=["--gil-hog"])
    try:
        comms = thread_comms(srv.pid)
        hogs = [tid for tid, name in comms.items() if name == "gil-hog"]
        assert len(hogs) == 1, comms
        # Busy: of the server's CPU, the hog takes most. (Not "0.3 s in the next second": on a
        # busy machine the whole server may get less than that.)
        hog_before = thread_cpu_seconds(srv.pid, hogs[0])
        process = psutil.Process(srv.pid)
        all_before = sum(process.cpu_times()[:2])
        wait_for(lambda: thread_cpu_seconds(srv.pid, hogs[0]) - hog_before >= 0.3, timeout=15)
        hog_used = thread_cpu_seconds(srv.pid, hogs[0]) - hog_before
        all_used = sum(process.cpu_times()[:2])
        assert hog_used >= 0.8 * (all_used - all_before), (hog_used, all_used - all_before)
        # The server still answers, just more slowly: the point of the demo.
        assert get(srv.url + "/fast")[0] == 200
    finally:
        srv.stop()
    assert gone(srv.pid)


def test_no_gil_hog_without_flag(server: DemoServer) -> None:
    assert "gil-hog" not in thread_comms(server.pid).values()


def test_slow_middleware_delays_handlers_but_not_health() -> None:
    srv = start_demo_server(flags=["--slow-middleware", "250"])
    try:
        status, _, elapsed = get(srv.url + "/fast")
        assert status == 200 and elapsed >= 0.24
        status, _, elapsed = get(srv.url + "/health")
        assert status == 200 and elapsed < 0.2
    finally:
        srv.stop()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss(8) to read a listen backlog")
def test_backlog_reaches_the_listen_socket() -> None:
    srv = start_demo_server(flags=["--backlog", "7"])
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{srv.port}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.split()
        # State Recv-Q Send-Q ...; for a LISTEN socket Send-Q is the backlog.
        assert out[0] == "LISTEN" and out[2] == "7", out
    finally:
        srv.stop()


def test_server_refuses_non_loopback_bind() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lifescope.demo.server", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "non-loopback" in proc.stderr and proc.stdout == ""


# ---------------------------------------------------------------------------- process lifecycle


def test_sigterm_exits_zero_quickly_with_request_in_flight() -> None:
    srv = start_demo_server(flags=["--gil-hog"])
    try:

        def hold_a_request() -> None:
            # The server closes the connection as it shuts down: an OSError is the expected end.
            with contextlib.suppress(OSError):
                get(srv.url + "/sleep?ms=5000")

        client = threading.Thread(target=hold_a_request, daemon=True)
        client.start()
        time.sleep(0.3)
        started = time.monotonic()
        os.kill(srv.pid, signal.SIGTERM)
        code = srv.proc.wait(5)
        took = time.monotonic() - started
        client.join(5)
    finally:
        srv.stop()
    assert code == 0
    assert took < 1.5


def test_sigint_exits_zero() -> None:
    srv = start_demo_server()
    try:
        os.kill(srv.pid, signal.SIGINT)
        code = srv.proc.wait(5)
    finally:
        srv.stop()
    assert code == 0


def test_stop_is_idempotent_and_leaves_nothing() -> None:
    srv = start_demo_server()
    pid = srv.pid
    assert srv.stop() == 0
    assert srv.stop() == 0
    assert gone(pid)
    assert not psutil.pid_exists(pid)
    assert not srv.running


def test_stop_escalates_to_sigkill() -> None:
    srv = start_demo_server()
    try:
        os.kill(srv.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
        started = time.monotonic()
        code = srv.stop(timeout=0.5)
        assert code == -signal.SIGKILL
        assert time.monotonic() - started < 3.0
    finally:
        srv.stop()
    assert gone(srv.pid)


def test_context_manager_stops_the_server() -> None:
    with start_demo_server() as srv:
        assert get(srv.url + "/health")[0] == 200
    assert gone(srv.pid)


def test_children_get_no_stdin() -> None:
    with start_demo_server() as srv:
        stdin = os.readlink(f"/proc/{srv.pid}/fd/0")
    assert stdin == "/dev/null"


def test_failed_start_raises_with_stderr_and_reaps() -> None:
    with pytest.raises(RuntimeError, match="--backlog") as info:
        start_demo_server(flags=["--backlog", "0"])
    assert "exited before printing READY" in str(info.value)


def test_port_in_use_raises() -> None:
    with start_demo_server() as srv, pytest.raises(RuntimeError, match="READY"):
        start_demo_server(port=srv.port, timeout=10)


def test_ready_timeout_kills_the_child(tmp_path: Path) -> None:
    # A "python" that never prints READY: the helper must give up on time and kill it.
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not print READY"):
        start_demo_server(python=str(fake), timeout=1.0)
    assert time.monotonic() - started < 5.0


def test_server_dies_with_its_parent() -> None:
    # An intermediate parent starts a server, then is SIGKILLed: PR_SET_PDEATHSIG must end it.
    script = textwrap.dedent(
        """
        import sys, time
        from lifescope.demo.children import start_demo_server
        srv = start_demo_server()
        print(srv.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid = -1
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                    break  # dead; reaping is up to whoever adopted it
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        else:
            pytest.fail("demo server outlived its parent")
    finally:
        parent.kill()
        parent.wait(5)
        if server_pid > 0:
            with contextlib.suppress(psutil.NoSuchProcess):
                orphan = psutil.Process(server_pid)
                if "lifescope.demo.server" in " ".join(orphan.cmdline()):
                    orphan.kill()


# ---------------------------------------------------------------------------------- load: rules


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "http://10.0.0.1:8080",
        "http://192.168.1.10/fast",
        "http://[2001:db8::1]:80/",
        "http://[::ffff:8.8.8.8]/",
        "http://127.0.0.1.nip.io/",
        "ftp://127.0.0.1/",
    ],
)
def test_load_cli_refuses_non_loopback(url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lifescope.demo.load", "--url", url, "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing" in lines[0], proc.stderr
    with pytest.raises(ValueError, match="refusing"):
        start_load(url, duration=1)
    with pytest.raises(ValueError, match="refusing"):
        asyncio.run(run_load(url, duration=1))


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("128.0.0.1", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, ok: bool) -> None:
    assert is_loopback_host(host) is ok


def test_check_loopback_url_returns_host() -> None:
    assert check_loopback_url("http://[::1]:8080/x") == "::1"
    assert check_loopback_url("https://localhost") == "localhost"


def test_parse_mix() -> None:
    assert parse_mix("fast=5, db=2,block=0,/block?ms=100=1") == [
        ("/fast", 5.0),
        ("/db", 2.0),
        ("/block?ms=100", 1.0),
    ]
    assert parse_mix({"sleep": 1}) == [("/sleep", 1.0)]
    for bad in ("fast", "fast=x", "fast=-1", "fast=0", "", "=3"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    assert format_mix({"fast": 5, "db": 2.5}) == "fast=5,db=2.5"


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _percentile(values, 50) == 50.0
    assert _percentile(values, 99) == 99.0
    assert _percentile(values, 100) == 100.0
    assert _percentile([], 50) == 0.0


# ---------------------------------------------------------------------------------- load: runs


def test_load_child_short_run(server: DemoServer) -> None:
    lg = start_load(server.url, rate=50, concurrency=8, duration=2)
    try:
        code = lg.wait(30)
    finally:
        lg.stop()
    assert code == 0, lg.stderr_tail()
    fields = lg.summary_fields()
    assert lg.summary is not None and len(lg.summary.splitlines()) == 1
    assert fields["requests"] > 0
    assert fields["errors"] == 0
    assert 60 <= fields["requests"] <= 110  # 50 req/s for 2 s, paced
    assert fields["p99_ms"] >= fields["p50_ms"] > 0
    assert gone(lg.pid)


def test_load_child_stops_on_sigterm_with_summary(server: DemoServer) -> None:
    lg = start_load(server.url, rate=100, concurrency=4, duration=0, mix="fast=1,sleep=1")
    try:
        time.sleep(1.5)
        started = time.monotonic()
        code = lg.stop()
        took = time.monotonic() - started
    finally:
        lg.stop()
    assert code == 0 and took < 2.0
    assert lg.summary is not None and "stopped_by=stop" in lg.summary
    assert lg.summary_fields()["requests"] > 0
    assert gone(lg.pid)


def test_run_load_in_process_respects_max_requests(server: DemoServer) -> None:
    result = asyncio.run(
        run_load(server.url, rate=0, concurrency=4, duration=10, max_requests=25, mix="fast=1")
    )
    assert isinstance(result, LoadResult)
    assert result.requests == 25 and result.errors == 0
    assert result.stopped_by == "max_requests"
    assert result.statuses == ((200, 25),)
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    with pytest.raises(AttributeError):
        result.requests = 0  # type: ignore[misc]


def test_run_load_counts_http_errors(server: DemoServer) -> None:
    result = asyncio.run(
        run_load(server.url, rate=0, concurrency=2, duration=10, max_requests=6, mix="nope=1")
    )
    assert result.requests == 6 and result.errors == 6
    assert result.error_kinds == (("http_404", 6),)


def test_run_load_counts_connection_errors() -> None:
    # A port nobody listens on: the run must finish, counting failures, not raise.
    with start_demo_server() as srv:
        dead_url = srv.url
    result = asyncio.run(run_load(dead_url, rate=0, concurrency=2, duration=5, max_requests=4))
    assert result.requests == 4 and result.errors == 4
    assert result.p50_ms == 0.0


def test_run_load_stops_on_event(server: DemoServer) -> None:
    async def scenario() -> LoadResult:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await run_load(server.url, rate=100, duration=0, mix="fast=1", stop=stop)

    started = time.monotonic()
    result = asyncio.run(scenario())
    assert time.monotonic() - started < 2.0
    assert result.stopped_by == "stop" and result.requests > 0


def test_run_load_mix_is_interleaved(server: DemoServer) -> None:
    # block=1 among fast=3: one request in four blocks the loop for 100 ms. Smooth round-robin
    # spreads them out, so 8 requests at concurrency 1 take about 2 x 100 ms.
    started = time.monotonic()
    result = asyncio.run(
        run_load(
            server.url,
            rate=0,
            concurrency=1,
            duration=10,
            max_requests=8,
            mix="fast=3,/block?ms=100=1",
        )
    )
    elapsed = time.monotonic() - started
    assert result.requests == 8 and result.errors == 0
    assert 0.19 <= elapsed < 2.0
