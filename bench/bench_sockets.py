"""Benchmark the socket readers at server scale: how much does one sample of the sockets probe cost?

Why: the sockets probe runs 1–4 times a second beside a kHz GIL sampler, on the production host. The
design picks netlink sock_diag over psutil and ``/proc/net/tcp`` on the strength of these numbers,
so they must be reproducible: this script opens N loopback connection pairs *in this process* (so
the table has ~2N sockets, all ours) and times every way of reading them.

    python bench/bench_sockets.py [--quick] [--connections N] [--repeat 5]

Prints a table (median of ``--repeat`` runs, min–max) and writes ``bench/results/sockets.json``.
``--quick`` uses 500 connections and only checks that every reader ran and produced numbers.
Loopback only; every socket is closed with SO_LINGER 0 at the end so no TIME_WAIT is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Sized
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from lifescope.probes import procnet
from lifescope.probes.netlink_diag import LISTEN_ONLY, SockDiag, dump_tcp

RESULTS = Path(__file__).resolve().parent / "results" / "sockets.json"
FD_HEADROOM = 256  # fds kept free for Python, psutil, pytest-less imports and the listener


@dataclass(frozen=True, slots=True)
class Timing:
    """One reader's cost: median and spread over the repeats, and how many rows it returned."""

    name: str
    median_ms: float
    min_ms: float
    max_ms: float
    rows: int


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` and return what we got.

    Soft goes up to hard for free; if hard is still too low and we are privileged, try raising hard
    too (capped by fs.nr_open). Otherwise the caller shrinks N to fit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        except OSError:
            nr_open = wanted
        target = min(wanted, nr_open)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            pass
    new_soft = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, wanted))
    if new_soft == resource.RLIM_INFINITY:
        new_soft = wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return int(new_soft)


def open_pairs(n: int) -> tuple[socket.socket, list[socket.socket]]:
    """Open ``n`` established loopback pairs to one listener; return (listener, all endpoints)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    socks: list[socket.socket] = []
    batch = 1000  # stays below somaxconn so connects never wait on a full queue
    try:
        for start in range(0, n, batch):
            count = min(batch, n - start)
            for _ in range(count):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(count):
                server_side, _ = listener.accept()
                socks.append(server_side)
    except BaseException:
        close_all(listener, socks)
        raise
    return listener, socks


def close_all(listener: socket.socket, socks: list[socket.socket]) -> None:
    linger0 = struct.pack("ii", 1, 0)  # RST on close: no TIME_WAIT left behind by the benchmark
    for s in socks:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        s.close()
    listener.close()


def measure(name: str, fn: Callable[[], object], repeat: int) -> Timing:
    fn()  # warm-up: imports, caches, first-touch of kernel structures
    samples: list[float] = []
    rows = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        rows = len(result) if isinstance(result, Sized) else 1
    return Timing(name, statistics.median(samples), min(samples), max(samples), rows)


def psutil_process_connections() -> list[object]:
    proc = psutil.Process()
    method = getattr(proc, "net_connections", None) or proc.connections
    return list(method("tcp"))


def run(connections: int, repeat: int) -> dict[str, object]:
    limit = raise_fd_limit(2 * connections + FD_HEADROOM)
    n = min(connections, max(1, (limit - FD_HEADROOM) // 2))
    if n < connections:
        print(f"RLIMIT_NOFILE is {limit}: capping at {n} connections", file=sys.stderr)
    pid = os.getpid()
    load_before = os.getloadavg()[0]

    t0 = time.perf_counter()
    listener, socks = open_pairs(n)
    setup_s = time.perf_counter() - t0
    port = listener.getsockname()[1]
    try:
        diag = SockDiag()
        try:
            inodes = procnet.socket_inodes(pid)
            timings = [
                measure("netlink full dump + tcp_info", lambda: diag.dump_tcp(), repeat),
                measure(
                    "netlink full dump, no tcp_info",
                    lambda: diag.dump_tcp(want_info=False),
                    repeat,
                ),
                measure(
                    "netlink sport filter + tcp_info",
                    lambda: diag.dump_tcp(sport=port),
                    repeat,
                ),
                measure(
                    "netlink LISTEN-only",
                    lambda: diag.dump_tcp(states=LISTEN_ONLY, want_info=False),
                    repeat,
                ),
                measure("netlink one-shot (open+dump+close)", lambda: dump_tcp(), repeat),
                measure(
                    "/proc/PID/net/tcp{,6} parse", lambda: procnet.read_proc_net_tcp(pid), repeat
                ),
                measure(
                    "/proc parse + listener backlogs",
                    lambda: procnet.read_proc_net_tcp(pid, fd_by_inode=inodes),
                    repeat,
                ),
                measure(
                    "psutil.net_connections('tcp')", lambda: psutil.net_connections("tcp"), repeat
                ),
                measure("psutil Process.net_connections", psutil_process_connections, repeat),
                measure(
                    "socket_inodes() (readlink every fd)",
                    lambda: procnet.socket_inodes(pid),
                    repeat,
                ),
                measure("fd_usage()", lambda: procnet.fd_usage(pid), repeat),
                measure("listen_counters()", lambda: procnet.listen_counters(pid), repeat),
            ]
        finally:
            diag.close()
    finally:
        close_all(listener, socks)

    return {
        "connections": n,
        "endpoints": 2 * n,
        "repeat": repeat,
        "setup_s": round(setup_s, 3),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "psutil": psutil.__version__,
        "cpus": os.cpu_count(),
        # 1-minute load average before/after: a busy host inflates every row, not just one
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "unix_time": int(time.time()),
        "results": [asdict(t) for t in timings],
    }


def print_table(report: dict[str, object]) -> None:
    print(
        f"\n{report['connections']} loopback connections ({report['endpoints']} endpoints), "
        f"median of {report['repeat']}; kernel {report['kernel']}, Python {report['python']}, "
        f"{report['cpus']} CPUs; load average {report['loadavg_1m']}\n"
    )
    print(f"{'reader':<38} {'median ms':>10} {'min–max ms':>18} {'rows':>7}")
    print("-" * 76)
    results = report["results"]
    assert isinstance(results, list)
    for r in results:
        spread = f"{r['min_ms']:.2f}–{r['max_ms']:.2f}"
        print(f"{r['name']:<38} {r['median_ms']:>10.2f} {spread:>18} {r['rows']:>7}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="500 connections, sanity only")
    parser.add_argument("--connections", type=int, default=None, help="pairs to open (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per reader (5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    args = parser.parse_args(argv)
    connections = args.connections or (500 if args.quick else 10_000)

    report = run(connections, max(1, args.repeat))
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")

    if args.quick:
        results = report["results"]
        assert isinstance(results, list) and results
        for r in results:
            assert math.isfinite(r["median_ms"]) and r["median_ms"] >= 0, r
            assert r["rows"] > 0, r
    return 0


if __name__ == "__main__":
    sys.exit(main())
