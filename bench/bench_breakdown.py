"""Where the collector's CPU goes, thread by thread, in steady state (issue 17).

    python bench/bench_breakdown.py [--seconds 10] [--warm 5] [--rounds 3] [--full-rate]
        [--probes gil,threads,...] [--quick]

`bench_record_cost.py` says what all of `lifescope record` costs; this says which of its
threads pays. The collector runs in this process, as `lifescope record` runs it (the same
`Collector`, a gzip recording to a temporary file), against the same busy-thread aiohttp target.
Each thread's CPU is read from ``/proc/self/task/TID/stat`` (utime + stime) at the end of the
warm-up and ``--seconds`` later, so start-up (imports, ELF parsing, the first py-spy) is not in
it. Threads are named by the probe that runs on them; ``writer`` is the thread that encodes and
flushes the stream (``Collector.run``); ``children`` is the CPU of reaped child processes (py-spy
runs, when a probe uses it); ``process`` is the whole process, so what no live thread explains
(threads that exited inside the window) is ``process`` minus the rest.

Results go to ``bench/results/breakdown.json``: per thread, % of a core, median (min–max) of the
rounds. ``--quick`` (one 2 s round after 1 s) only asserts that numbers came out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import _harness as h
from bench_record_cost import Target

from lifescope.collector import Collector, open_recording
from lifescope.options import DEFAULTS, PROBES
from lifescope.target import resolve

TICK = os.sysconf("SC_CLK_TCK")


def thread_ticks() -> dict[int, int]:
    """utime + stime of every live thread of this process, in clock ticks."""
    ticks = {}
    for name in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{name}/stat", "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            continue  # exited between the listing and the read
        fields = raw[raw.rindex(b")") + 2 :].split()
        ticks[int(name)] = int(fields[11]) + int(fields[12])
    return ticks


def process_seconds() -> tuple[float, float]:
    """(this process's CPU, its reaped children's CPU), in seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def one_round(
    pid: int, probes: tuple[str, ...], full_rate: bool, warm: float, seconds: float
) -> dict[str, float]:
    options = dataclasses.replace(DEFAULTS, probes=probes, full_rate=full_rate)
    with tempfile.TemporaryDirectory(prefix="lifescope-breakdown-") as tmp:
        out = open_recording(os.path.join(tmp, "r.lifescope"), force=True)
        collector = Collector(resolve(pid), out, options)
        names: dict[int, str] = {}
        writer = threading.Thread(target=collector.run, args=(warm + seconds + 1.0,), name="writer")
        writer.start()
        time.sleep(warm)
        for probe in collector.probes:
            if probe.native_id is not None:
                names[probe.native_id] = probe.probe_name
        if writer.native_id is not None:
            names[writer.native_id] = "writer"
        before, (self0, kids0) = thread_ticks(), process_seconds()
        time.sleep(seconds)
        after, (self1, kids1) = thread_ticks(), process_seconds()
        collector.stop()
        writer.join()
        out.close()
    me = threading.get_native_id()
    shares: dict[str, float] = {}
    for tid, end in after.items():
        if tid == me or tid not in before:
            continue
        label = names.get(tid, f"other-{tid}")
        shares[label] = shares.get(label, 0.0) + (end - before[tid]) / TICK / seconds * 100
    shares["children"] = (kids1 - kids0) / seconds * 100
    shares["process"] = (self1 - self0) / seconds * 100
    return shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warm", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", default=",".join(DEFAULTS.probes))
    parser.add_argument("--full-rate", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warm, args.rounds = 2.0, 1.0, 1
    probes = tuple(p for p in args.probes.split(",") if p)
    unknown = set(probes) - set(PROBES)
    if unknown:
        parser.error(f"unknown probes: {', '.join(sorted(unknown))}")
    target = Target(sys.executable)
    rounds: list[dict[str, float]] = []
    try:
        for i in range(args.rounds):
            rounds.append(one_round(target.pid, probes, args.full_rate, args.warm, args.seconds))
            line = ", ".join(f"{k} {v:.2f}" for k, v in sorted(rounds[-1].items()))
            print(f"round {i + 1}: {line}", flush=True)
    finally:
        target.stop()
    labels = sorted({k for r in rounds for k in r})
    summary: dict[str, Any] = {}
    for label in labels:
        values = [r.get(label, 0.0) for r in rounds]
        summary[label] = {
            "median": round(statistics.median(values), 2),
            "min": round(min(values), 2),
            "max": round(max(values), 2),
        }
    result = {
        "method": {
            "seconds": args.seconds,
            "warm": args.warm,
            "rounds": args.rounds,
            "probes": probes,
            "full_rate": args.full_rate,
            "load_average": os.getloadavg(),
        },
        "percent_of_a_core": summary,
    }
    h.RESULTS.mkdir(exist_ok=True)
    path = h.RESULTS / ("breakdown_quick.json" if args.quick else "breakdown.json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    for label in labels:
        s = summary[label]
        print(f"{label:>12}: {s['median']:6.2f} % ({s['min']:.2f}–{s['max']:.2f})")
    assert summary["process"]["median"] > 0, "no CPU measured: the collector did not run"
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
