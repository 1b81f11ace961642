"""What stacks at 100 Hz cost: py-spy vs lifescope's native walker, alone and riding the GIL loop.

    python bench/bench_native_stacks.py [--quick] [--rounds 5] [--seconds 20]

Issue 17's spike. Same target and method as ``bench_record_cost.py`` (imported from it): an
aiohttp server on CPython 3.11 with one thread spinning in pure Python; each tool is a child of
this process (a child subreaper), its CPU the growth of ``RUSAGE_CHILDREN`` over its run divided
by the run's wall time, start-up included; tools alternate round by round, the order reversing
every round; median (min–max) of the rounds.

Tools:

* ``py-spy`` — ``py-spy record --rate 100 --nonblocking --idle --threads -d N`` (flame graph).
* ``native`` — this file as a worker: attach, then ``NativeStacks.loop`` at 100 Hz in 1 s calls
  (the walk timed and done in C, the GIL released), every second's samples named and built into
  a ``StacksWindow`` — what the stacks probe would send.
* ``gil`` — the GIL loop alone: ``gil_batch.native_batch`` at 2 kHz (0.5 ms, 2 ms when quiet),
  100 ms batches, every changed read decoded.
* ``gil+stacks`` — the same loop with a stack walk on the first read after every 10 ms (one
  wake-up serves both), windows built every second as in ``native``.
* ``record`` / ``record+native`` — the whole collector, ``lifescope record --full-rate``, with
  stacks from py-spy (as shipped) and from the walker riding the GIL loop
  (``LIFESCOPE_NATIVE_STACKS=1``).
* ``idle`` — the worker's start-up alone (imports, ELF parsing, attach of both readers, which
  every worker does), then asleep: what the three above pay before sampling anything, so
  ``X - idle`` is what sampling costs.

Each worker also reports its samples and its own CPU split (``time.process_time`` around the
sampling calls vs around the naming and window building), and a microbenchmark run once before
the rounds gives the CPU of one walk back to back (µs, system calls included) on this target.
Results to ``bench/results/native_stacks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import _harness as h
import bench_record_cost as brc

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------- workers
def worker(mode: str, pid: int, seconds: float) -> None:
    """Run one tool in this process (a child of the bench); report JSON on stdout."""
    from lifescope.probes.gil_batch import Pace, native_batch
    from lifescope.probes.gil_reader import GilReader
    from lifescope.probes.memory import PreparedRead
    from lifescope.probes.native_stacks import NativeStacks

    t_end = time.monotonic() + seconds
    reader = GilReader.open(pid)  # every mode attaches both readers: equal start-up
    stacks = NativeStacks(pid, reader)  # sharing the reader's ELF parse, as the GIL probe does
    report: dict[str, Any] = {"mode": mode}
    sample_cpu = build_cpu = 0.0
    n_samples = windows = 0
    if mode == "idle":
        time.sleep(max(0.0, t_end - time.monotonic()))
    elif mode == "native":
        while time.monotonic() < t_end:
            start = time.monotonic()
            c0 = time.process_time()
            samples, err = stacks.loop(0.01, min(t_end, start + 1.0))
            c1 = time.process_time()
            stacks.window(samples, start, time.monotonic(), 100.0)
            c2 = time.process_time()
            sample_cpu += c1 - c0
            build_cpu += c2 - c1
            n_samples += len(samples)
            windows += 1
            if err:
                break
    else:
        layout = reader.batch_layout
        lay = stacks.layout.as_tuple() if mode == "gil+stacks" else None
        run = native_batch(layout, pid, lay)
        raw = PreparedRead(pid, layout.regions).read()
        now = time.monotonic()
        pace = Pace(0.0005, 0.002, 0.2, now, 0.0005, now, now, raw, reads=1)
        window_start = now
        while pace.previous < t_end:
            c0 = time.process_time()
            run(pace, min(t_end, time.monotonic() + 0.1), reader.known_holders())
            c1 = time.process_time()
            for _, _, buf in pace.changes:
                reader.decode(buf)
            pace.changes.clear()
            if lay is not None and time.monotonic() - window_start >= 1.0:
                end = time.monotonic()
                n_samples += len(pace.stack_samples)
                stacks.window(pace.stack_samples, window_start, end, 100.0)
                pace.stack_samples.clear()
                window_start = end
                windows += 1
            c2 = time.process_time()
            sample_cpu += c1 - c0
            build_cpu += c2 - c1
        report["gil_reads"] = pace.reads
    report.update(
        samples=n_samples,
        windows=windows,
        sampling_cpu_s=round(sample_cpu, 4),
        building_cpu_s=round(build_cpu, 4),
        process_cpu_s=round(time.process_time(), 4),
    )
    print(json.dumps(report), flush=True)


def micro(pid: int, n: int = 2000) -> dict[str, float]:
    """CPU of one walk, back to back (C walk + result objects), and of naming one sample."""
    from lifescope.probes.native_stacks import NativeStacks, _sampler

    stacks = NativeStacks(pid)
    args = stacks.layout.as_tuple()
    _sampler.stack_walk(pid, args)
    c0 = time.process_time()
    out = [_sampler.stack_walk(pid, args)[0] for _ in range(n)]
    walk_us = (time.process_time() - c0) / n * 1e6
    samples = [s for batch in out for s in batch]
    t0 = time.monotonic()
    stamped = [(t0 + i * 0.01, threads) for i, (_, threads) in enumerate(samples)]
    stacks.window(stamped[:10], t0, t0 + 1, 100.0)  # warm the code cache
    c0 = time.process_time()
    stacks.window(stamped, t0, t0 + n * 0.01 + 1, 100.0)
    build_us = (time.process_time() - c0) / n * 1e6
    threads = statistics.median(len(s[1]) for s in samples)
    depth = statistics.median(len(p) // 16 for s in samples for _, _, p in s[1])
    return {
        "walk_us": round(walk_us, 2),
        "window_us_per_sample": round(build_us, 2),
        "threads": threads,
        "median_depth": depth,
    }


# ---------------------------------------------------------------------------- bench
def run_worker(
    argv: list[str], keep: set[int], env: dict[str, str] | None = None
) -> tuple[dict[str, float | None], dict[str, Any] | None]:
    """One run through bench_record_cost's accounting, the worker's report kept."""
    brc.reap_orphans(keep)
    cpu0, t0 = brc.children_cpu(), time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )
    out, err = proc.communicate(timeout=300)
    wall = time.monotonic() - t0
    brc.reap_orphans(keep)
    cpu = brc.children_cpu() - cpu0
    if proc.returncode != 0:
        print(f"  ! {argv[:5]} exited {proc.returncode}: {err.decode()[-400:]}", file=sys.stderr)
    report = None
    lines = out.decode().strip().splitlines()
    if lines and lines[-1].startswith("{"):
        report = json.loads(lines[-1])
    run = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "share": round(cpu / wall, 4)}
    return run, report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--tools",
        default="py-spy,native,gil,gil+stacks,idle",
        help="any of py-spy,native,gil,gil+stacks,idle,record,record+native",
    )
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "PID", "SECONDS"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), float(args.worker[2]))
        return 0
    if args.quick:
        args.rounds, args.seconds = 1, 3.0
    brc.subreaper()
    result: dict[str, Any] = {"method": __doc__, "params": vars(args), "load_before": h.loadavg()}
    target = brc.Target(sys.executable)
    keep = {target.pid}
    tmp = tempfile.TemporaryDirectory(prefix="lifescope-bench-")
    seconds = f"{args.seconds:g}"
    tools: dict[str, list[str]] = {
        "py-spy": [h.pyspy_binary(), "record", "--pid", str(target.pid), "--rate", "100",
                   "--nonblocking", "--idle", "--threads", "-d", str(max(1, round(args.seconds))),
                   "-o", os.path.join(tmp.name, "out.svg")],
    }  # fmt: skip
    for mode in ("native", "gil", "gil+stacks", "idle"):
        tools[mode] = [sys.executable, os.path.join(HERE, "bench_native_stacks.py"),
                       "--worker", mode, str(target.pid), seconds]  # fmt: skip
    # The whole collector, --full-rate, stacks from py-spy vs from the walker on the GIL loop.
    out = os.path.join(tmp.name, "rec.gz")
    tools["record"] = brc.lifescope_argv(target.pid, args.seconds, out, ["--full-rate"])
    tools["record+native"] = tools["record"]
    envs = {"record": {"LIFESCOPE_NATIVE_STACKS": "0"},
            "record+native": {"LIFESCOPE_NATIVE_STACKS": "1"}}  # fmt: skip
    tools = {name: argv for name, argv in tools.items() if name in args.tools.split(",")}
    import compileall

    import lifescope

    # As bench_record_cost: measure an installed-like (byte-compiled) tree.
    compileall.compile_dir(os.path.dirname(lifescope.__file__), quiet=1, legacy=False)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in tools}
    try:
        result["micro"] = micro(target.pid)
        print(f"target pid {target.pid}; one walk {result['micro']}", flush=True)
        for i in range(args.rounds):
            order = list(tools) if i % 2 == 0 else list(reversed(tools))
            for name in order:
                run, report = run_worker(tools[name], keep, envs.get(name))
                run["report"] = report
                runs[name].append(run)
                extra = ""
                if report and report.get("samples"):
                    extra = f"  samples {report['samples']}"
                print(f"  round {i + 1} {name:11} {run['share'] * 100:6.2f} % of a core{extra}",
                      flush=True)  # fmt: skip
    finally:
        target.stop()
        tmp.cleanup()
    result["load_after"] = h.loadavg()
    result["tools"] = {
        name: {"share": h.spread([r["share"] for r in rs]), "runs": rs} for name, rs in runs.items()
    }
    print(f"\nCPU, % of a core, median (min–max) of {args.rounds}; load {result['load_before']}"
          f" → {result['load_after']}")  # fmt: skip
    for name, v in result["tools"].items():
        print(f"  {name:11} {h.fmt_spread(v['share'], 100, 2)}")
    h.RESULTS.mkdir(exist_ok=True)
    name = "native_stacks_quick.json" if args.quick else "native_stacks.json"
    (h.RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    assert all(v["share"]["median"] is not None for v in result["tools"].values())
    return 0


if __name__ == "__main__":
    sys.exit(main())
