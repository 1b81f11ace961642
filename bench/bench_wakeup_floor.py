"""What a timer wake-up costs on this machine, with nothing else done: the GIL loop's floor.

    python bench/bench_wakeup_floor.py [--seconds 4] [--rounds 3] [--rates 2000,500,100] [--quick]

Why: the GIL probe must read at ≥ 2 kHz while the GIL is in use (issue 17), and each read is
a wake-up of a sleeping thread. A C loop that only sleeps on absolute ``CLOCK_MONOTONIC``
deadlines (``clock_nanosleep(TIMER_ABSTIME)``, as ``_sampler.c`` does) and reads nothing says
what that alone costs here, so the GIL loop's own cost can be read against it. The loop runs
at SCHED_FIFO 1 where permitted (as the GIL sampler does) beside one thread spinning in Python
(as the busy-thread bench target's does), so the other core is what the sleeper wakes on.

CPU is the loop's own (``getrusage`` in the child: ``sum_exec_runtime``, not ticks). Results go
to ``bench/results/wakeup_floor.json``: per rate, % of a core and µs per wake-up, median
(min–max) of the rounds. Needs a C compiler. ``--quick``: one 1 s round at 2 kHz.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

C_SOURCE = r"""
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
int main(int argc, char **argv) {
    double hz = atof(argv[1]), seconds = atof(argv[2]);
    int fifo = 0;
    struct sched_param p = {1};
    if (sched_setscheduler(0, SCHED_FIFO, &p) == 0) fifo = 1;
    long period = (long)(1e9 / hz), n = (long)(hz * seconds);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (long i = 0; i < n; i++) {
        t.tv_nsec += period;
        while (t.tv_nsec >= 1000000000L) { t.tv_nsec -= 1000000000L; t.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
    }
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    double cpu = r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec
        + r.ru_stime.tv_usec / 1e6;
    printf("%d %ld %.6f\n", fifo, n, cpu);
    return 0;
}
"""


def build(tmp: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler: this bench compiles its loop")
    src, exe = os.path.join(tmp, "floor.c"), os.path.join(tmp, "floor")
    Path(src).write_text(C_SOURCE)
    subprocess.run([cc, "-O2", "-o", exe, src], check=True)
    return exe


def one(exe: str, hz: float, seconds: float) -> tuple[float, float, bool]:
    """(% of a core, µs of CPU per wake-up, ran at FIFO)."""
    out = subprocess.run([exe, str(hz), str(seconds)], capture_output=True, text=True, check=True)
    fifo, n, cpu = out.stdout.split()
    return 100.0 * float(cpu) / seconds, 1e6 * float(cpu) / int(n), fifo == "1"


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rates", default="2000,500,100")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.rates = 1.0, 1, "2000"
    rates = [float(r) for r in args.rates.split(",")]
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results: dict[str, object] = {"method": __doc__.split("\n\n")[2] if __doc__ else ""}
    try:
        with tempfile.TemporaryDirectory(prefix="lifescope-floor-") as tmp:
            exe = build(tmp)
            runs: dict[float, list[tuple[float, float, bool]]] = {hz: [] for hz in rates}
            for _ in range(args.rounds):
                for hz in rates:
                    runs[hz].append(one(exe, hz, args.seconds))
    finally:
        hog.kill()
        hog.wait()
    for hz, got in runs.items():
        share, per = [g[0] for g in got], [g[1] for g in got]
        results[f"{hz:g} Hz"] = {
            "share_pct": summary(share),
            "us_per_wakeup": summary(per),
            "fifo": all(g[2] for g in got),
        }
        print(
            f"{hz:6g} Hz: {statistics.median(share):5.2f} % of a core "
            f"({min(share):.2f}–{max(share):.2f}), {statistics.median(per):5.1f} µs a wake-up"
        )
    RESULTS.mkdir(exist_ok=True)
    name = "wakeup_floor_quick.json" if args.quick else "wakeup_floor.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
