"""The UI: attach to every pane populated, render time per refresh, keypress-to-screen latency.

    python bench/bench_ui.py [--quick] [--connections 10000] [--threads 200] [--attaches 3]
                             [--refreshes 12] [--presses 8] [--timeout 20]

Method: the real ``LifescopeApp(pid)`` driven headless by Textual's Pilot, in this process,
with its real collector child, against two targets:

* ``demo``: the demo server under the demo's default route mix at 50 req/s (what
  ``lifescope demo`` shows);
* ``scale``: a target holding ``--connections`` established loopback connections (a listener
  that accepted them from a separate client process) and ``--threads`` threads that wake
  every 50–150 ms to run a little Python — the issue's "10k connections, 200 threads". Both
  processes raise RLIMIT_NOFILE to its hard limit (20000 here); the client closes with
  SO_LINGER 0 first, so no TIME_WAIT is left behind.

Numbers:

* **attach → populated**: from constructing ``LifescopeApp(pid)`` (the collector is spawned
  on mount) until all four panes have rows in their table and none says "waiting for
  samples…", polled every 20 ms under Pilot; each pane's own time too. New app per attach.
* **render per refresh**: ``app.refresh_views`` and ``app._show`` wrapped (in this bench
  only) to time every timer-driven refresh. *UI thread per refresh* is the time the UI's
  event loop was busy for it: the call itself, plus — when the app builds its reports on the
  analysis thread (it does once a build took over 30 ms) — the ``_show`` that puts the
  report into the widgets. Then the screen update that follows (layout + compositor:
  ``Screen._on_timer_update`` wrapped at class level, counted only when something was
  dirty); the time from the start of the refresh to the end of that paint; and the analysis
  alone (``analysis.build`` over the same window), which runs off the UI thread when slow.
* **keypress → screen**: the key event Pilot sends for ``p`` is posted to the app's driver
  directly — ``pilot.press`` adds two 20 ms+ wait-for-idle pauses — and timed until a screen
  update has composited a header saying ``PAUSED``; then ``p`` again until ``● live``.
  Presses are spaced at random so they land anywhere in the refresh cycle.
* **probe refresh at scale**: ``SocketsProbe.read_once()`` on the scale target from this
  process (with and without the once-a-second fd→inode refresh), its stream encoding, and
  ``ThreadsProbe.read_once()`` with the rate it adapts to; then sockets, threads, stacks and
  gil each alone in a real collector on the scale target for ``--probe-seconds``: CPU (tree)
  and achieved rate.

Full run ≈ 2 min (three attaches to the demo, two — 80×24 and 200×60 — to the scale target,
each given ``--timeout`` 20 s to populate); ``bench/results/ui.json`` and a table. ``--quick``
(1,000 connections, 20 threads, one attach each, < 20 s) asserts only that numbers came out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import _harness as h
from textual import events
from textual.screen import Screen
from textual.widgets import DataTable, Static

from lifescope import stream
from lifescope.analysis import report as analysis
from lifescope.demo.children import start_demo_server, start_load
from lifescope.probes.sockets import SocketsProbe
from lifescope.probes.threads import ThreadsProbe, rate_for
from lifescope.samples import GilRuns, SocketsSample, StacksWindow, ThreadsSample
from lifescope.target import resolve
from lifescope.ui import app as app_module
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane

PANES = ("connections", "layers", "threads", "gil")

SCALE_TARGET = """
import resource, socket, sys, threading, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n_threads = int(sys.argv[1])
lst = socket.socket()
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", 0))
lst.listen(4096)
conns = []

def acceptor():
    while True:
        conn, _ = lst.accept()
        conns.append(conn)

def worker(i):
    wake = threading.Event()
    x = 0
    while True:
        wake.wait(0.05 + (i % 11) * 0.01)
        for _ in range(300):
            x = (x * 31 + 7) % 1000003

threading.Thread(target=acceptor, name="acceptor", daemon=True).start()
for i in range(n_threads):
    threading.Thread(target=worker, args=(i,), name=f"worker-{i}", daemon=True).start()
print("READY", lst.getsockname()[1], flush=True)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    time.sleep(0.5)
"""

SCALE_CLIENT = """
import resource, socket, struct, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
linger0 = struct.pack("ii", 1, 0)
socks = []
for start in range(0, n, 500):
    for _ in range(min(500, n - start)):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)  # RST on close: no TIME_WAIT
        socks.append(s)
    time.sleep(0.02)  # let the acceptor keep up with the backlog
print("READY", len(socks), flush=True)
sys.stdin.read()  # until the bench closes our stdin (or dies)
for s in socks:
    s.close()
"""


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class ScaleTarget:
    def __init__(self, connections: int, threads: int, lifetime: float) -> None:
        self.target = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SCALE_TARGET), str(threads), str(lifetime)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        self.client: subprocess.Popen[bytes] | None = None
        assert self.target.stdout is not None
        port = int(self.target.stdout.readline().split()[1])
        self.pid = self.target.pid
        self.client = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SCALE_CLIENT), str(port), str(connections)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.client.stdout is not None
        line = self.client.stdout.readline().split()
        if not line or line[0] != b"READY":
            self.stop()
            raise SystemExit("scale client could not open its connections")
        self.connections = int(line[1])
        deadline = time.monotonic() + 30
        while fd_count(self.pid) < self.connections and time.monotonic() < deadline:
            time.sleep(0.1)
        self.threads = len(os.listdir(f"/proc/{self.pid}/task"))

    def stop(self) -> None:
        if self.client is not None:
            if self.client.stdin is not None:
                self.client.stdin.close()  # the client closes with RST first
            try:
                self.client.wait(10)
            except subprocess.TimeoutExpired:
                h.stop(self.client)
        h.stop(self.target)


# ------------------------------------------------------------------------------ the app


def populated(app: LifescopeApp) -> dict[str, bool]:
    """A pane counts when its table has rows and its summary has data: the layers ladder has
    rows from the first (empty) report, so it counts once it shows code (stacks arrived)."""
    out = {}
    for pane_id in PANES:
        pane = app.query_one(f"#{pane_id}", Pane)
        table = pane.query_one(DataTable)
        summary = str(pane.query_one(".summary", Static).render())
        ok = table.row_count > 0 and "waiting for samples" not in summary
        if pane_id == "layers":
            ok = ok and "not visible" not in summary
        out[pane_id] = ok
    return out


def header(app: LifescopeApp) -> str:
    return str(app.query_one("#header", Static).render())


class Paints:
    """Times every screen update that had something to paint (layout and/or compositor),
    by wrapping ``Screen._on_timer_update`` for this bench process only."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float]] = []  # (start, end) perf_counter
        self.watch: tuple[LifescopeApp, str] | None = None
        self.seen_at: float | None = None
        original = Screen._on_timer_update
        paints = self

        def timed(screen: Screen[Any]) -> None:
            dirty = bool(
                screen._dirty_widgets or screen._layout_required or screen._repaint_required
            )
            t0 = time.perf_counter()
            original(screen)
            t1 = time.perf_counter()
            if dirty:
                paints.events.append((t0, t1))
                if paints.watch is not None and paints.watch[1] in header(paints.watch[0]):
                    paints.seen_at = t1
                    paints.watch = None

        self.original = original
        Screen._on_timer_update = timed  # type: ignore[method-assign]

    def restore(self) -> None:
        Screen._on_timer_update = self.original  # type: ignore[method-assign]


async def key_latency(app: LifescopeApp, paints: Paints, key: str, word: str) -> float | None:
    """Send the key event Pilot sends (without Pilot's two wait-for-idle pauses) and time
    until a screen update that shows ``word`` in the header has been composited."""
    assert app._driver is not None
    paints.seen_at = None
    paints.watch = (app, word)
    t0 = time.perf_counter()
    event = events.Key(key, key)
    event.set_sender(app)
    app._driver.send_message(event)
    while paints.seen_at is None and time.perf_counter() - t0 < 5:
        await asyncio.sleep(0.001)
    paints.watch = None
    return None if paints.seen_at is None else (paints.seen_at - t0) * 1e3


async def session(
    pid: int, size: tuple[int, int], refreshes: int, presses: int, timeout: float
) -> dict[str, Any]:
    """One app from construction to quit; every measurement the brief asks for."""
    calls: list[tuple[float, float]] = []
    paints = Paints()
    t_start = time.perf_counter()
    app = LifescopeApp(pid)
    original = app.refresh_views
    original_show = app._show
    shows: list[tuple[float, float]] = []

    def timed_refresh(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        original(*args, **kwargs)
        calls.append((t0, time.perf_counter()))

    def timed_show(report: Any) -> None:
        t0 = time.perf_counter()
        original_show(report)
        shows.append((t0, time.perf_counter()))

    app.refresh_views = timed_refresh  # type: ignore[method-assign]
    app._show = timed_show  # type: ignore[method-assign]
    result: dict[str, Any] = {"size": list(size)}
    try:
        async with app.run_test(size=size) as pilot:
            pane_at: dict[str, float] = {}
            hello_at = None
            while time.perf_counter() - t_start < timeout:
                now = time.perf_counter() - t_start
                if hello_at is None and app.timeline.hello is not None:
                    hello_at = now
                for pane_id, ok in populated(app).items():
                    if ok and pane_id not in pane_at:
                        pane_at[pane_id] = now
                if len(pane_at) == len(PANES):
                    break
                await asyncio.sleep(0.02)
            done = len(pane_at) == len(PANES)
            result["attach_to_populated_s"] = round(max(pane_at.values()), 3) if done else None
            result["pane_populated_s"] = {k: round(v, 3) for k, v in pane_at.items()}
            result["hello_s"] = None if hello_at is None else round(hello_at, 3)
            result["failure"] = app.failure
            if refreshes:
                # steady state: time the timer's own calls and the paint that follows each
                calls.clear()
                shows.clear()
                paints.events.clear()
                collector_pid = app.collector.pid if app.collector is not None else None
                c0, t0 = (h.tree_cpu(collector_pid) if collector_pid else 0.0), time.monotonic()
                await asyncio.sleep(refreshes * app_module.REFRESH_S + 0.3)
                if collector_pid:
                    share = (h.tree_cpu(collector_pid) - c0) / (time.monotonic() - t0)
                    result["collector_cpu_share"] = round(share, 3)
                refresh_ms, paint_ms, to_screen_ms, ui_ms = [], [], [], []
                for r0, r1 in calls:
                    refresh_ms.append((r1 - r0) * 1e3)
                    # The report this refresh produced: shown inside the call (built inline)
                    # or later, by the analysis thread's callback (built off the UI thread).
                    shown = next(((s0, s1) for s0, s1 in shows if s0 >= r0), None)
                    if shown is None:
                        continue
                    inline = shown[0] < r1
                    ui_ms.append(((r1 - r0) + (0 if inline else shown[1] - shown[0])) * 1e3)
                    after = [(p0, p1) for p0, p1 in paints.events if p0 >= shown[1]]
                    if after:
                        paint_ms.append((after[0][1] - after[0][0]) * 1e3)
                        to_screen_ms.append((after[0][1] - r0) * 1e3)
                result["refresh_ms"] = h.spread(refresh_ms, 2)
                result["ui_thread_ms"] = h.spread(ui_ms, 2)
                result["built_off_thread"] = app.slow_builds
                result["paint_ms"] = h.spread(paint_ms, 2)
                result["refresh_to_screen_ms"] = h.spread(to_screen_ms, 2)
                build = []
                for _ in range(3):
                    window = app.timeline.window(app_module.WINDOW_S)
                    t0 = time.perf_counter()
                    analysis.build(window)
                    build.append((time.perf_counter() - t0) * 1e3)
                    await asyncio.sleep(0.05)
                result["analysis_build_ms"] = h.spread(build, 2)
                report = app.last_report
                if report is not None:
                    result["probes_rate_hz"] = {p.name: p.rate_hz for p in report.probes}
                    result["probes_status"] = {p.name: p.status for p in report.probes}
                    result["connections_in_report"] = report.connections.total
                    result["threads_in_report"] = len(report.threads)
            pause_ms: list[float] = []
            resume_ms: list[float] = []
            for _ in range(presses):
                await asyncio.sleep(random.uniform(0.05, 0.6))
                for word, out in (("PAUSED", pause_ms), ("● live", resume_ms)):
                    latency = await key_latency(app, paints, "p", word)
                    if latency is not None:
                        out.append(latency)
                    await asyncio.sleep(random.uniform(0.05, 0.3))
            if presses:
                result["key_pause_ms"] = h.spread(pause_ms, 2)
                result["key_resume_ms"] = h.spread(resume_ms, 2)
            result["ui_dropped_samples"] = app.dropped
            await pilot.press("q")
    finally:
        paints.restore()
    return result


# ------------------------------------------------------------------------- probe refresh


def probes_at_scale(pid: int, names: list[str], seconds: float) -> dict[str, Any]:
    """Each probe alone in a real collector on the scale target: CPU and achieved rate."""
    out: dict[str, Any] = {}
    for name in names:
        collector = h.Collector(pid, [name])
        try:
            time.sleep(1.0)
            c0, t0 = collector.cpu(), time.monotonic()
            time.sleep(seconds)
            c1, t1 = collector.cpu(), time.monotonic()
        finally:
            collector.stop()
        samples = collector.samples()
        collector.close()
        kinds = {
            "stacks": StacksWindow,
            "sockets": SocketsSample,
            "threads": ThreadsSample,
            "gil": GilRuns,
        }
        got = [x for x in samples if isinstance(x, kinds[name]) and t0 <= x.t <= t1]
        entry: dict[str, Any] = {"cpu_share": round((c1 - c0) / (t1 - t0), 3)}
        if name == "stacks":
            entry["windows_per_s"] = round(len(got) / (t1 - t0), 2)
            ticks = [w.samples / max(1, len(w.thread_names)) for w in got]
            entry["ticks_per_s"] = round(sum(ticks) / (t1 - t0), 1)
        elif name == "gil":
            entry["reads_per_s"] = round(sum(r.reads for r in got) / (t1 - t0), 1)
        else:
            entry["samples_per_s"] = round(len(got) / (t1 - t0), 2)
        out[name] = entry
    return out


def probe_refresh(pid: int, repeat: int) -> dict[str, Any]:
    target = resolve(pid)
    sockets = SocketsProbe(target, lambda _s: None)
    with_inodes, without, encode, sizes = [], [], [], []
    rows = 0
    try:
        sockets.read_once()  # warm: opens the netlink socket in the target's netns
        for _ in range(repeat):
            sockets._inodes_at = 0.0  # force the fd -> inode refresh (readlink every fd)
            t0 = time.perf_counter()
            sockets.read_once()
            with_inodes.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            sample = sockets.read_once()
            without.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            line = stream.encode(sample)
            encode.append((time.perf_counter() - t0) * 1e3)
            sizes.append(len(line))
            rows = len(sample.sockets)
    finally:
        if sockets._diag is not None:
            sockets._diag.close()
    threads = ThreadsProbe(target, lambda _s: None)
    thread_ms = []
    count = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        sample_t = threads.read_once()
        thread_ms.append((time.perf_counter() - t0) * 1e3)
        count = len(sample_t.threads)
    threads.close()
    return {
        "sockets_rows": rows,
        "sockets_read_ms_with_inode_refresh": h.spread(with_inodes, 2),
        "sockets_read_ms": h.spread(without, 2),
        "sockets_encode_ms": h.spread(encode, 2),
        "sockets_sample_bytes": int(statistics.median(sizes)) if sizes else 0,
        "threads": count,
        "threads_read_ms": h.spread(thread_ms, 2),
        "threads_rate_hz": rate_for(count),
    }


# ------------------------------------------------------------------------------- driver


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    demo = start_demo_server(port=0)
    load = start_load(demo.url, rate=50, concurrency=8, duration=600, max_requests=30_000)
    try:
        time.sleep(1.0)
        attaches = []
        for i in range(args.attaches):
            last = i == args.attaches - 1
            attaches.append(
                asyncio.run(
                    session(
                        demo.pid,
                        (80, 24),
                        args.refreshes if last else 0,
                        args.presses if last else 0,
                        args.timeout,
                    )
                )
            )
        out["demo"] = {
            "attach_to_populated_s": h.spread([a["attach_to_populated_s"] for a in attaches], 3),
            "sessions": attaches,
        }
    finally:
        load.stop()
        demo.stop()
    scale = ScaleTarget(args.connections, args.threads, lifetime=600)
    try:
        out["scale_target"] = {
            "connections": scale.connections,
            "threads": scale.threads,
            "fds": fd_count(scale.pid),
        }
        out["probe_refresh"] = probe_refresh(scale.pid, args.repeat)
        names = ["stacks"] if args.quick else ["sockets", "threads", "stacks", "gil"]
        out["probes_at_scale"] = probes_at_scale(scale.pid, names, args.probe_seconds)
        sessions = []
        for i in range(args.scale_attaches):
            last = i == args.scale_attaches - 1
            for size in [(80, 24), (200, 60)] if last else [(80, 24)]:
                sessions.append(
                    asyncio.run(
                        session(
                            scale.pid,
                            size,
                            args.refreshes if last else 0,
                            args.presses if last else 0,
                            args.timeout,
                        )
                    )
                )
        out["scale"] = {
            "attach_to_populated_s": h.spread([s["attach_to_populated_s"] for s in sessions], 3),
            "sessions": sessions,
        }
    finally:
        scale.stop()
    return out


def print_tables(result: dict[str, Any]) -> None:
    def pick(section: str, key: str) -> dict[str, Any]:
        for s in result[section]["sessions"]:
            if key in s:
                return s
        return {}

    print(
        f"\nUI under Pilot (headless); load average {result['loadavg_before']} → "
        f"{result['loadavg_after']}"
    )
    sc = result["scale_target"]
    print(
        f"  scale target: {sc['connections']} connections, {sc['threads']} threads, {sc['fds']} fds"
    )
    print(f"  {'':34} {'demo (80×24)':>24} {'scale (80×24)':>24} {'scale (200×60)':>24}")
    demo = pick("demo", "refresh_ms")
    scale_sessions = [s for s in result["scale"]["sessions"] if "refresh_ms" in s]
    small = next((s for s in scale_sessions if s["size"] == [80, 24]), {})
    wide = next((s for s in scale_sessions if s["size"] == [200, 60]), {})

    def cell(s: dict[str, Any], key: str, scale: float = 1.0, digits: int = 1) -> str:
        return h.fmt_spread(s[key], scale, digits) if key in s else "—"

    print(
        f"  {'attach → all panes populated, s':34} "
        f"{h.fmt_spread(result['demo']['attach_to_populated_s'], 1, 2):>24} "
        f"{h.fmt_spread(result['scale']['attach_to_populated_s'], 1, 2):>24} {'':>24}"
    )
    for label, key in (
        ("UI thread per refresh, ms", "ui_thread_ms"),
        ("  refresh_views (timer) call, ms", "refresh_ms"),
        ("analysis.build (a thread if slow), ms", "analysis_build_ms"),
        ("paint after it, ms", "paint_ms"),
        ("refresh start → composited, ms", "refresh_to_screen_ms"),
        ("key p → PAUSED on screen, ms", "key_pause_ms"),
        ("key p → live on screen, ms", "key_resume_ms"),
    ):
        print(f"  {label:34} {cell(demo, key):>24} {cell(small, key):>24} {cell(wide, key):>24}")
    pr = result["probe_refresh"]
    print(
        f"\n  sockets probe at {pr['sockets_rows']} sockets: read "
        f"{h.fmt_spread(pr['sockets_read_ms'], 1, 1)} ms, with fd→inode refresh "
        f"{h.fmt_spread(pr['sockets_read_ms_with_inode_refresh'], 1, 1)} ms, encode "
        f"{h.fmt_spread(pr['sockets_encode_ms'], 1, 1)} ms "
        f"({pr['sockets_sample_bytes'] / 1e6:.2f} MB a sample)"
    )
    print(
        f"  threads probe at {pr['threads']} threads: read "
        f"{h.fmt_spread(pr['threads_read_ms'], 1, 2)} ms, adapts to {pr['threads_rate_hz']:g} Hz"
    )
    for name, entry in result.get("probes_at_scale", {}).items():
        rest = ", ".join(f"{k} {v}" for k, v in entry.items() if k != "cpu_share")
        print(f"  {name} alone at scale: {entry['cpu_share'] * 100:.0f}% of a core, {rest}")
    first = result["scale"]["sessions"][0]
    print(
        f"  scale attach, per pane (s): {first['pane_populated_s']}, "
        f"collector hello at {first['hello_s']} s"
    )
    for label, sess in (("demo", demo), ("scale 80×24", small), ("scale 200×60", wide)):
        if sess.get("probes_rate_hz"):
            print(
                f"  {label}: collector CPU {sess.get('collector_cpu_share', 0) * 100:.0f}% of a "
                f"core; probe rates in the UI {sess['probes_rate_hz']}"
            )
    for sess in result["scale"]["sessions"]:
        if sess["attach_to_populated_s"] is None:
            missing = sorted(set(PANES) - set(sess["pane_populated_s"]))
            print(
                f"  scale {sess['size'][0]}×{sess['size'][1]}: not populated within "
                f"{result['params']['timeout']:g} s — missing {', '.join(missing)}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--attaches", type=int, default=3, help="fresh app starts, demo")
    parser.add_argument("--scale-attaches", type=int, default=1, help="... scale (+1 at 200×60)")
    parser.add_argument("--refreshes", type=int, default=12, help="timer refreshes to time")
    parser.add_argument("--presses", type=int, default=8, help="pause/resume key pairs")
    parser.add_argument("--repeat", type=int, default=5, help="probe read repeats")
    parser.add_argument("--probe-seconds", type=float, default=5.0, help="per probe at scale")
    parser.add_argument("--timeout", type=float, default=20.0, help="attach timeout, s")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.threads, args.attaches = 1000, 20, 1
        args.scale_attaches = 1
        args.refreshes, args.presses, args.repeat, args.probe_seconds = 2, 1, 2, 0.5
    started = time.monotonic()
    result: dict[str, Any] = {
        "method": "LifescopeApp under Pilot with its real collector; populated = every pane's "
        "table has rows and no 'waiting for samples'; refresh_views timed by a wrapper; "
        "paint = the next dirty Screen._on_timer_update; key = Key event to the driver until a "
        "paint shows PAUSED",
        "quick": args.quick,
        "params": vars(args),
        "loadavg_before": h.loadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }
    result.update(run(args))
    result["loadavg_after"] = h.loadavg()
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print_tables(result)
    print(f"elapsed {result['elapsed_s']} s")
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / "ui.json").write_text(json.dumps(result, indent=2) + "\n")
    assert result["demo"]["attach_to_populated_s"]["median"] is not None, "demo never populated"
    assert result["probe_refresh"]["sockets_rows"] > 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
