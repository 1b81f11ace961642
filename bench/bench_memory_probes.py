#!/usr/bin/env python3
"""Cost of each memory probe per CPython version, side by side (issue 13).

One target per version — the same script everywhere: an asyncio loop with 200 tasks parked
on an Event, plus two idle threads — and, for each, in this process:

* GIL read: µs per ``GilReader.read()`` (one ``process_vm_readv`` of the GIL word and the
  thread-state counter), median of 20 batches of 1,000 back-to-back reads;
* thread states: µs per walk of every thread state (``GilReader.threads()``: the interpreter
  list, each state, the TID mapping), median of 200;
* tasks: ms per ``AsyncioReader.read()`` pass over the 200 tasks (and µs per task), median
  of 20 passes;
* attach: ms for ``GilReader.open`` + ``AsyncioReader.open`` the first time (ELF parse,
  validation).

Versions: pyenv's 3.8-3.13, Debian's 3.14 and 3.15 chrooted (tests/interpreters.py provisions
them), and 3.14 in a container (own pid, mount and network namespaces). Run as root on an
otherwise quiet machine; each number is a median, the spread is printed beside it.

    python bench/bench_memory_probes.py            # prints a markdown table
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.interpreters import contained_pid, container_env, python_for  # noqa: E402

from lifescope.probes.asyncio_reader import AsyncioReader  # noqa: E402
from lifescope.probes.gil_reader import GilReader  # noqa: E402

TARGET = """
import asyncio, threading, time
def idle():
    while True:
        time.sleep(1)
for _ in range(2):
    threading.Thread(target=idle, daemon=True).start()
async def parked(ev):
    await ev.wait()
async def main():
    ev = asyncio.Event()
    tasks = [asyncio.ensure_future(parked(ev)) for _ in range(200)]
    await asyncio.sleep(0.1)
    print("READY", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15", "3.14-container"]


def _median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def measure(version: str, script: Path) -> dict[str, str]:
    container = version.endswith("-container")
    python = python_for(version.removesuffix("-container"))
    proc = subprocess.Popen(
        [python, str(script)],
        stdout=subprocess.PIPE,
        env=container_env() if container else None,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"READY")
        pid = contained_pid(proc.pid) if container else proc.pid
        started = time.perf_counter()
        gil = GilReader.open(pid)
        tasks = AsyncioReader.open(pid)
        attach_ms = (time.perf_counter() - started) * 1000
        batches = []
        for _ in range(20):
            t0 = time.perf_counter()
            for _ in range(1000):
                gil.read()
            batches.append((time.perf_counter() - t0) / 1000 * 1e6)
        walks = []
        for _ in range(200):
            t0 = time.perf_counter()
            gil.threads()
            walks.append((time.perf_counter() - t0) * 1e6)
        passes = []
        count = 0
        for _ in range(20):
            t0 = time.perf_counter()
            found, _, _ = tasks.read()
            passes.append((time.perf_counter() - t0) * 1000)
            count = len(found)
        per_task = [p * 1000 / max(1, count) for p in passes]
        return {
            "version": f"{version} ({gil.python_version})",
            "gil_us": _median_spread(batches),
            "threads_us": _median_spread(walks),
            "tasks_ms": f"{_median_spread(passes)} [{count} tasks]",
            "per_task_us": f"{statistics.median(per_task):.1f}",
            "syscalls": str(tasks.last_syscalls),
            "attach_ms": f"{attach_ms:.0f}",
        }
    finally:
        # In a container the target is PID 1 of its namespace and ignores SIGTERM: SIGKILL
        # the launcher (unshare --kill-child takes the target with it).
        proc.kill() if container else proc.terminate()
        proc.wait(5)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "target.py"
        script.write_text(TARGET)
        print(
            "| CPython | GIL read µs | thread-state walk µs | tasks pass ms | µs/task "
            "| syscalls/pass | attach ms |"
        )
        print("|---|---|---|---|---|---|---|")
        for version in sys.argv[1:] or VERSIONS:
            r = measure(version, script)
            print(
                f"| {r['version']} | {r['gil_us']} | {r['threads_us']} | {r['tasks_ms']} "
                f"| {r['per_task_us']} | {r['syscalls']} | {r['attach_ms']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
