"""Run one scenario for real: start its server, drive its load, collect with lifescope.

Used by ``test_matrix.py`` and ``tools/fidelity.py`` alike. What matters here is that nothing
outlives a run and that a busy machine (2 cores shared with other test runs) changes nothing
but the waiting: servers start in their own session and are stopped by process group *and* by
each descendant's pid (pre-fork workers, multiprocessing's resource tracker, uWSGI's router);
every client is a thread with a 60 s deadline; every wait is bounded and generous.

The collection is exactly `lifescope snapshot PID --json`: ``session.collect`` with the default
probes, ``report.build`` over the whole window, ``report.to_json``.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lifescope.analysis import report
from lifescope.session import collect
from tests.conftest import PYTHON, free_port, wait_for
from tests.fidelity.scenarios import Load, Scenario, Server

APPS = Path(__file__).resolve().parent / "apps"
START_TIMEOUT_S = 90.0
"""Django and FastAPI import in seconds; on a loaded machine, many seconds."""
CLIENT_DEADLINE_S = 60.0
SLOW_READ_CHUNK = 16 * 1024
SLOW_READ_PAUSE_S = 0.05
STAGGER_S = 0.07
"""Between the starts of two back-to-back clients (`Clients._loop`)."""


class ServerFailed(RuntimeError):
    """The scenario could not be set up (not a lifescope verdict): the test errors."""


# ------------------------------------------------------------------------------ processes


def children(pid: int) -> list[int]:
    """Direct children, from /proc/PID/task/*/children (ours to read: we started them)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
                found.update(int(c) for c in text.split())
    return sorted(found)


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children(stack.pop()):
            out.append(child)
            stack.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(raw[raw.rindex(b")") + 2 :].split()[19])


def listener_drops(port: int) -> int | None:
    """The kernel's own drop count for one listening socket (sock_diag skmeminfo, which
    ``ss -ltm`` prints as ``d``): the truth the per-listener drop check compares against."""
    try:
        out = subprocess.run(
            ["ss", "-ltmnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.findall(r"skmem:\([^)]*\bd(\d+)\)", out)
    return sum(int(d) for d in found) if found else None


def _tcp_rows() -> list[list[str]]:
    """The fields of every row of /proc/net/tcp and tcp6 (our own namespace: the servers'),
    read directly rather than with lifescope's parser, which is what is under test."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            rows += [line.split() for line in handle][1:]
    return rows


def _is_listening(port: int) -> bool:
    hexport = f":{port:04X}"
    return any(f[1].endswith(hexport) and f[3] == "0A" for f in _tcp_rows() if len(f) > 3)


def _established(pid: int) -> int:
    """ESTABLISHED TCP sockets among a process's fds (to tell the busiest worker)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    return sum(1 for f in _tcp_rows() if len(f) > 9 and f[3] == "01" and f[9] in inodes)


def _http_ok(port: int, path: str = "/ping") -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Process:
    """A child started in its own session, stopped with everything it forked."""

    _alive: ClassVar[set[Process]] = set()

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        path = os.pathsep.join(filter(None, (str(APPS), os.environ.get("PYTHONPATH"))))
        env = dict(os.environ, PYTHONPATH=path)
        env.pop("PYTHONSTARTUP", None)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=APPS,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        Process._alive.add(self)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the group, then SIGKILL to the group and to every descendant seen.

        Descendants are remembered with their start time before anything is signalled, so a
        pid reused after a worker exited is never killed."""
        Process._alive.discard(self)
        family = [(p, _start_ticks(p)) for p in (self.pid, *descendants(self.pid))]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace_s)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_start_ticks(p) == t for p, t in family[1:]):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid, ticks in family:
            if ticks is not None and _start_ticks(pid) == ticks and pid != self.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc.wait()

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls._alive):
            proc.stop(grace_s=1.0)


atexit.register(Process.stop_all)


def _argv(argv: tuple[str, ...], port: int) -> list[str]:
    values = {"python": PYTHON, "bin": str(Path(PYTHON).parent), "port": str(port)}
    return [arg.format(**values) for arg in argv]


class RunningServer:
    def __init__(self, server: Server, log_dir: Path) -> None:
        self.server = server
        self.port = free_port()
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", server.name)
        self.process = Process(_argv(server.argv, self.port), log_dir / f"{safe}.log")
        try:
            self._wait_ready()
        except BaseException:
            self.process.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        """The worker processes by construction of the command: direct children carrying the
        server's worker mark (every Python child where there is none)."""
        mark = self.server.worker_mark
        return [c for c in children(self.pid) if mark is None or mark in cmdline(c)]

    def helpers(self) -> list[int]:
        return [c for c in children(self.pid) if c not in self.workers()]

    def _wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.proc.poll() is not None:
                raise ServerFailed(
                    f"{self.server.name} exited with {self.process.proc.returncode}:\n"
                    + self.process.log_tail()
                )
            if len(self.workers()) < self.server.workers:
                return False
            if self.server.ready == "listen":
                return _is_listening(self.port)
            return _http_ok(self.port)

        try:
            wait_for(ready, timeout=START_TIMEOUT_S, step=0.2)
        except AssertionError as exc:
            why = f"{self.server.name} not ready in {START_TIMEOUT_S:.0f}s"
            raise ServerFailed(f"{why}:\n{self.process.log_tail()}") from exc
        if self.server.workers:
            # /ping proves one worker serves; give its siblings the same chance to import the app
            time.sleep(1.0)

    def settle(self) -> None:
        """Between scenarios: the last load's requests are over (a sync worker is free)."""
        if self.server.ready == "http":
            try:
                wait_for(lambda: _http_ok(self.port), timeout=30, step=0.1)
            except AssertionError as exc:
                raise ServerFailed(f"{self.server.name} stopped answering") from exc

    def stop(self) -> None:
        self.process.stop()


# ------------------------------------------------------------------------------ clients


class Clients:
    """One scenario's load: threads, each bounded by `CLIENT_DEADLINE_S` and a stop event."""

    def __init__(self, load: Load, port: int, log_dir: Path) -> None:
        self.load = load
        self.port = port
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + CLIENT_DEADLINE_S
        self.done: list[int] = [0] * max(1, load.clients)
        self.errors: list[str] = []
        self.neighbour: Process | None = None
        self.neighbour_port: int | None = None
        self._threads: list[threading.Thread] = []
        self._log_dir = log_dir

    def _running(self) -> bool:
        return not self.stop_event.is_set() and time.monotonic() < self.deadline

    def start(self) -> None:
        kind = self.load.kind
        if kind == "none":
            return
        if kind == "flood-neighbour":
            self.neighbour_port = free_port()
            argv = [PYTHON, "listener.py", str(self.neighbour_port), "1"]
            self.neighbour = Process(argv, self._log_dir / "neighbour.log")
            wait_for(lambda: _is_listening(self.neighbour_port or 0), timeout=30)
            self._spawn(self._flood, self.neighbour_port)
            return
        if kind == "flood":
            self._spawn(self._flood, self.port)
            return
        body = {"loop": self._loop, "slow-read": self._slow_read,
                "keepalive": self._keepalive, "connect": self._connect}[kind]  # fmt: skip
        for index in range(self.load.clients):
            self._spawn(body, index)

    def _spawn(self, target: Any, arg: int) -> None:
        thread = threading.Thread(target=target, args=(arg,), daemon=True, name=f"fidelity-{arg}")
        thread.start()
        self._threads.append(thread)

    def warm(self, timeout: float = 60.0) -> None:
        """Every client has been served once (or connected): the load is in its steady state."""
        if self.load.kind in ("none", "flood", "flood-neighbour"):
            time.sleep(1.0)  # a second of SYNs dropped before the window opens
            return
        try:
            wait_for(lambda: all(self.done), timeout=timeout, step=0.05)
        except AssertionError as exc:
            raise ServerFailed(
                f"load {self.load.describe()} never got going: done={self.done} {self.errors[-3:]}"
            ) from exc
        time.sleep(0.5)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(15)
        if self.neighbour is not None:
            self.neighbour.stop()

    # -- client bodies: each ends by itself at the deadline -------------------------------

    def _loop(self, index: int) -> None:
        # Clients start STAGGER_S apart, as independent users would. Started together, four
        # closed-loop clients of a 300 ms handler ran in lockstep, and the window's end (a
        # fixed time after a round of responses) fell for all four at once into the 40 ms
        # between a response and the next request, in 3 runs of 7 under two CPU hogs.
        if self.stop_event.wait(index * STAGGER_S):
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while self._running():
            try:
                conn.request("GET", self.load.path)
                conn.getresponse().read()
                self.done[index] += 1
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                time.sleep(0.05)
        conn.close()

    def _slow_read(self, index: int) -> None:
        """A small receive buffer and a slow reader: the server waits to write (L5)."""
        while self._running():
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(30)
                try:
                    sock.connect(("127.0.0.1", self.port))
                    sock.sendall(f"GET {self.load.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    while self._running():
                        if not sock.recv(SLOW_READ_CHUNK):
                            break
                        self.done[index] += 1
                        time.sleep(SLOW_READ_PAUSE_S)
                except OSError as exc:
                    self.errors.append(repr(exc))
                    time.sleep(0.05)

    def _keepalive(self, index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", self.load.path)
            conn.getresponse().read()
            self.done[index] += 1
            self.stop_event.wait(max(0.0, self.deadline - time.monotonic()))
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def _connect(self, index: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30):
                self.done[index] += 1
                self.stop_event.wait(max(0.0, self.deadline - time.monotonic()))
        except OSError as exc:
            self.errors.append(repr(exc))

    def _flood(self, port: int) -> None:
        """A new non-blocking connect every 50 ms, at most 80 open: once the backlog is full,
        each SYN (and each of its retransmissions) is dropped on that listener."""
        socks: list[socket.socket] = []
        try:
            while self._running():
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                socks.append(sock)
                if len(socks) > 80:
                    socks.pop(0).close()
                self.stop_event.wait(0.05)
        finally:
            for sock in socks:
                sock.close()


# ------------------------------------------------------------------------------ measuring


@dataclass
class Measurement:
    """What lifescope showed for one scenario, with the facts the checks need beside it."""

    scenario: str
    target_pid: int
    port: int
    snapshot: dict[str, Any]
    workers: list[int]
    """The server's worker pids (the truth's, from its command), at collection time."""
    helpers: list[int] = field(default_factory=list)
    own_drops: int | None = None
    """The target's listener drops over the collection (kernel per-socket count)."""
    neighbour_drops: int | None = None
    collect_s: float = 0.0


class Runner:
    """Measures scenarios one at a time, keeping a server up while consecutive scenarios
    share it (the table groups them), and caching each measurement for all its checks."""

    def __init__(self, seconds: float = 3.0, log_dir: Path | None = None) -> None:
        self.seconds = seconds
        tmp = Path(os.environ.get("TMPDIR", "/tmp"))
        self.log_dir = log_dir or tmp / f"lifescope-fidelity-{os.getpid()}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.current: RunningServer | None = None
        self.results: dict[str, Measurement] = {}
        """By scenario id (a re-measurement: "id#1")."""
        self.failures: dict[str, str] = {}

    def measure(self, scenario: Scenario, attempt: int = 0) -> Measurement:
        """The scenario's measurement number `attempt` (0: the first), measured once."""
        key = scenario.id if attempt == 0 else f"{scenario.id}#{attempt}"
        if key in self.results:
            return self.results[key]
        if key in self.failures:
            raise ServerFailed(self.failures[key])
        try:
            result = self._measure(scenario)
        except ServerFailed as exc:
            self.failures[key] = str(exc)
            self._drop_server()
            raise
        self.results[key] = result
        return result

    def _server(self, server: Server) -> RunningServer:
        if self.current is not None and self.current.server is not server:
            self._drop_server()
        if self.current is None:
            self.current = RunningServer(server, self.log_dir)
        return self.current

    def _drop_server(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None

    def _measure(self, scenario: Scenario) -> Measurement:
        running = self._server(scenario.server)
        running.settle()
        target = running.pid
        clients = Clients(scenario.load, running.port, self.log_dir)
        try:
            clients.start()
            clients.warm()
            if scenario.attach == "worker":
                # The kernel spreads connections unevenly over workers sharing a listener (one
                # may get all four): the worker to watch is the one serving the most of them.
                workers = running.workers()
                if not workers:
                    raise ServerFailed(f"{scenario.server.name}: no worker to attach to")
                target = max(workers, key=_established)
            own_before = listener_drops(running.port)
            near_before = listener_drops(clients.neighbour_port) if clients.neighbour_port else None
            started = time.monotonic()
            timeline = collect(target, self.seconds)
            took = time.monotonic() - started
            own_after = listener_drops(running.port)
            near_after = listener_drops(clients.neighbour_port) if clients.neighbour_port else None
            workers = running.workers()
            helpers = running.helpers()
        finally:
            clients.stop()
        snapshot = json.loads(json.dumps(report.to_json(report.build(timeline.window()))))
        return Measurement(
            scenario=scenario.id,
            target_pid=target,
            port=running.port,
            snapshot=snapshot,
            workers=workers,
            helpers=helpers,
            own_drops=_delta(own_before, own_after),
            neighbour_drops=_delta(near_before, near_after),
            collect_s=round(took, 2),
        )

    def close(self) -> None:
        self._drop_server()
        Process.stop_all()


def _delta(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


if __name__ == "__main__":  # a quick look at one scenario: python -m tests.fidelity.runner ID
    from tests.fidelity.scenarios import BY_ID

    runner = Runner()
    try:
        for name in sys.argv[1:]:
            print(json.dumps(runner.measure(BY_ID[name]).__dict__, indent=1, default=str))
    finally:
        runner.close()
