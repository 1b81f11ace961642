"""Check the native stack walker against py-spy on live targets (issue 17 spike): correctness.

    python bench/check_native_stacks.py [--rounds 15] [--python PYTHON]

Why: the walker must read what py-spy reads, or replacing py-spy's windows would change what
the analysis concludes. Three targets on loopback: a threads script (a thread three deep in
known functions, one parked in ``time.sleep``), an aiohttp server and an ``http.server``
``ThreadingHTTPServer``, both under a little load from client threads here (keep-alive GETs
whose handlers nest a few Python calls and offload to a thread pool).

Each round: our walk, then ``py-spy dump --json`` (which pauses the target while it reads),
then our walk again; a thread agrees when either of our walks shows what py-spy showed — the
stacks of busy threads change between the three readings, so the bracketing is the fairest
"same moment" without stopping the target ourselves. Per target it reports how many
(round, thread) pairs agree on: the thread set; the innermost frame's function and file; the
whole stack's functions and files; and the lines too. Results to
``bench/results/native_stacks_check.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _harness as h

from lifescope.probes.native_stacks import NativeStacks

THREADS = """
import threading, time

class Worker:
    def outer(self):
        return self.middle()

    def middle(self):
        return inner_spin()

def inner_spin():
    x = 0
    while True:
        x += 1

def parked():
    time.sleep(3600)

threading.Thread(target=Worker().outer, name="spinner", daemon=True).start()
threading.Thread(target=parked, name="parked", daemon=True).start()
print("listening", flush=True)
time.sleep(3600)
"""

AIOHTTP = """
import asyncio, sys, time
from aiohttp import web

def leaf(n):
    return sum(i * i for i in range(n))

def render(n):
    return str(leaf(n))

def blocking_io():
    time.sleep(0.003)
    return leaf(200)

async def work(request):
    body = render(3000)
    await asyncio.sleep(0.001)
    await asyncio.get_running_loop().run_in_executor(None, blocking_io)
    return web.Response(text=body)

app = web.Application()
app.router.add_get("/", work)
print("listening", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""

HTTP_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def leaf(n):
    return sum(i * i for i in range(n))

def render(n):
    return str(leaf(n)).encode()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = render(3000)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("listening", flush=True)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load:
    """Client threads doing keep-alive GETs on loopback until stopped."""

    def __init__(self, port: int, clients: int = 3) -> None:
        self.port = port
        self.stop = threading.Event()
        self.requests = 0
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                while not self.stop.is_set():
                    conn.request("GET", "/")
                    conn.getresponse().read()
                    self.requests += 1
                    time.sleep(0.002)
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


def start(python: str, source: str, tmp: str, name: str) -> tuple[subprocess.Popen[bytes], int]:
    script = Path(tmp) / f"target_{name}.py"  # not aiohttp.py: it would shadow aiohttp
    script.write_text(source)
    port = free_port()
    proc = subprocess.Popen(
        [python, str(script), str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    if name != "threads":
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.1)
    time.sleep(0.5)
    return proc, port


def ours(stacks: NativeStacks) -> dict[int, list[tuple[str, str, int]]]:
    """tid → [(name, file, line)] innermost first, from one walk (torn threads left out)."""
    out: dict[int, list[tuple[str, str, int]]] = {}
    for _, threads in stacks.walk():
        for raw, status, packed in threads:
            tid = stacks.tid(raw)
            if tid is None:
                continue
            frames = stacks.frames(packed) if status in (0, 2) else None
            if frames is not None:
                out[tid] = [(f.name, f.file, f.line) for f in frames]
            elif status == 3:
                out[tid] = []
    return out


def pyspy_dump(
    pid: int, stacks: NativeStacks, nonblocking: bool = False
) -> dict[int, list[tuple[str, str, int]]]:
    """tid → py-spy's frames; on 3.8-3.10 py-spy may name a thread only by its pthread_t
    (``thread_id``), mapped to a tid the way the walker's samples are."""
    proc = subprocess.run(
        [h.pyspy_binary(), "dump", "--pid", str(pid), "--json"]
        + (["--nonblocking"] if nonblocking else []),
        capture_output=True,
        timeout=30,
    )
    out: dict[int, list[tuple[str, str, int]]] = {}
    for thread in json.loads(proc.stdout or b"[]"):
        frames = [
            (str(f["name"]), str(f["filename"]), int(f.get("line") or 0))
            for f in thread.get("frames", [])
        ]
        tid = thread.get("os_thread_id") or stacks.tid(int(thread["thread_id"]))
        if tid is not None:
            out[int(tid)] = frames
    return out


def stopped(pid: int, timeout: float = 2.0) -> None:
    """Wait until every thread of ``pid`` is in the stopped state: kill() returns before the
    signal has stopped them all, and a thread still running changes its stack."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as handle:
                states.append(handle.read().rsplit(")", 1)[1].split()[0])
        if states and all(state in ("T", "t") for state in states):
            return
        time.sleep(0.001)


def compare(pid: int, rounds: int, frozen: bool) -> dict[str, Any]:
    """``frozen``: the target is stopped (SIGSTOP) while both read it, so both see one moment
    (py-spy then reads with ``--nonblocking``: it must not wait on a stopped process);
    otherwise our walks bracket a live ``py-spy dump``."""
    stacks = NativeStacks(pid)
    counts = {"pairs": 0, "threads_same": 0, "innermost": 0, "functions_files": 0, "lines": 0}
    misses: list[dict[str, Any]] = []
    for _ in range(rounds):
        if frozen:
            os.kill(pid, signal.SIGSTOP)
            try:
                stopped(pid)
                before = ours(stacks)
                truth = pyspy_dump(pid, stacks, nonblocking=True)
            finally:
                os.kill(pid, signal.SIGCONT)
            after = before
        else:
            before = ours(stacks)
            truth = pyspy_dump(pid, stacks)
            after = ours(stacks)
        counts["threads_same"] += set(truth) <= set(before) | set(after)
        for tid, want in truth.items():
            counts["pairs"] += 1
            got = [g for g in (before.get(tid), after.get(tid)) if g is not None]
            ff = [(n, f) for n, f, _ in want]
            inner = any(g[:1] and want[:1] and g[0][:2] == want[0][:2] for g in got) or (
                not want and any(not g for g in got)
            )
            whole = any([(n, f) for n, f, _ in g] == ff for g in got)
            lines = any(g == want for g in got)
            counts["innermost"] += inner
            counts["functions_files"] += whole
            counts["lines"] += lines
            if not whole and len(misses) < 8:
                misses.append({"tid": tid, "py-spy": want[:4], "ours": [g[:4] for g in got]})
        time.sleep(0.1)
    return {**counts, "rounds": rounds, "misses": misses}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--python", default=sys.executable, help="the targets' (aiohttp)")
    args = parser.parse_args()
    result: dict[str, Any] = {"method": __doc__, "python": args.python}
    with tempfile.TemporaryDirectory(prefix="lifescope-check-") as tmp:
        for name, source in (("threads", THREADS), ("aiohttp", AIOHTTP),
                             ("http_server", HTTP_SERVER)):  # fmt: skip
            if name == "aiohttp" and subprocess.run([args.python, "-c", "import aiohttp"],
                                                    capture_output=True).returncode:  # fmt: skip
                print(f"{name:28} skipped: no aiohttp for {args.python}")
                continue
            proc, port = start(args.python, source, tmp, name)
            load = Load(port) if name != "threads" else None
            try:
                time.sleep(0.5)
                result[name] = compare(proc.pid, args.rounds, frozen=True)
                result[name + " (live, bracketed)"] = compare(proc.pid, args.rounds, False)
                if load is not None:
                    result[name]["requests"] = load.requests
            finally:
                if load is not None:
                    load.close()
                h.stop(proc)
            for key in (name, name + " (live, bracketed)"):
                r = result[key]
                print(
                    f"{key:28} {r['pairs']} (round, thread) pairs: thread set {r['threads_same']}"
                    f"/{r['rounds']}, innermost {r['innermost']}, functions+files "
                    f"{r['functions_files']}, with lines {r['lines']}",
                    flush=True,
                )
                for miss in r["misses"][:2]:
                    print("   miss:", miss)
    h.RESULTS.mkdir(exist_ok=True)
    (h.RESULTS / "native_stacks_check.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
