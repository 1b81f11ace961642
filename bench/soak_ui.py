"""The stage promise: `lifescope demo` runs unattended for an hour without growing.

    python bench/soak_ui.py [--minutes 60] [--every 10] [--quick]

Method: `lifescope demo` is started in a real terminal (a detached tmux session, 120×36),
exactly as a speaker would, and left alone. Every `--every` seconds the bench reads, from
/proc: the UI process's RSS and CPU, the collector's (with its py-spy children), the demo
server's and the load generator's; and the header line from `tmux capture-pane`, to check
the UI is still live and repainting (its clock and numbers change). At the end it presses
`q` and checks that every process of the tree exited. Flat = the median RSS of the last
third after a 2-minute warm-up is within 8 MiB of the first third's, for the UI and the
collector. Results: `bench/results/soak_ui.json` and a table. `--quick` (1 minute) is a
smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).resolve().parent / "results"
SESSION = "lifescope-soak"


def tmux(*args: str) -> str:
    done = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10)
    return done.stdout


def tree(root: psutil.Process) -> dict[str, psutil.Process]:
    """The UI (root), its collector, demo server and load generator, by role."""
    roles: dict[str, psutil.Process] = {"ui": root}
    for child in root.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "lifescope.collector" in cmd:
            roles["collector"] = child
        elif "lifescope.demo.server" in cmd or "demo/server.py" in cmd:
            roles["server"] = child
        elif "lifescope.demo.load" in cmd or "demo/load.py" in cmd:
            roles["load"] = child
    return roles


def cpu_s(proc: psutil.Process, with_children: bool = False) -> float:
    times = proc.cpu_times()
    total = times.user + times.system
    if with_children:
        total += times.children_user + times.children_system
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.every = 1.0, 5.0
    if shutil.which("tmux") is None:
        print("soak_ui: needs tmux (apt-get install tmux)", file=sys.stderr)
        return 2
    lifescope = shutil.which("lifescope") or f"{sys.executable} -m lifescope"
    tmux("kill-session", "-t", SESSION)
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36", f"{lifescope} demo")
    time.sleep(3)
    pane_pid = int(tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}").strip())
    root = psutil.Process(pane_pid)
    roles = tree(root)
    rows: list[dict[str, Any]] = []
    headers: list[str] = []
    started = time.monotonic()
    last_cpu: dict[str, tuple[float, float]] = {}
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            roles = {**roles, **tree(root)}
            now = time.monotonic()
            row: dict[str, Any] = {"t_s": round(now - started, 1)}
            for role, proc in roles.items():
                try:
                    rss = proc.memory_info().rss
                    used = cpu_s(proc, with_children=role == "collector")
                except psutil.Error:
                    row[f"{role}_alive"] = False
                    continue
                before = last_cpu.get(role)
                last_cpu[role] = (now, used)
                row[f"{role}_rss_mib"] = round(rss / 2**20, 2)
                if before is not None:
                    row[f"{role}_cpu"] = round((used - before[1]) / (now - before[0]), 4)
            screen = tmux("capture-pane", "-p", "-t", SESSION)
            header = next((line for line in screen.splitlines() if "lifescope" in line), "")
            row["live"] = "● live" in screen
            headers.append(header.strip())
            rows.append(row)
            print(json.dumps(row), flush=True)
        final_screen = tmux("capture-pane", "-p", "-t", SESSION)
    finally:
        tmux("send-keys", "-t", SESSION, "q")
        time.sleep(3)
        leftover = [p.pid for p in roles.values() if p.is_running() and p.status() != "zombie"]
        tmux("kill-session", "-t", SESSION)
    warm = [r for r in rows if r["t_s"] >= min(120.0, args.minutes * 60 / 3)]
    verdict: dict[str, Any] = {}
    for role in ("ui", "collector", "server"):
        values = [r[f"{role}_rss_mib"] for r in warm if f"{role}_rss_mib" in r]
        if len(values) >= 3:
            third = max(1, len(values) // 3)
            first, last = statistics.median(values[:third]), statistics.median(values[-third:])
            cpus = [r[f"{role}_cpu"] for r in warm if f"{role}_cpu" in r]
            verdict[role] = {
                "rss_first_third_mib": first,
                "rss_last_third_mib": last,
                "growth_mib": round(last - first, 2),
                "flat": abs(last - first) <= 8.0,
                "cpu_median": round(statistics.median(cpus), 4) if cpus else None,
            }
    result = {
        "minutes": args.minutes,
        "samples": len(rows),
        "live_every_sample": all(r["live"] for r in rows),
        "distinct_headers": len(set(headers)),
        "leftover_pids": leftover,
        "verdict": verdict,
        "final_screen": final_screen,
        "rows": rows,
        "load_average_end": os.getloadavg(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("soak_ui.quick.json" if args.quick else "soak_ui.json")
    out.write_text(json.dumps(result, indent=1))
    print(f"\nlifescope demo, {args.minutes:g} min unattended in tmux 120×36")
    for role, v in verdict.items():
        print(
            f"  {role:9} RSS {v['rss_first_third_mib']:.1f} → {v['rss_last_third_mib']:.1f} MiB "
            f"({v['growth_mib']:+.1f}), CPU median {100 * (v['cpu_median'] or 0):.1f} % of a core"
            f" — {'flat' if v['flat'] else 'GREW'}"
        )
    print(
        f"  live on every sample: {result['live_every_sample']}; distinct header lines "
        f"{result['distinct_headers']}/{len(rows)}; left running after q: {leftover or 'none'}"
    )
    return 0 if result["live_every_sample"] and not leftover else 1


if __name__ == "__main__":
    sys.exit(main())
