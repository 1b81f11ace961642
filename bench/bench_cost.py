"""lifescope's own CPU and memory at defaults, idle and loaded; achieved vs requested rates.

    python bench/bench_cost.py [--quick] [--seconds 60] [--probe-seconds 6] [--rate 100]

Method:

* **Own cost at defaults.** Two demo servers, one idle and one under the demo's default route
  mix at ``--rate`` req/s (fixed-rate loopback load, bounded), each watched by its own
  collector at defaults (``python -m lifescope.collector PID``), both over the same
  ``--seconds`` (60). CPU is the collector's own stream: its ``CollectorCost`` samples carry
  ``cpu_s`` = the collector's CPU plus that of its reaped py-spy children
  (``RUSAGE_CHILDREN``), once a second; the share is Δcpu_s/Δt after a warm-up, quoted as the
  median (min–max) of 10 s slices (1 s in --quick). The bench also reads the whole tree from
  /proc (collector + reaped + *live* py-spy children) at the ends as a cross-check.
  Memory: the collector's RSS from the same samples, and the tree's (collector + live py-spy)
  sampled from /proc each second; "flat" compares the median of the first third after
  warm-up with the last third.
* **Rates.** The achieved rate of every probe from the report lifescope itself builds
  (``analysis.report``: the ``probes.*.rate_hz`` of ``lifescope snapshot --json``) over the
  measured window, beside what the probe asks for (GIL 2 kHz, threads adaptive 10–100 Hz,
  stacks 100 ticks/s, dump 2 Hz, sockets 2 Hz, tasks 2 Hz). Then each probe alone on the
  loaded target for ``--probe-seconds``: its CPU (tree, from /proc) and its achieved rate —
  the goals are "GIL ≥ 2 kHz at ≤ 8 % of a core" and "stacks ≥ 100 samples/s at ≤ 8 %".
  The GIL probe's resolution is its achieved read period, and the share of reads that came
  over 1 ms late.

Full run ≈ 2 min (the two targets are watched at the same time). Results go to
``bench/results/cost.json`` and a table on stdout. ``--quick`` (5 s; gil and stacks alone for
1.5 s each; < 20 s) asserts only that numbers came out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import _harness as h

from lifescope.analysis import report as analysis
from lifescope.demo.children import start_demo_server, start_load
from lifescope.probes import threads as threads_probe
from lifescope.samples import CollectorCost, GilRuns, TasksSample
from lifescope.timeline import Timeline

REQUESTED = {"gil": 2000.0, "stacks": 100.0, "dump": 2.0, "sockets": 2.0, "tasks": 2.0}


def requested(name: str, thread_count: int) -> float | None:
    if name == "threads":
        return threads_probe.rate_for(thread_count)
    return REQUESTED.get(name)


def report_for(samples: list[object], start: float, end: float) -> dict[str, Any]:
    timeline = Timeline()
    for sample in samples:
        timeline.add(sample)
    snap = analysis.to_json(analysis.build(timeline.window(end - start, end=end)))
    # The report does not count TasksSample in rate_hz (it says 0.0); count them here.
    tasks = [s for s in samples if isinstance(s, TasksSample) and start <= s.t <= end]
    probes = snap["probes"]
    assert isinstance(probes, dict)
    if tasks and "tasks" in probes and not probes["tasks"]["rate_hz"]:
        probes["tasks"]["rate_hz_from_samples"] = round(len(tasks) / (end - start), 2)
    return snap


def gil_resolution(samples: list[object], start: float, end: float) -> dict[str, float] | None:
    runs = [s for s in samples if isinstance(s, GilRuns) and start <= s.start and s.t <= end]
    reads = sum(r.reads for r in runs)
    covered = sum(r.t - r.start for r in runs)
    if not reads or covered <= 0:
        return None
    return {
        "achieved_hz": round(reads / covered, 1),
        "period_ms": round(1000 * covered / reads, 3),
        "late_share": round(sum(r.late for r in runs) / reads, 4),
    }


def slices(costs: list[CollectorCost], start: float, end: float, width: float) -> list[float]:
    """CPU share of a core in consecutive ``width``-second slices of [start, end]."""
    out = []
    t = start
    while t + width <= end + 1e-6:
        a = [c for c in costs if c.t <= t]
        b = [c for c in costs if c.t <= t + width]
        if a and b and b[-1].t > a[-1].t:
            out.append((b[-1].cpu_s - a[-1].cpu_s) / (b[-1].t - a[-1].t))
        t += width
    return out


def thirds(values: list[float]) -> tuple[float, float, float]:
    """(median of first third, median of last third, last/first - 1)."""
    n = max(1, len(values) // 3)
    first, last = statistics.median(values[:n]), statistics.median(values[-n:])
    return first, last, (last / first - 1) if first else 0.0


def watch_defaults(seconds: float, warm: float, rate: float, slice_s: float) -> dict[str, Any]:
    idle = start_demo_server(port=0)
    loaded = start_demo_server(port=0)
    load = start_load(
        loaded.url,
        rate=rate,
        concurrency=16,
        duration=seconds + warm + 15,
        max_requests=int(rate * (seconds + warm + 15)) + 100,
    )
    collectors = {}
    out: dict[str, Any] = {}
    try:
        time.sleep(1.5)  # the load is flowing, executor threads exist
        collectors = {"idle": h.Collector(idle.pid), "loaded": h.Collector(loaded.pid)}
        started = time.monotonic()
        tree_rss: dict[str, list[tuple[float, int]]] = {k: [] for k in collectors}
        tree_cpu0: dict[str, float] = {}
        while time.monotonic() < started + warm + seconds + 0.5:
            now = time.monotonic()
            for name, collector in collectors.items():
                tree_rss[name].append((now, h.tree_rss(collector.pid)))
                if name not in tree_cpu0 and now >= started + warm:
                    tree_cpu0[name] = collector.cpu()
            time.sleep(1.0)
        tree_cpu1 = {name: c.cpu() for name, c in collectors.items()}
        ended = time.monotonic()
        threads_seen = {
            "idle": len(os.listdir(f"/proc/{idle.pid}/task")),
            "loaded": len(os.listdir(f"/proc/{loaded.pid}/task")),
        }
        for c in collectors.values():
            c.stop()
        for name, collector in collectors.items():
            samples = collector.samples()
            costs = [s for s in samples if isinstance(s, CollectorCost)]
            if not costs:
                raise SystemExit(f"{name}: the collector wrote no CollectorCost samples")
            t0 = costs[0].t  # the collector's clock: CLOCK_MONOTONIC, same as ours
            start, end = t0 + warm, min(costs[-1].t, t0 + warm + seconds)
            cpu_slices = slices(costs, start, end, slice_s)
            after = [c for c in costs if c.t >= start]
            rss = [c.rss_bytes / 2**20 for c in after]
            trss = [r / 2**20 for t, r in tree_rss[name] if t >= started + warm]
            rss_first, rss_last, rss_growth = thirds(rss)
            trss_first, trss_last, trss_growth = thirds(trss) if trss else (0, 0, 0)
            snap = report_for(samples, start, end)
            rates = {}
            for probe, view in snap["probes"].items():  # type: ignore[union-attr]
                rates[probe] = {
                    "status": view["status"],
                    "achieved_hz": view.get("rate_hz_from_samples", view["rate_hz"]),
                    "requested_hz": requested(probe, threads_seen[name]),
                }
            whole = (after[-1].cpu_s - after[0].cpu_s) / (after[-1].t - after[0].t)
            out[name] = {
                "window_s": round(end - start, 1),
                "cpu_share": h.spread(cpu_slices),
                "cpu_share_whole_window": round(whole, 4),
                "cpu_share_proc_tree": round(
                    (tree_cpu1[name] - tree_cpu0.get(name, tree_cpu1[name]))
                    / (ended - started - warm),
                    4,
                ),
                "rss_mib": {
                    "first_third": round(rss_first, 1),
                    "last_third": round(rss_last, 1),
                    "growth": round(rss_growth, 4),
                    "max": round(max(rss), 1),
                },
                "tree_rss_mib": {
                    "first_third": round(trss_first, 1),
                    "last_third": round(trss_last, 1),
                    "growth": round(trss_growth, 4),
                    "max": round(max(trss), 1) if trss else None,
                },
                "rates": rates,
                "gil": gil_resolution(samples, start, end),
                "target_threads": threads_seen[name],
            }
    finally:
        for c in collectors.values():
            c.close()
        load.stop()
        idle.stop()
        loaded.stop()
    return out


def per_probe(seconds: float, warm: float, rate: float, names: list[str]) -> dict[str, Any]:
    """Each probe alone on a loaded target: CPU of the collector tree and achieved rate."""
    total = len(names) * (seconds + warm + 1.5) + 15
    target = start_demo_server(port=0)
    load = start_load(
        target.url, rate=rate, concurrency=16, duration=total, max_requests=int(rate * total) + 100
    )
    out: dict[str, Any] = {}
    try:
        time.sleep(1.5)
        for name in names:
            collector = h.Collector(target.pid, [name])
            try:
                time.sleep(warm)
                c0, t0 = collector.cpu(), time.monotonic()
                time.sleep(seconds)
                c1, t1 = collector.cpu(), time.monotonic()
            finally:
                collector.stop()
            samples = collector.samples()
            collector.close()
            snap = report_for(samples, t0, t1)  # CLOCK_MONOTONIC: the collector's clock too
            view = snap["probes"].get(name, {})  # type: ignore[union-attr]
            threads_now = len(os.listdir(f"/proc/{target.pid}/task"))
            out[name] = {
                "cpu_share": round((c1 - c0) / (t1 - t0), 4),
                "achieved_hz": view.get("rate_hz_from_samples", view.get("rate_hz")),
                "status": view.get("status"),
                "requested_hz": requested(name, threads_now),
                "samples": view.get("samples"),
            }
            if name == "gil":
                out[name]["resolution"] = gil_resolution(samples, t0, t1)
    finally:
        load.stop()
        target.stop()
    return out


def print_tables(result: dict[str, Any]) -> None:
    d = result["defaults"]
    print(
        f"\nlifescope at defaults, {d['idle']['window_s']:.0f} s after a "
        f"{result['params']['warm']:.0f} s warm-up (CPU: median (min–max) of "
        f"{result['params']['slice_s']:.0f} s slices, % of one core)"
    )
    print(
        f"  {'target':8} {'CPU % (stream)':>22} {'CPU % (/proc tree)':>19} "
        f"{'RSS MiB first→last third':>26} {'tree RSS MiB':>18}"
    )
    for name in ("idle", "loaded"):
        r = d[name]
        rss, trss = r["rss_mib"], r["tree_rss_mib"]
        print(
            f"  {name:8} {h.fmt_spread(r['cpu_share'], 100, 1):>22} "
            f"{r['cpu_share_proc_tree'] * 100:>18.1f}% "
            f"{rss['first_third']:>11.1f} → {rss['last_third']:.1f} ({rss['growth']:+.1%})"
            f"{trss['first_third']:>9.1f} → {trss['last_third']:.1f}"
        )
    print("\n  achieved rate / requested, per probe (report's probes.*.rate_hz)")
    print(f"  {'probe':9} {'idle':>22} {'loaded':>22}")
    for probe in d["loaded"]["rates"]:
        cells = []
        for name in ("idle", "loaded"):
            v = d[name]["rates"].get(probe)
            if v is None:
                cells.append("—")
                continue
            req = v["requested_hz"]
            req_s = f"{req:g}" if req is not None else "n/a"
            cells.append(f"{v['achieved_hz']:.1f}/{req_s} {v['status']}")
        print(f"  {probe:9} {cells[0]:>22} {cells[1]:>22}")
    for name in ("idle", "loaded"):
        g = d[name]["gil"]
        if g:
            print(
                f"  GIL ({name}): {g['achieved_hz']:.0f} Hz, period {g['period_ms']:.3f} ms, "
                f"{g['late_share']:.2%} of reads > 1 ms late"
            )
    p = result.get("per_probe")
    if p:
        print(
            f"\n  each probe alone on the loaded target ({result['params']['probe_seconds']:g} s)"
        )
        print(f"  {'probe':9} {'CPU % core':>10} {'achieved/requested Hz':>24} {'status':>9}")
        for name, v in p.items():
            req = v["requested_hz"]
            req_s = f"{req:g}" if req is not None else "n/a"
            ach = v["achieved_hz"]
            ach_s = "—" if ach is None else f"{ach:.1f}"
            print(
                f"  {name:9} {v['cpu_share'] * 100:>10.1f} {ach_s + '/' + req_s:>24} "
                f"{v['status'] or '—':>9}"
            )
    print(f"\nload average before/after: {result['loadavg_before']} / {result['loadavg_after']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s, gil and stacks 1.5 s (<20 s)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warm", type=float, default=5.0, help="excluded from the window")
    parser.add_argument("--probe-seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=float, default=100.0, help="req/s on the loaded target")
    parser.add_argument("--no-per-probe", action="store_true")
    args = parser.parse_args()
    args.slice_s = 10.0
    if args.quick:
        args.seconds, args.warm, args.probe_seconds, args.slice_s = 5.0, 1.0, 1.5, 1.0
    started = time.monotonic()
    result: dict[str, Any] = {
        "method": "collectors at defaults on an idle and a loaded demo server at once; CPU "
        "from the stream's CollectorCost (self + reaped py-spy), cross-checked against the "
        "/proc tree; RSS first vs last third; rates from analysis.report; then each probe "
        "alone on the loaded target",
        "quick": args.quick,
        "params": vars(args),
        "loadavg_before": h.loadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }
    result["defaults"] = watch_defaults(args.seconds, args.warm, args.rate, args.slice_s)
    if not args.no_per_probe:
        names = [n for n in dict.fromkeys((*h.DEFAULT_PROBES, "tasks")) if h.probe_available(n)]
        if args.quick:
            names = ["gil", "stacks"]
        warm = 0.8 if args.quick else 1.5
        result["per_probe"] = per_probe(args.probe_seconds, warm, args.rate, names)
    result["loadavg_after"] = h.loadavg()
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print_tables(result)
    print(f"elapsed {result['elapsed_s']} s")
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / "cost.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in ("idle", "loaded"):
        assert result["defaults"][name]["cpu_share"]["median"] is not None, name
        assert result["defaults"][name]["rates"], name
    if "per_probe" in result:
        assert all(v["cpu_share"] >= 0 for v in result["per_probe"].values())
    return 0


if __name__ == "__main__":
    sys.exit(main())
