"""The Prometheus endpoint, scraped over HTTP, against the snapshot of the same window.

Fed from a real recording of the demo server (a Player at its end), so the values are what
a live collector would have served at that moment; compared with `to_json(build(window))`
for the same end and length.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lifescope.analysis import report
from lifescope.demo.children import start_demo_server, start_load
from lifescope.export import short_command
from lifescope.prometheus import (
    AddressError,
    MetricsExporter,
    check_host,
    metrics,
    parse_address,
)
from lifescope.recording import Recording, load
from lifescope.replay import Player
from lifescope.samples import GilRuns
from lifescope.timeline import Timeline
from tests.conftest import PYTHON
from tests.test_export import record_demo_session

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    path = tmp_path_factory.mktemp("prometheus") / "session.lsr"
    record_demo_session(path)
    rec = load(str(path))
    assert rec.problem is None
    yield rec


@pytest.fixture
def exporter() -> Iterator[list[MetricsExporter]]:
    started: list[MetricsExporter] = []
    yield started
    for one in started:
        one.stop()


def scrape(address: tuple[str, int]) -> str:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """{metric: {labels other than pid/command: value}}, and the pid/command labels seen."""
    out: Samples = {}
    base: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            labels = dict(sample.labels)
            ident = {"pid": labels.pop("pid"), "command": labels.pop("command")}
            assert base in ({}, ident), "every series names the same target"
            base = ident
            out.setdefault(sample.name, {})[tuple(sorted(labels.items()))] = sample.value
    return out, base


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


@pytest.mark.parametrize("window_s", [10.0, 2.0])
def test_scraped_values_equal_the_snapshot_of_the_same_window(
    recording: Recording, exporter: list[MetricsExporter], window_s: float
) -> None:
    player = Player(recording)
    player.seek(player.end)
    exp = MetricsExporter(player.timeline, window_s=window_s)
    exporter.append(exp)
    address = exp.start("127.0.0.1", 0)
    assert address[0] == "127.0.0.1" and address[1] > 0
    samples, base = parse(scrape(address))
    snap: Any = report.to_json(report.build(player.timeline.window(window_s, end=player.position)))

    target = snap["target"]
    assert base == {"pid": str(target["pid"]), "command": short_command(target["command"])}
    assert one(samples, "lifescope_window_seconds") == snap["window_s"]
    assert one(samples, "lifescope_target_up") == 1.0
    for name, probe in snap["probes"].items():
        healthy = probe["status"] in ("ok", "standby")
        assert one(samples, "lifescope_probe_ok", probe=name) == healthy

    gil = snap["gil"]
    assert gil["source"] == "memory"
    assert one(samples, "lifescope_gil_held_ratio") == gil["held_share"]
    for key, quantile in (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99")):
        value = one(samples, "lifescope_gil_hold_seconds", quantile=quantile)
        assert value == pytest.approx(gil["hold_ms"][key] / 1000, abs=1e-9)
    assert one(samples, "lifescope_gil_hold_max_seconds") == pytest.approx(
        gil["hold_ms"]["max"] / 1000, abs=1e-9
    )
    assert one(samples, "lifescope_gil_switches_per_second") == gil["switches_per_s"]
    assert one(samples, "lifescope_gil_waiting_threads") == gil["waiters_mean"]

    assert snap["event_loops"], "the demo server runs an asyncio loop"
    for loop in snap["event_loops"]:
        tid = str(loop["tid"])
        assert one(samples, "lifescope_loop_busy_ratio", tid=tid) == loop["busy_share"]
        assert one(samples, "lifescope_loop_stalls", tid=tid) == len(loop["stalls"])
        longest = max((s["duration_ms"] for s in loop["stalls"]), default=0.0)
        assert one(samples, "lifescope_loop_longest_stall_seconds", tid=tid) == pytest.approx(
            longest / 1000, abs=1e-9
        )

    conn = snap["connections"]
    assert conn["listen"], "the demo server listens"
    for lv in conn["listen"]:
        local = lv["local"]
        assert one(samples, "lifescope_listen_accept_queue", listener=local) == lv["accept_queue"]
        assert one(samples, "lifescope_listen_backlog", listener=local) == lv["backlog"]
        assert one(samples, "lifescope_listen_half_open", listener=local) == lv["half_open"]
        assert one(samples, "lifescope_listen_overflows", listener=local) == lv["overflows"]
    by_state = {dict(k)["state"]: v for k, v in samples["lifescope_connections"].items()}
    assert by_state == conn["by_state"]
    assert one(samples, "lifescope_target_open_fds") == conn["fds"]
    assert one(samples, "lifescope_target_max_fds") == conn["fd_limit"]

    if snap.get("layers") is not None:
        in_flight: dict[str, int] = {layer: 0 for layer in snap["layers"]}
        for request in snap["in_flight"]:
            in_flight[request["layer"]] += 1
        scraped = samples["lifescope_requests_in_flight"]
        assert {dict(k)["layer"]: v for k, v in scraped.items()} == in_flight
        shares = samples["lifescope_request_time_ratio"]
        assert {dict(k)["layer"]: v for k, v in shares.items()} == snap["layers"]
    else:  # a report without the layer engine: nothing is made up
        assert "lifescope_requests_in_flight" not in samples

    states: dict[str, int] = {}
    for thread in snap["threads"]:
        states[thread["state"]] = states.get(thread["state"], 0) + 1
    assert {dict(k)["state"]: v for k, v in samples["lifescope_threads"].items()} == states

    cost = snap["lifescope"]
    if cost["cpu_share"] is None:
        # CPU share is a difference of two cost samples (sent once a second); a short window
        # at the end of a recording made on a starved machine can hold only one of them.
        assert window_s < 10.0, "a 10 s window always holds several cost samples"
        assert "lifescope_collector_cpu_ratio" not in samples
    else:
        assert one(samples, "lifescope_collector_cpu_ratio") == cost["cpu_share"]
    assert one(samples, "lifescope_collector_resident_memory_bytes") == cost["rss_bytes"]


def test_unknown_numbers_are_absent_not_zero(recording: Recording) -> None:
    """Without the GIL probe's samples the report has no switch rate or hold times (null in
    the snapshot); the scrape then has no such series, rather than a made-up 0."""
    timeline = Timeline()
    for sample in recording.samples:
        if not isinstance(sample, GilRuns):
            timeline.add(sample)
    rep = report.build(timeline.window(10.0))
    snap: Any = report.to_json(rep)
    assert snap["gil"]["switches_per_s"] is None and snap["gil"]["hold_ms"] is None
    names = {family.name for family in metrics(rep)}
    assert "lifescope_gil_switches_per_second" not in names
    assert "lifescope_gil_hold_seconds" not in names
    assert "lifescope_gil_held_ratio" in names  # from py-spy dumps: still known


def test_scrapes_while_another_thread_feeds_samples(
    recording: Recording, exporter: list[MetricsExporter]
) -> None:
    """The collector's thread adds samples while scrapes run on the server's threads."""
    exp = MetricsExporter(window_s=2.0)
    exporter.append(exp)
    address = exp.start()
    assert scrape(address) == ""  # nothing observed yet: no series, not zeros
    samples = sorted(recording.samples, key=lambda s: getattr(s, "t", recording.start))
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for sample in samples:
                exp.add(sample)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    scrapes = 0
    while feeder.is_alive() or scrapes < 3:
        parse(scrape(address))
        scrapes += 1
    feeder.join()
    assert not errors
    final, _ = parse(scrape(address))
    assert exp.timeline.last_t == recording.end
    snap: Any = report.to_json(report.build(exp.timeline.window(2.0, end=recording.end)))
    assert one(final, "lifescope_gil_held_ratio") == snap["gil"]["held_share"]
    assert one(final, "lifescope_window_seconds") == snap["window_s"]


def test_stop_releases_the_port(exporter: list[MetricsExporter]) -> None:
    first = MetricsExporter()
    host, port = first.start("127.0.0.1", 0)
    first.stop()
    first.stop()  # twice is fine
    again = MetricsExporter()
    exporter.append(again)
    assert again.start(host, port) == (host, port)
    with pytest.raises(RuntimeError, match="already started"):
        again.start(host, 0)


def test_only_loopback_unless_allowed(exporter: list[MetricsExporter]) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.com"):
        with pytest.raises(AddressError, match="--prometheus-allow-remote"):
            check_host(host)
        check_host(host, allow_remote=True)
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        check_host(host)
    exp = MetricsExporter()
    exporter.append(exp)
    with pytest.raises(AddressError, match="not loopback"):
        exp.start("0.0.0.0", 0)
    assert exp._server is None  # refused before binding anything


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("localhost:9464", ("localhost", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:http", "[::1]9464", "127.0.0.1:70000", ""])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_busy_port_is_one_line_error(exporter: list[MetricsExporter]) -> None:
    first = MetricsExporter()
    exporter.append(first)
    host, port = first.start()
    second = MetricsExporter()
    with pytest.raises(AddressError, match="choose another port"):
        second.start(host, port)


# --------------------------------------------------------------- the collector's --prometheus


def _collector_serves_metrics() -> bool:
    import lifescope.collector

    return "--prometheus" in Path(lifescope.collector.__file__).read_text()


needs_collector_flag = pytest.mark.skipif(
    not _collector_serves_metrics(), reason="the collector has no --prometheus yet"
)


def _stderr_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    assert ready, "the collector printed nothing"
    return proc.stderr.readline().decode().strip()


@needs_collector_flag
def test_collector_serves_metrics_of_a_live_target() -> None:
    server = start_demo_server(port=0, flags=["--gil-hog"])
    load_gen = None
    collector = None
    try:
        load_gen = start_load(server.url, rate=20, concurrency=4, duration=60, mix="fast=1")
        collector = subprocess.Popen(
            [PYTHON, "-m", "lifescope.collector", str(server.pid),
             "--prometheus", "127.0.0.1:0", "--prometheus-window", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        line = _stderr_line(collector, 30)
        match = re.fullmatch(r"lifescope: metrics on http://(127\.0\.0\.1):(\d+)/metrics", line)
        assert match, line
        address = (match.group(1), int(match.group(2)))
        deadline = time.monotonic() + 30
        samples: Samples = {}
        base: dict[str, str] = {}
        while time.monotonic() < deadline:
            samples, base = parse(scrape(address))
            if "lifescope_gil_held_ratio" in samples and "lifescope_listen_backlog" in samples:
                break
            time.sleep(0.5)
        assert base["pid"] == str(server.pid)
        assert one(samples, "lifescope_gil_held_ratio") > 0.3  # the hog holds it
        listeners = {dict(k)["listener"] for k in samples["lifescope_listen_backlog"]}
        assert f"127.0.0.1:{server.port}" in listeners
        assert one(samples, "lifescope_window_seconds") <= 3.0
        assert collector.stdout is not None
        assert select.select([collector.stdout], [], [], 0)[0] == []  # no stream on stdout
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(15) == 0
        with pytest.raises(OSError):
            socket.create_connection(address, timeout=2).close()  # the port is released
    finally:
        if collector is not None and collector.poll() is None:
            collector.kill()
            collector.wait()
        if load_gen is not None:
            load_gen.stop()
        server.stop()


@needs_collector_flag
def test_collector_refuses_a_non_loopback_address() -> None:
    done = subprocess.run(
        [PYTHON, "-m", "lifescope.collector", str(os.getpid()), "--prometheus", "0.0.0.0:0"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    err = done.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "--prometheus-allow-remote" in err, err
