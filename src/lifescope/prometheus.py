"""The headline numbers as Prometheus metrics, for fleets watched by the systems they run.

lifescope is not a server: many hosts are aggregated by Prometheus, Grafana or an
OpenTelemetry collector scraping each host's headless collector (`--prometheus HOST:PORT`).
So the exporter computes nothing of its own. Each scrape cuts the last `window_s` seconds
(default 10) from a `Timeline` the collector feeds and runs `analysis.report.build` on it —
the same function behind the panes and `snapshot --json` — so a scraped value is the
`lifescope.snapshot/1` value of the same window, and a test checks exactly that.

Metrics are gauges over that window, labelled by `pid` and `command` (shortened, see
`export.short_command`). A number the report does not have (null in the snapshot) is left
out of the scrape rather than sent as 0: an absent series is Prometheus's "unknown".
In-flight requests by layer are exported when the report has layers (`Report.layers`).

The endpoint listens on loopback unless the caller says otherwise on purpose
(`allow_remote=True`, the collector's `--prometheus-allow-remote`): the labels carry the
target's command line, and scraping costs the collector CPU.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from lifescope.analysis.report import ConnectionsView, Report, build
from lifescope.demo.children import LOOPBACK_HELP, is_loopback_host
from lifescope.export import short_command
from lifescope.samples import HEALTHY, Sample
from lifescope.timeline import Timeline, Window

DEFAULT_WINDOW_S = 10.0
DEFAULT_HOST = "127.0.0.1"
COMMAND_LABEL_CHARS = 60
ALLOW_REMOTE_FLAG = "--prometheus-allow-remote"

BASE_LABELS = ("pid", "command")


class AddressError(ValueError):
    """A `--prometheus` address that cannot or must not be served; one line, with the fix."""


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` → (host, port); no host means loopback.

    An empty host means "every interface" to the HTTP server underneath, so it is mapped to
    127.0.0.1 here rather than passed on.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise AddressError(f"bad --prometheus address {text!r}: use [::1]:9464")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = "", text
    try:
        port = int(port_text)
    except ValueError:
        raise AddressError(
            f"bad --prometheus address {text!r}: the port must be a number, e.g. 127.0.0.1:9464"
        ) from None
    if not 0 <= port <= 65535:
        raise AddressError(f"bad --prometheus port {port}: use 0–65535")
    return host or DEFAULT_HOST, port


def check_host(host: str, allow_remote: bool = False) -> None:
    """Refuse a non-loopback bind unless the user asked for it by flag."""
    if allow_remote or is_loopback_host(host):
        return
    raise AddressError(
        f"refusing to serve metrics on {host!r}: not loopback ({LOOPBACK_HELP}); the metrics "
        f"name the target's command line — pass {ALLOW_REMOTE_FLAG} to expose them anyway"
    )


class _Families:
    """Gauge families of one scrape, each carrying the pid and command labels."""

    def __init__(self, base: tuple[str, str]) -> None:
        self.base = base
        self.families: dict[str, GaugeMetricFamily] = {}

    def set(
        self,
        name: str,
        doc: str,
        value: float | None,
        **labels: str,
    ) -> None:
        if value is None:
            return  # unknown: no sample, never a made-up 0
        family = self.families.get(name)
        if family is None:
            family = GaugeMetricFamily(name, doc, labels=[*BASE_LABELS, *labels])
            self.families[name] = family
        family.add_metric([*self.base, *labels.values()], float(value))


def metrics(rep: Report) -> list[Metric]:
    """The report's headline numbers as gauge families (pure: also used by the tests)."""
    pid = "" if rep.pid is None else str(rep.pid)
    out = _Families((pid, short_command(rep.command or "", COMMAND_LABEL_CHARS)))
    out.set("lifescope_window_seconds", "Length of the window the other metrics cover.",
            rep.window_s)  # fmt: skip
    out.set("lifescope_target_up", "1 while the target runs, 0 once it exited.",
            0 if rep.gone else 1)  # fmt: skip
    for probe in rep.probes:
        out.set("lifescope_probe_ok", "1 when the probe works, 0 when degraded, denied, "
                "unavailable or gone (see `lifescope doctor`).",
                1 if probe.status in HEALTHY else 0, probe=probe.name)  # fmt: skip

    g = rep.gil
    out.set("lifescope_gil_held_ratio", "Share of the window the GIL was held (0..1).",
            g.held_share)  # fmt: skip
    hold_doc = ("GIL hold durations over the window by quantile (holds that ended in it; "
                "resolution one GIL read, 0.5 ms at 2 kHz).")  # fmt: skip
    hold_ms = dict(g.hold_ms)
    for key, quantile in (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99")):
        value = hold_ms.get(key)
        out.set("lifescope_gil_hold_seconds", hold_doc,
                None if value is None else round(value / 1000, 6), quantile=quantile)  # fmt: skip
    longest = hold_ms.get("max")
    out.set("lifescope_gil_hold_max_seconds", "Longest GIL hold that ended in the window.",
            None if longest is None else round(longest / 1000, 6))  # fmt: skip
    out.set("lifescope_gil_switches_per_second", "GIL hand-overs per second over the window.",
            g.switches_per_s)  # fmt: skip
    out.set("lifescope_gil_waiting_threads", "Mean number of threads waiting for the GIL.",
            g.waiters_mean)  # fmt: skip

    for loop in rep.loops:
        tid = str(loop.tid)
        out.set("lifescope_loop_busy_ratio", "Share of the window the event loop was not "
                "waiting in its selector.", loop.busy_share, tid=tid)  # fmt: skip
        out.set("lifescope_loop_stalls", "Callbacks that held the event loop over 100 ms, "
                "in the window.", len(loop.stalls), tid=tid)  # fmt: skip
        out.set("lifescope_loop_longest_stall_seconds", "Longest event-loop stall in the "
                "window (0 when there was none).",
                round(max((s.duration_ms for s in loop.stalls), default=0.0) / 1000, 4),
                tid=tid)  # fmt: skip

    conn = rep.connections
    for local, (queue, backlog, half_open, overflows) in _listeners(conn).items():
        out.set("lifescope_listen_accept_queue", "Connections waiting in the listener's "
                "accept queue.", queue, listener=local)  # fmt: skip
        out.set("lifescope_listen_backlog", "The listener's accept-queue limit.", backlog,
                listener=local)  # fmt: skip
        out.set("lifescope_listen_half_open", "Handshakes in progress (SYN_RECV) on the "
                "listener's port.", half_open, listener=local)  # fmt: skip
        out.set("lifescope_listen_overflows", "Connections the listener turned away over the "
                "window (its own sk_drops; the namespace's ListenOverflows where that is "
                "unavailable).", overflows, listener=local)  # fmt: skip
    for state, n in conn.by_state:
        out.set("lifescope_connections", "The target's sockets by TCP state.", n, state=state)
    out.set("lifescope_keepalive_idle", "Client connections idle between requests (L6 "
            "keep-alive).", conn.keepalive_idle)  # fmt: skip
    out.set("lifescope_target_open_fds", "File descriptors the target has open.", conn.fds)
    out.set("lifescope_target_max_fds", "The target's fd limit (RLIMIT_NOFILE).", conn.fd_limit)

    layers = getattr(rep, "layers", None)  # reports before the layer engine have none
    if layers is not None:
        now = Counter(f.layer for f in layers.in_flight)
        for layer, share in layers.shares:
            # Every layer the engine reports on: 0 in flight is a measured 0, not unknown.
            # (Idle keep-alives are connections, not requests: lifescope_keepalive_idle.)
            out.set("lifescope_requests_in_flight", "Requests in flight now, by the layer "
                    "they are in (L0 handshake … L5 write; unknown when their code is "
                    "not visible).", now.get(layer, 0), layer=layer)  # fmt: skip
            out.set("lifescope_request_time_ratio", "Share of in-flight request time spent "
                    "in each layer over the window.", share, layer=layer)  # fmt: skip

    states: dict[str, int] = {}
    for thread in rep.threads:
        states[thread.state] = states.get(thread.state, 0) + 1
    for state, n in sorted(states.items()):
        out.set("lifescope_threads", "The target's threads by what they do now (python, "
                "native, gil-wait, io, lock, sleep, other).", n, state=state)  # fmt: skip

    for proc in getattr(rep, "processes", ()):  # a pre-fork server's master and workers
        labels = {"process_pid": str(proc.pid), "role": proc.role}
        out.set("lifescope_process_cpu_ratio", "CPU of each process of a pre-fork server over "
                "the window, as a fraction of one core.", proc.cpu_share, **labels)  # fmt: skip
        out.set("lifescope_process_connections", "Established connections each process of a "
                "pre-fork server owns.", proc.connections, **labels)  # fmt: skip
        out.set("lifescope_process_resident_memory_bytes", "Resident memory of each process "
                "of a pre-fork server.", proc.rss_bytes, **labels)  # fmt: skip

    out.set("lifescope_collector_cpu_ratio", "CPU used by lifescope's collector and py-spy, "
            "as a fraction of one core.", rep.cost.cpu_share)  # fmt: skip
    out.set("lifescope_collector_resident_memory_bytes", "Resident memory of lifescope's "
            "collector.", rep.cost.rss_bytes)  # fmt: skip
    return list(out.families.values())


def _listeners(
    conn: ConnectionsView,
) -> dict[str, tuple[int, int, int, int | None]]:
    """Listeners keyed by address. SO_REUSEPORT gives one address several sockets; their
    queues and backlogs are summed, since one series per label set is all Prometheus takes."""
    merged: dict[str, tuple[int, int, int, int | None]] = {}
    for lv in conn.listen:
        seen = merged.get(lv.local)
        if seen is None:
            merged[lv.local] = (lv.accept_queue, lv.backlog, lv.half_open, lv.overflows)
        else:
            merged[lv.local] = (seen[0] + lv.accept_queue, seen[1] + lv.backlog, seen[2],
                                seen[3])  # fmt: skip
    return merged


class _ReportCollector(Collector):
    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        rep = self.exporter.report()
        if rep is not None:
            yield from metrics(rep)


class MetricsExporter:
    """Serves `/metrics` from a timeline that another thread keeps feeding.

    The collector's main loop calls `add(sample)` for every sample it writes; scrapes arrive
    on the HTTP server's threads. Both take `lock` — held only to add a sample or to cut the
    window (which copies it into immutable tuples); the report is built outside the lock, so
    a slow scrape never holds up sampling.
    """

    def __init__(self, timeline: Timeline | None = None, window_s: float = DEFAULT_WINDOW_S) -> (
        None
    ):  # fmt: skip
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        # Our own timeline only needs the window (plus slack): bounded memory for a daemon.
        self.timeline = timeline if timeline is not None else Timeline(horizon_s=window_s + 5)
        self.lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ReportCollector(self))
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.timeline.add(sample)

    def window(self) -> Window | None:
        """The last `window_s` seconds, ending at the newest sample (None before any)."""
        with self.lock:
            if self.timeline.last_t is None:
                return None
            return self.timeline.window(self.window_s, end=self.timeline.last_t)

    def report(self) -> Report | None:
        window = self.window()
        return None if window is None else build(window)

    def start(
        self, host: str = DEFAULT_HOST, port: int = 0, *, allow_remote: bool = False
    ) -> tuple[str, int]:
        """Listen on host:port (port 0: any free one); returns the bound address."""
        if self._server is not None:
            raise RuntimeError("exporter already started")
        check_host(host, allow_remote)
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise AddressError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror} — choose another port"
            ) from exc
        self._server, self._thread = server, thread
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def stop(self) -> None:
        """Stop serving and release the port (safe to call twice)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
