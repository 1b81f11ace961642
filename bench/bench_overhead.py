"""Target overhead of lifescope, per probe set: interference (twins) and competition (saturation).

    python bench/bench_overhead.py [--quick] [--part both|interference|competition]
                                   [--sets gil,stacks,...] [--rounds N] [--seconds S]

Two questions, each answered side by side in one run (this machine is shared and noisy, and
separate runs differ by ±20 %):

* **Interference** — does watching a server make each of its requests cost more CPU? Two
  identical demo servers (twins) are pinned to the same CPU, each under the same fixed-rate
  loopback load (default 120 req/s of fast=6,db=2,sleep=1: ~15 % of that CPU each, well below
  saturation; the load generators are pinned to the other CPUs, lifescope is left unpinned as
  in production). lifescope watches one twin; over the same seconds we read each twin's CPU
  from ``/proc/PID/task/*/schedstat`` (ns on a CPU, summed over threads) and its request
  count from its own counter, and take CPU-per-request watched / unwatched. Rounds alternate
  which twin is watched, so a difference between the twins cancels; the A/A row (neither
  watched) shows the method's own noise.
* **Competition** — what does lifescope's own CPU take from a saturated server on this 2-core
  machine? One demo server, ``/fast`` only, kept saturated for the whole part by an unpaced
  load generator in this process (64 clients, bounded by time and count, every completion
  time-stamped); requests/s and p99 of adjacent 1 s phases with vs without lifescope (the
  watcher starts ``--warm`` s before its phase and is stopped after it), the order
  alternating pair by pair. The A/A row compares two adjacent phases with nothing attached.

Probe sets: each collector probe alone, ``tasks`` (via a wrapper if the collector does not list
it yet), the collector's defaults, and for contrast ``py-spy record --native`` at 100 Hz run by
hand (the collector has no --native flag; native unwinding pauses the target for each sample).
The watcher's CPU (collector + its py-spy children, reaped or live) is reported beside each row.

Full run ≈ 3.5 min; results go to ``bench/results/overhead.json`` and a table on stdout.
``--quick`` (two sets, short phases, < 20 s) asserts only that numbers came out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import _harness as h
import aiohttp

from lifescope.demo.children import (
    DemoServer,
    check_loopback_url,
    start_demo_server,
    start_load,
)

INTERFERENCE_MIX = "fast=6,db=2,sleep=1"


@dataclass(frozen=True)
class ProbeSet:
    label: str
    kind: str  # "none", "collector", "native", "dump-loop", "record", "top"
    probes: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    hz: float = 100.0


def probe_sets(names: list[str] | None) -> list[ProbeSet]:
    sets = [ProbeSet("none (A/A)", "none")]
    for name in dict.fromkeys((*h.DEFAULT_PROBES, "tasks")):
        if h.probe_available(name):
            sets.append(ProbeSet(name, "collector", (name,)))
    sets.append(ProbeSet("all defaults", "collector", h.DEFAULT_PROBES))
    sets.append(ProbeSet("py-spy --native", "native"))
    if names:
        # diagnoses, on request only: the GIL probe without SCHED_FIFO; the packet probe
        # woken every 20 ms instead of on every packet (both patched in the bench's collector)
        sets.append(
            ProbeSet("gil-nofifo", "collector", ("gil",), (("LIFESCOPE_BENCH_NO_FIFO", "1"),))
        )
        batch = (("LIFESCOPE_BENCH_PACKETS_BATCH_S", "0.02"),)
        sets.append(ProbeSet("packets-batched", "collector", ("packets",), batch))
        wanted = {n.strip() for n in names}
        aliases = {
            "all": "all defaults",
            "defaults": "all defaults",
            "native": "py-spy --native",
            "none": "none (A/A)",
            "aa": "none (A/A)",
        }
        wanted = {aliases.get(n, n) for n in wanted}
        sets = [s for s in sets if s.label in wanted]
    return sets


class Watcher:
    """Whatever watches the target in one phase: nothing, a lifescope collector, or a py-spy
    command a user would run instead (``record --native``, ``record``, a ``dump`` loop,
    ``top`` on a pseudo-terminal)."""

    def __init__(self, pset: ProbeSet, pid: int, seconds: float, pausable: bool = False) -> None:
        self.pset = pset
        self.collector: h.Collector | None = None
        self.proc: Any = None
        self.tmp: Any = None
        self.pty: h.Pty | None = None
        if pset.kind == "collector":
            self.collector = h.Collector(
                pid, pset.probes, new_session=pausable, env=dict(pset.env) or None
            )
        elif pset.kind == "native":
            self.proc, self.tmp = h.start_pyspy_record(pid, seconds + 2, rate=100, native=True)
        elif pset.kind == "record":
            self.proc, self.tmp = h.start_pyspy_record(
                pid, seconds + 2, rate=int(pset.hz), lifescope_like=False
            )
        elif pset.kind == "dump-loop":
            self.proc = h.start_dump_loop(pid, pset.hz)
        elif pset.kind == "top":
            argv = [h.pyspy_binary(), "top", "--pid", str(pid), "--rate", str(int(pset.hz))]
            self.pty = h.Pty([*argv, "--nonblocking"])
            self.proc = self.pty.proc

    def cpu(self) -> float:
        if self.collector is not None:
            return self.collector.cpu()
        if self.proc is not None:
            if self.pset.kind == "dump-loop":  # py-spy's CPU only, not the loop script's
                return h.dump_loop_cpu(self.proc.pid)
            return h.tree_cpu(self.proc.pid)
        return 0.0

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.close()
        if self.pty is not None:
            self.pty.close()
        elif self.proc is not None:
            sig = signal.SIGTERM if self.pset.kind == "dump-loop" else signal.SIGINT
            h.stop(self.proc, sig)
        if self.tmp is not None:
            self.tmp.cleanup()


# --------------------------------------------------------------------------- interference


def _snap(twins: list[DemoServer]) -> list[tuple[int, int]]:
    out = []
    for twin in twins:
        ns = h.schedstat_ns(twin.pid)
        status = twin.control_state()["status"]
        assert isinstance(status, dict)
        out.append((ns, int(status["requests"])))
    return out


# Seconds of load before the first measurement (shortened by --quick): executor threads exist,
# connections are pooled, code paths are warm.
SETTLE_S = 2.0


def interference(sets: list[ProbeSet], rounds: int, seconds: float, warm: float, rate: float):
    cpus = sorted(os.sched_getaffinity(0))
    target_cpu = cpus[-1]
    others = [c for c in cpus if c != target_cpu] or cpus
    per_phase = warm + seconds + 0.6
    total = len(sets) * rounds * per_phase + 10
    twins = [start_demo_server(port=0), start_demo_server(port=0)]
    loads = []
    rows: list[dict[str, Any]] = []
    try:
        for twin in twins:
            h.pin(twin.pid, {target_cpu})
        for twin in twins:
            load = start_load(
                twin.url,
                rate=rate,
                concurrency=16,
                duration=total,
                mix=INTERFERENCE_MIX,
                max_requests=int(rate * total) + 100,
            )
            loads.append(load)
            h.pin(load.pid, others)
        time.sleep(SETTLE_S)
        for r in range(rounds):
            w = r % 2
            order = sets[r % len(sets) :] + sets[: r % len(sets)]
            for pset in order:
                watched, other = twins[w], twins[1 - w]
                watcher = Watcher(pset, watched.pid, warm + seconds)
                try:
                    time.sleep(warm if pset.kind != "none" else 0.1)
                    s0, c0, t0 = _snap([watched, other]), watcher.cpu(), time.monotonic()
                    time.sleep(seconds)
                    s1, c1, t1 = _snap([watched, other]), watcher.cpu(), time.monotonic()
                finally:
                    watcher.stop()
                per_req = [
                    (b[0] - a[0]) / max(1, b[1] - a[1]) / 1e3 for a, b in zip(s0, s1, strict=True)
                ]
                rps = [(b[1] - a[1]) / (t1 - t0) for a, b in zip(s0, s1, strict=True)]
                rows.append(
                    {
                        "set": pset.label,
                        "round": r,
                        "watched": "AB"[w],
                        "us_per_req_watched": round(per_req[0], 1),
                        "us_per_req_other": round(per_req[1], 1),
                        "ratio": round(per_req[0] / per_req[1], 4),
                        "rps_watched": round(rps[0], 1),
                        "rps_other": round(rps[1], 1),
                        "watcher_cpu_share": round((c1 - c0) / (t1 - t0), 4),
                        "loadavg_1m": h.loadavg()[0],
                    }
                )
    finally:
        for proc in (*loads, *twins):
            proc.stop()
    summary = {}
    for pset in sets:
        mine = [row for row in rows if row["set"] == pset.label]
        summary[pset.label] = {
            "ratio": h.spread([row["ratio"] for row in mine]),
            "watcher_cpu_share": h.spread([row["watcher_cpu_share"] for row in mine]),
            "us_per_req_other": h.spread([row["us_per_req_other"] for row in mine], 1),
            "rps": h.spread([row["rps_watched"] for row in mine], 1),
        }
    return {
        "target_cpu": target_cpu,
        "load_cpus": others,
        "rate": rate,
        "rows": rows,
        "summary": summary,
    }


# ---------------------------------------------------------------------------- competition


class Saturator:
    """Unpaced loopback load from this process: ``concurrency`` clients each sending the next
    GET as soon as the last answer arrived, every completion time-stamped so that any phase
    can be cut out of one continuous run. Bounded by a deadline and a request count."""

    def __init__(self, url: str, concurrency: int, deadline: float, max_requests: int) -> None:
        check_loopback_url(url)
        self.url = url
        self.concurrency = concurrency
        self.deadline = deadline
        self.max_requests = max_requests
        self.done: list[tuple[float, float]] = []  # (monotonic end, latency s)
        self.errors = 0
        self.stopping = False

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self.stopping and time.monotonic() < self.deadline:
            if len(self.done) + self.errors >= self.max_requests:
                return
            started = time.monotonic()
            try:
                async with session.get(self.url) as resp:
                    await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                self.errors += 1
                await asyncio.sleep(0.01)
                continue
            end = time.monotonic()
            self.done.append((end, end - started))

    async def run(self, body: Any) -> Any:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            clients = [
                asyncio.ensure_future(self._client(session)) for _ in range(self.concurrency)
            ]
            try:
                return await body
            finally:
                self.stopping = True
                await asyncio.gather(*clients, return_exceptions=True)

    def phase(self, t0: float, t1: float) -> dict[str, float]:
        lat = sorted(lat for end, lat in self.done if t0 <= end < t1)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3 if lat else 0.0
        return {"rps": len(lat) / (t1 - t0), "p99_ms": p99}


def pausable(pset: ProbeSet) -> bool:
    """Sets that can be paused with SIGSTOP between phases instead of restarted.

    Not the packet probe: its socket keeps queueing while the collector is stopped, and the
    backlog drained on resume would be charged to the next phase. Not py-spy --native: it may
    be stopped while it holds the target stopped.
    """
    return pset.kind == "collector" and "packets" not in pset.probes


async def _competition(
    server: DemoServer,
    sets: list[ProbeSet],
    pairs: int,
    max_pairs: int,
    seconds: float,
    warm: float,
    foreign_max: float,
    quiet_budget: float,
    sat: Saturator,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    settle = 0.25  # after SIGCONT: py-spy catches up on the samples it missed while stopped
    waited = 0.0

    async def wait_quiet() -> None:
        """Before a pair: wait (within a total budget) for half a second in which other
        processes used at most ``foreign_max`` of the machine."""
        nonlocal waited
        while waited < quiet_budget:
            foreign = h.Foreign()
            await asyncio.sleep(0.5)
            waited += 0.5
            if foreign.share() <= foreign_max:
                return

    async def measure() -> tuple[float, float, float, float]:
        foreign = h.Foreign()
        switches = h.ctx_switches(server.pid)[1]
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        t1 = time.monotonic()
        preempted = (h.ctx_switches(server.pid)[1] - switches) / (t1 - t0)
        return t0, t1, foreign.share(), preempted

    def row(pset: ProbeSet, pair: int, first: bool, w: tuple, s: tuple, cpu: float) -> None:
        with_, without = sat.phase(s[0], s[1]), sat.phase(w[0], w[1])
        rows.append(
            {
                "set": pset.label,
                "pair": pair,
                "without_first": first,
                "mode": "pause" if pausable(pset) else "restart",
                "rps_with": round(with_["rps"], 1),
                "rps_without": round(without["rps"], 1),
                "rps_ratio": round(with_["rps"] / max(1e-9, without["rps"]), 4),
                "p99_with_ms": round(with_["p99_ms"], 2),
                "p99_without_ms": round(without["p99_ms"], 2),
                "p99_ratio": round(with_["p99_ms"] / max(1e-6, without["p99_ms"]), 4),
                "watcher_cpu_share": round(cpu, 4),
                "foreign_with": round(s[2], 3),
                "foreign_without": round(w[2], 3),
                # req/s per share of the machine the others left us: with over without
                "rps_ratio_normalized": round(
                    (with_["rps"] / max(1e-3, 1 - s[2]))
                    / max(1e-9, without["rps"] / max(1e-3, 1 - w[2])),
                    4,
                ),
                "clean": max(s[2], w[2]) <= foreign_max,
                # the target's involuntary context switches (preemptions) per second
                "target_preempt_per_s_with": round(s[3]),
                "target_preempt_per_s_without": round(w[3]),
                "loadavg_1m": h.loadavg()[0],
            }
        )

    def enough(pset: ProbeSet, pair: int) -> bool:
        clean = sum(1 for r in rows if r["set"] == pset.label and r["clean"])
        return clean >= pairs or pair >= max_pairs

    await asyncio.sleep(SETTLE_S)
    for pset in sets:
        pair = 0
        if pset.kind == "none":
            while not enough(pset, pair):
                await wait_quiet()
                a, b = await measure(), await measure()
                first = pair % 2 == 0
                row(pset, pair, first, a if first else b, b if first else a, 0.0)
                pair += 1
            continue
        if pausable(pset):
            # One collector, attached once; SIGCONT/SIGSTOP its process group between phases.
            watcher = await asyncio.to_thread(Watcher, pset, server.pid, 0, True)
            collector = watcher.collector
            assert collector is not None
            try:
                await asyncio.sleep(warm)
                collector.signal_group(signal.SIGSTOP)
                while not enough(pset, pair):
                    await wait_quiet()
                    first = pair % 2 == 0
                    if first:
                        w = await measure()
                    collector.signal_group(signal.SIGCONT)
                    await asyncio.sleep(settle)
                    c0 = watcher.cpu()
                    s = await measure()
                    cpu = (watcher.cpu() - c0) / (s[1] - s[0])
                    collector.signal_group(signal.SIGSTOP)
                    if not first:
                        w = await measure()
                    row(pset, pair, first, w, s, cpu)
                    pair += 1
            finally:
                await asyncio.to_thread(watcher.stop)
            await asyncio.sleep(0.2)
            continue
        while not enough(pset, pair):
            await wait_quiet()
            first = pair % 2 == 0
            if first:
                w = await measure()
            watcher = await asyncio.to_thread(Watcher, pset, server.pid, warm + seconds)
            try:
                await asyncio.sleep(warm)
                c0 = watcher.cpu()
                s = await measure()
                cpu = (watcher.cpu() - c0) / (s[1] - s[0])
            finally:
                await asyncio.to_thread(watcher.stop)
            await asyncio.sleep(0.2)  # the stop is not part of the next phase
            if not first:
                w = await measure()
            row(pset, pair, first, w, s, cpu)
            pair += 1
    return rows


def competition(
    sets: list[ProbeSet],
    pairs: int,
    max_pairs: int,
    seconds: float,
    warm: float,
    concurrency: int,
    foreign_max: float,
    quiet_budget: float,
) -> dict[str, Any]:
    budget = 2.0 + 30 + quiet_budget
    for pset in sets:
        if pset.kind == "none":
            budget += 2 * max_pairs * seconds
        elif pausable(pset):
            budget += warm + max_pairs * (2 * seconds + 0.3) + 1
        else:
            budget += max_pairs * (warm + 2 * seconds + 1.0)
    server = start_demo_server(port=0)
    sat = Saturator(server.url + "/fast", concurrency, time.monotonic() + budget, 5_000_000)
    try:
        body = _competition(
            server, sets, pairs, max_pairs, seconds, warm, foreign_max, quiet_budget, sat
        )
        rows = asyncio.run(sat.run(body))
    finally:
        server.stop()
    summary = {}
    for pset in sets:
        mine = [row for row in rows if row["set"] == pset.label]
        clean = [row for row in mine if row["clean"]]
        summary[pset.label] = {
            "rps_ratio": h.spread([row["rps_ratio"] for row in clean]),
            "p99_ratio": h.spread([row["p99_ratio"] for row in clean]),
            "rps_ratio_all_pairs": h.spread([row["rps_ratio"] for row in mine]),
            "rps_ratio_all_normalized": h.spread([row["rps_ratio_normalized"] for row in mine]),
            "watcher_cpu_share": h.spread([row["watcher_cpu_share"] for row in mine]),
            "rps_without": h.spread([row["rps_without"] for row in clean], 1),
            "p99_without_ms": h.spread([row["p99_without_ms"] for row in clean], 2),
            "target_preempt_per_s_with": h.spread(
                [row["target_preempt_per_s_with"] for row in mine], 0
            ),
            "target_preempt_per_s_without": h.spread(
                [row["target_preempt_per_s_without"] for row in mine], 0
            ),
            "pairs_clean": len(clean),
            "pairs": len(mine),
        }
    return {
        "concurrency": concurrency,
        "phase_s": seconds,
        "foreign_max": foreign_max,
        "errors": sat.errors,
        "requests": len(sat.done),
        "rows": rows,
        "summary": summary,
    }


# -------------------------------------------------------------------------------- report


def print_tables(result: dict[str, Any]) -> None:
    inter = result.get("interference")
    if inter:
        print(
            f"\nInterference: CPU per request, watched twin / unwatched twin "
            f"(twins pinned to CPU {inter['target_cpu']}, {inter['rate']:.0f} req/s each; "
            "median (min–max) over rounds)"
        )
        print(f"  {'probe set':18} {'ratio':>24} {'watcher CPU % core':>26} {'µs/req':>8}")
        for label, s in inter["summary"].items():
            print(
                f"  {label:18} {h.fmt_spread(s['ratio']):>24} "
                f"{h.fmt_spread(s['watcher_cpu_share'], 100, 1):>26} "
                f"{s['us_per_req_other']['median'] or 0:8.0f}"
            )
    comp = result.get("competition")
    if comp:
        print(
            f"\nCompetition: saturated /fast ({comp['concurrency']} in flight), "
            "with / without lifescope, adjacent phases"
        )
        print(
            f"  pairs count as clean when other processes used ≤ {comp['foreign_max']:.0%} "
            "of the machine in both phases; ratios over clean pairs"
        )
        print(
            f"  {'probe set':18} {'req/s ratio':>22} {'p99 ratio':>22} {'watcher CPU %':>20}"
            f" {'clean/pairs':>11} {'all pairs req/s':>22} {'all, normalized':>22}"
        )
        for label, s in comp["summary"].items():
            print(
                f"  {label:18} {h.fmt_spread(s['rps_ratio']):>22} "
                f"{h.fmt_spread(s['p99_ratio']):>22} "
                f"{h.fmt_spread(s['watcher_cpu_share'], 100, 1):>20} "
                f"{s['pairs_clean']:>5}/{s['pairs']:<5} "
                f"{h.fmt_spread(s['rps_ratio_all_pairs']):>22} "
                f"{h.fmt_spread(s['rps_ratio_all_normalized']):>22}"
            )
        rows = comp["rows"]
        base = [r["rps_without"] for r in rows] or [0]
        p99 = [r["p99_without_ms"] for r in rows] or [0]
        print(
            f"  (without lifescope, all pairs: {min(base):.0f}–{max(base):.0f} req/s, "
            f"p99 {min(p99):.1f}–{max(p99):.1f} ms; {comp['requests']} requests, "
            f"{comp['errors']} errors)"
        )
    print(f"\nload average before/after: {result['loadavg_before']} / {result['loadavg_after']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 sets, short phases (<20 s)")
    parser.add_argument("--part", choices=("both", "interference", "competition"), default="both")
    parser.add_argument("--sets", default=None, help="comma-separated subset of the probe sets")
    parser.add_argument("--rounds", type=int, default=4, help="interference rounds (even)")
    parser.add_argument("--seconds", type=float, default=1.5, help="interference window")
    parser.add_argument("--pairs", type=int, default=3, help="clean competition pairs wanted")
    parser.add_argument("--max-pairs", type=int, default=4, help="competition pairs at most")
    parser.add_argument(
        "--foreign-max", type=float, default=0.08, help="max share of the machine used by others"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=15.0, help="s to wait for quiet, in all, at most"
    )
    parser.add_argument("--comp-seconds", type=float, default=0.75, help="competition phase")
    parser.add_argument("--warm", type=float, default=0.6, help="attach time before measuring")
    parser.add_argument("--rate", type=float, default=120.0, help="req/s per twin")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    names = args.sets.split(",") if args.sets else None
    if args.quick:
        global SETTLE_S
        SETTLE_S = 1.0
        names = names or ["none", "all"]
        args.rounds, args.seconds, args.warm = 2, 0.8, 0.4
        args.pairs, args.max_pairs, args.comp_seconds, args.quiet_wait = 1, 1, 0.75, 0.0
    sets = probe_sets(names)
    started = time.monotonic()
    result: dict[str, Any] = {
        "method": "interference: twins pinned to one CPU, fixed-rate load, schedstat CPU per "
        "request watched/unwatched, alternating; competition: saturated /fast, rps and p99 "
        "with/without in adjacent phases",
        "quick": args.quick,
        "params": vars(args),
        "sets": [s.label for s in sets],
        "loadavg_before": h.loadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
    }
    if args.part in ("both", "interference"):
        result["interference"] = interference(sets, args.rounds, args.seconds, args.warm, args.rate)
    if args.part in ("both", "competition"):
        result["competition"] = competition(
            sets,
            args.pairs,
            args.max_pairs,
            args.comp_seconds,
            args.warm,
            args.concurrency,
            args.foreign_max,
            args.quiet_wait,
        )
    result["loadavg_after"] = h.loadavg()
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    print_tables(result)
    print(f"elapsed {result['elapsed_s']} s")
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    for part in ("interference", "competition"):
        if part in result:
            assert result[part]["rows"], f"{part}: no rows"
            for row in result[part]["rows"]:
                assert all(v is not None for v in row.values()), row
    return 0


if __name__ == "__main__":
    sys.exit(main())
