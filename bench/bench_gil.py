"""GIL probe cost: achieved read rate, CPU of the probe, and what it takes from a busy target.

    python bench/bench_gil.py [--quick] [--rounds N] [--seconds S] [--rate HZ]

Method (side by side, in one run, because this machine is shared and noisy): a target
thread counts loop iterations into shared memory as fast as it can (so it holds the GIL
nearly always and any CPU stolen from it shows up as fewer iterations). Rounds alternate
"probe attached" and "no probe" phases of S seconds each; the ratio is the median
iterations/s with the probe over the median without. The probe runs as it does in
production: `python -m lifescope.collector PID --probes gil`, its CPU taken from
/proc/PID/stat over the phase, its achieved rate from the stream it writes.
Results go to bench/results/gil.json and a table on stdout. --quick is the CI smoke run:
it asserts only that numbers came out.
"""

from __future__ import annotations

import argparse
import io
import json
import mmap
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = """
import mmap, struct, sys, threading, time
path = sys.argv[1]
f = open(path, "r+b")
m = mmap.mmap(f.fileno(), 8)
def work():
    n = 0
    while True:
        for _ in range(1000):
            n += 1
        m[0:8] = struct.pack("Q", n)
threading.Thread(target=work, daemon=True).start()
print("READY", flush=True)
time.sleep(3600)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count(m: mmap.mmap) -> int:
    return struct.unpack("Q", m[0:8])[0]


def phase(m: mmap.mmap, seconds: float) -> float:
    start_n, start_t = count(m), time.monotonic()
    time.sleep(seconds)
    return (count(m) - start_n) / (time.monotonic() - start_t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0

    from lifescope import stream
    from lifescope.samples import GilRuns

    with tempfile.NamedTemporaryFile() as shared:
        shared.write(b"\0" * 8)
        shared.flush()
        target = subprocess.Popen([sys.executable, "-c", TARGET, shared.name],
                                  stdout=subprocess.PIPE)  # fmt: skip
        m = mmap.mmap(shared.fileno(), 8)
        try:
            assert target.stdout is not None
            target.stdout.readline()
            time.sleep(0.5)
            without, with_probe, probe_cpu, rates = [], [], [], []
            for _ in range(args.rounds):
                without.append(phase(m, args.seconds))
                env = dict(os.environ, LIFESCOPE_GIL_HZ=str(args.rate))
                collector = subprocess.Popen(
                    [sys.executable, "-m", "lifescope.collector", str(target.pid), "--probes",
                     "gil"], stdout=subprocess.PIPE, env=env,
                )  # fmt: skip
                # Attach and validate outside the measured phase: until the first batch of
                # reads arrives. A fixed 0.5 s was not enough on a busy machine, where the
                # collector's start-up (import, ELF parse) fell into a 1 s quick phase and the
                # target read as making no progress at all (ratio 0).
                assert collector.stdout is not None
                head = []
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    line = collector.stdout.readline()
                    head.append(line)
                    if not line or line.startswith(b'["GilRuns"'):
                        break
                cpu0 = cpu_seconds(collector.pid)
                t0 = time.monotonic()
                with_probe.append(phase(m, args.seconds))
                probe_cpu.append((cpu_seconds(collector.pid) - cpu0) / (time.monotonic() - t0))
                collector.terminate()
                out, _ = collector.communicate(timeout=10)
                out = b"".join(head) + out
                runs = [s for s in stream.read(io.BytesIO(out)) if isinstance(s, GilRuns)]
                covered = sum(r.t - r.start for r in runs)
                rates.append(sum(r.reads for r in runs) / covered if covered else 0.0)
        finally:
            target.kill()
            target.wait()
    ratio = statistics.median(with_probe) / statistics.median(without)
    result = {
        "method": "alternating phases, same target, iterations/s with probe / without",
        "rounds": args.rounds,
        "phase_s": args.seconds,
        "requested_hz": args.rate,
        "achieved_hz": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
        "probe_cpu_share": {
            "median": statistics.median(probe_cpu),
            "min": min(probe_cpu),
            "max": max(probe_cpu),
        },
        "target_throughput_ratio": ratio,
        "ratios_per_round": [w / o for w, o in zip(with_probe, without, strict=True)],
        "loadavg": os.getloadavg(),
    }
    print(f"GIL probe at {args.rate:.0f} Hz requested, {args.rounds} rounds × {args.seconds}s")
    print(f"  achieved rate    {result['achieved_hz']['median']:8.0f} Hz "
          f"(min {min(rates):.0f}, max {max(rates):.0f})")  # fmt: skip
    print(f"  probe CPU        {statistics.median(probe_cpu) * 100:8.1f} % of a core "
          f"(min {min(probe_cpu) * 100:.1f}, max {max(probe_cpu) * 100:.1f})")  # fmt: skip
    print(
        f"  target with/without {ratio:8.3f}  (per round: "
        + ", ".join(f"{r:.3f}" for r in result["ratios_per_round"])
        + ")"
    )
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "gil.json").write_text(json.dumps(result, indent=2))
    assert result["achieved_hz"]["median"] > 0 and ratio > 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
