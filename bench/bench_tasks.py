"""Asyncio task reader cost: milliseconds per pass over 2,000 and 5,000 live tasks, per CPython.

    python bench/bench_tasks.py [--quick] [--repeat 5] [--sizes 2000,5000]

Method: for every CPython 3.8-3.13 installed under pyenv, start a target whose N tasks each
await one ``asyncio.Event`` (a realistic two-frame chain: the task's coroutine → ``Event.wait``
→ a future), attach lifescope's reader from this process, and time full passes
(``AsyncioReader.read``: task sets, weak references, tasks, coroutine frames, awaited objects,
code objects, names, lines).  The first pass is reported apart ("cold": it decodes every task
name and code object once); the figure that matters is the steady pass, median of
``--repeat`` runs with min–max, as wall time (what the probe reports as ``read_ms``) and as
this thread's CPU time (robust to a busy, shared machine).  The target is never paused
(``process_vm_readv`` only), so the cost is the collector's CPU, not the server's.

Results go to ``bench/results/tasks.json`` and a table on stdout.  ``--quick`` is the CI smoke
run (one interpreter, 2,000 tasks, 3 passes): it checks only that numbers came out.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lifescope.probes.asyncio_reader import AsyncioReader

HERE = Path(__file__).resolve().parent
TARGET = """
import asyncio, sys
N = int(sys.argv[1])

async def parked(ev):
    await ev.wait()

async def main():
    ev = asyncio.Event()
    tasks = [asyncio.ensure_future(parked(ev)) for _ in range(N)]
    await asyncio.sleep(0.2)
    print("READY", len(asyncio.all_tasks()), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def interpreters(quick: bool) -> list[tuple[str, str]]:
    """(label, executable) for each installed pyenv CPython 3.8-3.13."""
    found = []
    for minor in range(8, 14):
        exes = sorted(glob.glob(f"/root/.pyenv/versions/3.{minor}.*/bin/python3.{minor}"))
        if exes:
            found.append((os.path.basename(os.path.dirname(os.path.dirname(exes[-1]))), exes[-1]))
    if quick:
        mine = f"{sys.version_info[0]}.{sys.version_info[1]}."
        return [f for f in found if f[0].startswith(mine)][:1] or found[:1]
    return found


def measure(python: str, n: int, repeat: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [python, "-c", TARGET, str(n)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        truth = int(line[1])
        reader = AsyncioReader.open(proc.pid)
        started = time.perf_counter()
        reader.read(max_tasks=n + 10)
        cold = (time.perf_counter() - started) * 1000
        times = []
        cpu = []
        read = errors = 0
        for _ in range(repeat):
            started, cpu_started = time.perf_counter(), time.thread_time()
            tasks, total, errors = reader.read(max_tasks=n + 10)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - cpu_started) * 1000)
            read = len(tasks)
        median = statistics.median(times)
        cpu_median = statistics.median(cpu)
        return {
            "tasks": truth,
            "tasks_read": read,
            "total_reported": total,
            "errors": errors,
            "median_ms": round(median, 2),
            "min_ms": round(min(times), 2),
            "max_ms": round(max(times), 2),
            "cold_ms": round(cold, 2),
            "cpu_median_ms": round(cpu_median, 2),
            "cpu_min_ms": round(min(cpu), 2),
            "cpu_max_ms": round(max(cpu), 2),
            "per_task_us": round(median * 1000 / max(1, read), 2),
            "cpu_per_task_us": round(cpu_median * 1000 / max(1, read), 2),
            "syscalls_per_pass": reader.last_syscalls,
        }
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="2000,5000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        args.repeat, sizes = 3, [2000]
    pythons = interpreters(args.quick)
    if not pythons:
        print("no CPython 3.8-3.13 under /root/.pyenv/versions", file=sys.stderr)
        return 1
    results: dict[str, dict[str, dict[str, Any]]] = {}
    print(
        f"asyncio task reader: ms per pass, wall and this thread's CPU (median of "
        f"{args.repeat}, min-max), and the cold first pass"
    )
    for label, python in pythons:
        results[label] = {}
        for n in sizes:
            r = measure(python, n, args.repeat)
            results[label][str(n)] = r
            print(
                f"  {label:8} {n:5} tasks  wall {r['median_ms']:6.1f} ms "
                f"({r['min_ms']:.1f}-{r['max_ms']:.1f})  cpu {r['cpu_median_ms']:6.1f} ms "
                f"({r['cpu_min_ms']:.1f}-{r['cpu_max_ms']:.1f})  cold {r['cold_ms']:6.1f} ms  "
                f"{r['cpu_per_task_us']:4.1f} µs/task  {r['syscalls_per_pass']} syscalls  "
                f"read {r['tasks_read']}/{r['tasks']}  errors {r['errors']}"
            )
    out = {
        "method": "N tasks each awaiting an asyncio.Event; full AsyncioReader.read() passes "
        "from this process; median of repeats after one cold pass",
        "repeat": args.repeat,
        "sizes": sizes,
        "results": results,
        "reader_python": sys.version.split()[0],
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "tasks.json").write_text(json.dumps(out, indent=2) + "\n")
    assert all(r["median_ms"] > 0 for v in results.values() for r in v.values())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
