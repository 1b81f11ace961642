"""lifescope against the tools a user would pick instead, on the same target in the same run.

    python bench/bench_compare.py [--quick] [--part both|interference|competition]

Tools, each attached in turn to the same demo server(s):

* ``lifescope`` — ``python -m lifescope.collector PID`` at defaults (GIL 2 kHz, threads
  ≤100 Hz, stacks 100 Hz, dump 2 Hz, sockets 2 Hz, packets);
* ``lifescope stacks`` — the collector's stacks probe alone (rolling 1 s ``py-spy record``
  windows at 100 Hz, ``--idle --threads``, chrometrace): the like-for-like stack sampler;
* ``py-spy dump ×10 Hz`` — ``py-spy dump --nonblocking`` in a loop at 10 Hz (a watch script:
  10 stack snapshots a second, a tenth of lifescope's stack rate); py-spy's CPU only, not the
  loop script's;
* ``py-spy record 100 Hz`` — ``py-spy record --rate 100 --nonblocking -o out.svg``;
* ``py-spy top 100 Hz`` — ``py-spy top --rate 100 --nonblocking`` on an 80×24 pseudo-terminal.

Numbers, with the methods of ``bench_overhead.py`` (see its docstring): the tool's own CPU
(process tree, % of one core) and the target's CPU per request watched/unwatched (twins on one
CPU, 120 req/s each, alternating, A/A row for noise), then requests/s with/without on a
saturated target (adjacent phases, pairs kept only when other processes were quiet). Ratios
against lifescope are computed from the medians. Also the cost of one ``py-spy dump`` call
(CPU and wall, 10 in a row), which is what a dump loop pays per snapshot.

Full run ≈ 2.5 min; ``bench/results/compare.json`` and a table. ``--quick`` (interference
only, 2 rounds of 1 s, < 20 s) asserts only that numbers came out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import _harness as h
import bench_overhead as bo

from lifescope.demo.children import start_demo_server, start_load


def tools(quick: bool) -> list[bo.ProbeSet]:
    sets = [
        bo.ProbeSet("none (A/A)", "none"),
        bo.ProbeSet("lifescope", "collector", h.DEFAULT_PROBES),
        bo.ProbeSet("lifescope stacks", "collector", ("stacks",)),
        bo.ProbeSet("py-spy dump ×10 Hz", "dump-loop", hz=10.0),
        bo.ProbeSet("py-spy record 100 Hz", "record", hz=100.0),
        bo.ProbeSet("py-spy top 100 Hz", "top", hz=100.0),
    ]
    if quick:
        sets = [s for s in sets if s.kind in ("none", "collector", "dump-loop")]
        sets = [s for s in sets if s.label != "lifescope stacks"]
    return sets


def dump_call_cost(repeat: int) -> dict[str, Any]:
    """CPU and wall of single ``py-spy dump`` calls on a loaded demo server."""
    server = start_demo_server(port=0)
    load = start_load(server.url, rate=120, concurrency=16, duration=30, max_requests=5000)
    cpu, wall = [], []
    try:
        time.sleep(1.5)
        argv = [h.pyspy_binary(), "dump", "--pid", str(server.pid), "--nonblocking"]
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
            wall.append((time.perf_counter() - t0) * 1e3)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3)
    finally:
        load.stop()
        server.stop()
    return {"cpu_ms": h.spread(cpu, 2), "wall_ms": h.spread(wall, 2)}


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Each tool against lifescope, from the medians."""
    out: dict[str, Any] = {}
    inter = result.get("interference", {}).get("summary", {})
    comp = result.get("competition", {}).get("summary", {})
    base_cpu = inter.get("lifescope", {}).get("watcher_cpu_share", {}).get("median")
    for label, s in inter.items():
        if label in ("none (A/A)", "lifescope"):
            continue
        cpu = s["watcher_cpu_share"]["median"]
        out[label] = {
            "cpu_vs_lifescope": None if not base_cpu or cpu is None else round(cpu / base_cpu, 3),
            "interference_ratio": s["ratio"]["median"],
            "throughput_ratio": comp.get(label, {}).get("rps_ratio", {}).get("median"),
        }
    return out


def print_tables(result: dict[str, Any]) -> None:
    inter = result.get("interference", {}).get("summary", {})
    comp = result.get("competition", {}).get("summary", {})
    print(
        "\nSame targets, same run: tool CPU (% of one core, under 120 req/s), target CPU per "
        "request watched/unwatched, saturated req/s with/without (clean pairs)"
    )
    print(
        f"  {'tool':22} {'tool CPU %':>20} {'target CPU/req ratio':>22} "
        f"{'req/s ratio (sat.)':>22} {'clean':>6}"
    )
    for label in [s.label for s in tools(False)]:
        if label not in inter and label not in comp:
            continue
        i = inter.get(label, {})
        c = comp.get(label, {})
        cpu = h.fmt_spread(i["watcher_cpu_share"], 100, 1) if i else "—"
        ratio = h.fmt_spread(i["ratio"]) if i else "—"
        rps = h.fmt_spread(c["rps_ratio"]) if c else "—"
        clean = f"{c['pairs_clean']}/{c['pairs']}" if c else ""
        print(f"  {label:22} {cpu:>20} {ratio:>22} {rps:>22} {clean:>6}")
    d = result.get("dump_call")
    if d:
        print(
            f"  one py-spy dump: {h.fmt_spread(d['cpu_ms'], 1, 1)} ms CPU, "
            f"{h.fmt_spread(d['wall_ms'], 1, 1)} ms wall"
        )
    for label, r in result.get("vs_lifescope", {}).items():
        print(
            f"  {label:22} CPU ×{r['cpu_vs_lifescope']} of lifescope's; "
            f"interference {r['interference_ratio']}; throughput {r['throughput_ratio']}"
        )
    print(f"\nload average before/after: {result['loadavg_before']} / {result['loadavg_after']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("both", "interference", "competition"), default="both")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warm", type=float, default=0.7)
    parser.add_argument("--rate", type=float, default=120.0)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--max-pairs", type=int, default=7)
    parser.add_argument("--comp-seconds", type=float, default=0.75)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--foreign-max", type=float, default=0.08)
    parser.add_argument("--quiet-wait", type=float, default=40.0)
    args = parser.parse_args()
    if args.quick:
        args.part, args.rounds, args.seconds, args.warm = "interference", 2, 1.0, 0.5
    sets = tools(args.quick)
    started = time.monotonic()
    result: dict[str, Any] = {
        "method": "bench_overhead's twins (interference) and saturation (competition) methods, "
        "with lifescope and the py-spy commands a user would run as the watchers",
        "quick": args.quick,
        "params": vars(args),
        "tools": [s.label for s in sets],
        "loadavg_before": h.loadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }
    result["dump_call"] = dump_call_cost(3 if args.quick else 10)
    if args.part in ("both", "interference"):
        result["interference"] = bo.interference(
            sets, args.rounds, args.seconds, args.warm, args.rate
        )
    if args.part in ("both", "competition"):
        result["competition"] = bo.competition(
            [s for s in sets if s.kind != "none"] + [sets[0]],
            args.pairs,
            args.max_pairs,
            args.comp_seconds,
            args.warm,
            args.concurrency,
            args.foreign_max,
            args.quiet_wait,
        )
    result["vs_lifescope"] = ratios(result)
    result["loadavg_after"] = h.loadavg()
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print_tables(result)
    print(f"elapsed {result['elapsed_s']} s")
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    for part in ("interference", "competition"):
        if part in result:
            assert result[part]["rows"], f"{part}: no rows"
    assert result["dump_call"]["cpu_ms"]["median"] is not None
    return 0


if __name__ == "__main__":
    sys.exit(main())
