"""What `attach ssh://host/PID` costs the link: the stream's bytes per second, and the bytes on
the wire through a real sshd, at defaults, at 200 threads and at 10k sockets, with and
without `--lean`; plus the bundle's size and the time to the first sample.

    python bench/bench_remote.py [--seconds 20] [--quick]

Stream bytes: a local collector (`python -m lifescope.collector PID`), its stdout counted
after a warm-up. Wire bytes: a `RemoteSession` through an OpenSSH server started on loopback
(tests/remote/sshd.py; root only), `bytes_received` of the ssh client's TCP socket (`ss -ti`)
over the same span: encrypted, and compressed when `--lean` turns ssh compression on. The
targets run as root, the ssh user reaches them with `--sudo`. Both paths run `--full-rate`: on a
shared 2-core machine, load shedding (×0.25 while the machine is saturated) would otherwise
decide the numbers. Writes bench/results/remote.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lifescope.demo.children import start_demo_server, start_load  # noqa: E402
from lifescope.options import CollectorOptions  # noqa: E402
from lifescope.remote import spec  # noqa: E402
from lifescope.remote.link import RemoteSession  # noqa: E402
from lifescope.samples import CollectorCost  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "remote.json"
WARM_S = 4.0

THREADS = """
import threading, time
def worker(i):
    while True:
        if i % 10 == 0:
            sum(range(20000))  # a few busy ones
        time.sleep(0.05)
for i in range(200):
    threading.Thread(target=worker, args=(i,), name=f"worker-{i}", daemon=True).start()
print("READY", flush=True)
time.sleep(3600)
"""

SOCKETS = """
import resource, socket, time
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
port = listener.getsockname()[1]
socks = []
for start in range(0, 5000, 1000):
    for _ in range(1000):
        socks.append(socket.create_connection(("127.0.0.1", port)))
    for _ in range(1000):
        socks.append(listener.accept()[0])
print("READY", flush=True)
time.sleep(3600)
"""


@contextmanager
def scenario(name: str) -> Iterator[int]:
    if name == "defaults":
        server = start_demo_server(port=0, flags=[])
        load = start_load(
            server.url, rate=30, concurrency=6, duration=600, mix="fast=5,db=2,sleep=2"
        )
        try:
            yield server.pid
        finally:
            load.stop()
            server.stop()
        return
    code = THREADS if name == "200 threads" else SOCKETS
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"READY")
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def stream_rate(pid: int, seconds: float, lean: bool) -> float:
    """Bytes per second of the collector's stream, after the warm-up."""
    argv = [sys.executable, "-m", "lifescope.collector", str(pid), "--seconds", str(seconds),
            "--full-rate"]  # fmt: skip
    proc = subprocess.Popen([*argv, *(["--lean"] if lean else [])], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    started = time.monotonic()
    counted = 0
    counting_since = None
    while chunk := proc.stdout.read1(65536):
        if time.monotonic() - started >= WARM_S:
            counting_since = counting_since or time.monotonic()
            counted += len(chunk)
    proc.wait()
    return counted / (time.monotonic() - counting_since) if counting_since else 0.0


def _received(ssh_pid: int) -> int:
    """bytes_received of the TCP socket the ssh client `ssh_pid` owns."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout
    ours = False
    for line in out.splitlines():
        if not line[:1].isspace():
            ours = f"pid={ssh_pid}," in line
        elif ours and (found := re.search(r"bytes_received:(\d+)", line)):
            return int(found.group(1))
    return 0


def wire_rate(host, pid: int, seconds: float, lean: bool) -> dict[str, float]:  # type: ignore[no-untyped-def]
    target = spec.parse(host.url("a", pid))
    options = CollectorOptions(seconds=seconds, lean=lean, full_rate=True)
    session = RemoteSession(target, options, sudo=True, reconnect=False)
    marks: dict[str, float] = {}

    def read() -> None:
        for sample in session.samples():
            now = time.monotonic()
            if isinstance(sample, CollectorCost) and "t0" not in marks:
                marks["t0"] = now
            ssh_pid = session.current.pid if session.current is not None else 0
            if "t0" in marks and "b0" not in marks and now - marks["t0"] >= WARM_S:
                marks["b0"], marks["w0"] = _received(ssh_pid), now
            if "b0" in marks and isinstance(sample, CollectorCost):  # once a second: ss is slow
                marks["b1"], marks["w1"] = _received(ssh_pid), now

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(seconds + 120)
    first = session.first
    assert first is not None
    return {
        "wire_bytes_per_s": (marks["b1"] - marks["b0"]) / (marks["w1"] - marks["w0"]),
        "bundle_bytes": first.shipped_bytes,
        "first_sample_s": first.first_sample_s or 0.0,
        "host_python": first.host_python,  # type: ignore[dict-item]
    }


def main() -> int:
    # SIGTERM must unwind like Ctrl-C: the sshd, its users and the targets are removed in
    # `finally` blocks, which Python's default SIGTERM (an immediate exit) would skip.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="defaults only, 8 s")
    args = parser.parse_args()
    seconds = 8.0 if args.quick else args.seconds
    names = ["defaults"] if args.quick else ["defaults", "200 threads", "10k sockets"]
    sys.path.insert(0, str(ROOT))
    from tests.remote import sshd

    why = sshd.available()
    results: dict[str, dict[str, object]] = {}
    with sshd.running(("a",), sudoers=("a",)) if why is None else _none() as host:
        if host is not None:
            os.environ["LIFESCOPE_SSH"] = host.ssh_command
        for name in names:
            with scenario(name) as pid:
                for lean in (False, True):
                    key = f"{name}{' lean' if lean else ''}"
                    row: dict[str, object] = {"stream_bytes_per_s": stream_rate(pid, seconds, lean)}
                    if host is not None:
                        row.update(wire_rate(host, pid, seconds, lean))
                    results[key] = row
                    print(f"{key:<18} " + "  ".join(
                        f"{k} {v:,.0f}" if isinstance(v, float) and v > 10 else f"{k} {v}"
                        for k, v in row.items()), flush=True)  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"seconds": seconds, "results": results}, indent=2))
    return 0


@contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
