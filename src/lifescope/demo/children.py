"""Start and stop the demo server and load generator as child processes, without leaking them.

``lifescope demo`` and the test-suite both need a real target in a separate process (lifescope
observes from outside; an in-process target would share our GIL and our /proc entry). Orphaned
demo servers are the failure that matters here: a wedged pathology server left on a laptop or a CI
box keeps burning CPU. So every child is stopped by pid (SIGTERM, then SIGKILL), reaped, stopped
again at interpreter exit or on a signal if the caller forgot (`lifescope.lifecycle`), and asked
to die with its parent if we crash.

Both children also take live toggles over a small loopback HTTP control endpoint (the protocol
is in ``lifescope.demo.toggles``): ``DemoServer.set_toggle``/``LoadGen.set_mode`` change one,
``toggles()`` reads them back.

Stdlib only: the server and load generator import helpers from here, and they must start fast.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import ProxyHandler, Request, build_opener

from lifescope import lifecycle
from lifescope.demo.toggles import CONTROL_PATH

_STOP_GRACE_S = 3.0
_TAIL_LINES = 200

LOOPBACK_HELP = "127.0.0.0/8, ::1, localhost"


# ------------------------------------------------------------------------------ loopback checks


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped) and the literal name ``localhost``.

    Other names are refused rather than resolved: a DNS answer can change between our check and
    the connect, and the demo's whole contract is that its traffic never leaves the machine.
    """
    h = host.strip().strip("[]").rstrip(".").lower()
    if h == "localhost":
        return True
    if "%" in h:  # scoped IPv6 literal, e.g. fe80::1%eth0
        h = h.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def check_loopback_url(url: str) -> str:
    """Return the host of an http(s) URL to loopback; else ValueError with a one-line reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"refusing URL {url!r}: scheme must be http or https")
    host = parts.hostname
    if not host:
        raise ValueError(f"refusing URL {url!r}: no host")
    if not is_loopback_host(host):
        raise ValueError(
            f"refusing non-loopback URL {url!r}: host {host!r} is not one of {LOOPBACK_HELP}"
        )
    return host


# -------------------------------------------------------------------------------- pipe draining


class _PipeDrain(threading.Thread):
    """Reads a child's pipe to EOF so the child never blocks on a full pipe.

    Keeps only the last lines (bounded memory, enough for an error message) and remembers the
    first line starting with ``watch_prefix`` — the READY handshake.
    """

    def __init__(self, pipe: IO[bytes], name: str, watch_prefix: str | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self._pipe = pipe
        self._watch_prefix = watch_prefix
        self._lock = threading.Lock()
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.watched_line: str | None = None
        self.watched = threading.Event()
        self.eof = threading.Event()

    def run(self) -> None:
        try:
            for raw in iter(self._pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._lock:
                    self._tail.append(line)
                if (
                    self._watch_prefix is not None
                    and self.watched_line is None
                    and line.startswith(self._watch_prefix)
                ):
                    self.watched_line = line
                    self.watched.set()
        except (OSError, ValueError):
            pass
        finally:
            self.eof.set()
            with contextlib.suppress(OSError):
                self._pipe.close()

    def tail(self, n: int = 20) -> list[str]:
        with self._lock:
            return list(self._tail)[-n:]


# --------------------------------------------------------------------------------- child handle


class ControlError(RuntimeError):
    """A control request failed or was refused; the message carries the child's own reason."""


# No proxies, whatever the environment says: control traffic must go straight to loopback.
_CONTROL_OPENER = build_opener(ProxyHandler({}))
_CONTROL_TIMEOUT_S = 5.0


def control_request(
    base_url: str, name: str | None = None, value: bool | float | None = None
) -> dict[str, object]:
    """GET the control state of a child at ``base_url``, or POST one toggle and get the new state.

    ``value`` True/False sends ``on=1``/``on=0`` (the toggle's default on-value, or off); a number
    sends ``value=N``. Raises ControlError with the child's message on any failure.
    """
    check_loopback_url(base_url)
    url = base_url.rstrip("/") + CONTROL_PATH
    data = None
    if name is not None:
        if isinstance(value, bool):
            params = {"on": "1" if value else "0"}
        elif isinstance(value, (int, float)) and math.isfinite(value):
            params = {"value": _number(value)}
        else:
            raise ValueError(f"toggle value must be a bool or a finite number, not {value!r}")
        url += "/" + quote(name, safe="") + "?" + urlencode(params)
        data = b""
    request = Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with _CONTROL_OPENER.open(request, timeout=_CONTROL_TIMEOUT_S) as response:
            body = response.read()
    except HTTPError as exc:
        reason = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
            reason = str(json.loads(reason)["error"])
        raise ControlError(f"{url}: HTTP {exc.code}: {reason}") from None
    except (URLError, OSError) as exc:
        raise ControlError(f"{url}: {exc}") from None
    state = json.loads(body)
    if not isinstance(state, dict):
        raise ControlError(f"{url}: unexpected answer {body[:80]!r}")
    return state


class _Child:
    """A spawned child with drained pipes and an idempotent, reaping ``stop()``."""

    def __init__(self, proc: subprocess.Popen[bytes], label: str, watch: str | None) -> None:
        self.proc = proc
        self.pid: int = proc.pid
        self._label = label
        self._stop_lock = threading.Lock()
        assert proc.stdout is not None and proc.stderr is not None
        self._stdout = _PipeDrain(proc.stdout, f"{label}-stdout-{proc.pid}", watch)
        self._stderr = _PipeDrain(proc.stderr, f"{label}-stderr-{proc.pid}")
        self._stdout.start()
        self._stderr.start()
        # A handle the caller dropped is still stopped at exit, and on a signal (lifecycle).
        lifecycle.track(proc)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, n: int = 20) -> list[str]:
        return self._stderr.tail(n)

    def stdout_tail(self, n: int = 20) -> list[str]:
        return self._stdout.tail(n)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit on its own; raises subprocess.TimeoutExpired."""
        code = self.proc.wait(timeout)
        self._join_drains()
        return code

    def stop(self, timeout: float = _STOP_GRACE_S) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; always reaps. Safe to call twice.

        Returns the exit code (negative signal number if killed by a signal).
        """
        with self._stop_lock:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            lifecycle.untrack(self.proc)
            self._join_drains()
            assert self.proc.returncode is not None
            return self.proc.returncode

    def _join_drains(self) -> None:
        # A grandchild holding the pipe open would keep these alive; they are daemons, so bound it.
        self._stdout.join(1.0)
        self._stderr.join(1.0)

    def _wait_ready(self, timeout: float) -> list[int]:
        """Wait for ``READY <port> [<port>...]`` on stdout and return the ports; on failure
        kill the child and raise RuntimeError with its stderr tail."""
        deadline = time.monotonic() + timeout
        while not self._stdout.watched.wait(0.02):
            if self.proc.poll() is not None and self._stdout.eof.is_set():
                raise self._kill_and_describe("exited before printing READY")
            if time.monotonic() >= deadline:
                raise self._kill_and_describe(f"did not print READY within {timeout:g} s")
        line = self._stdout.watched_line or ""
        try:
            ports = [int(word) for word in line.split()[1:]]
            if not ports:
                raise ValueError(line)
            return ports
        except ValueError:
            raise self._kill_and_describe(f"printed a malformed READY line {line!r}") from None

    def _kill_and_describe(self, reason: str) -> RuntimeError:
        self.stop(timeout=0)
        tail = "\n".join(self.stderr_tail(20)) or "(no stderr)"
        return RuntimeError(
            f"{self._label} (pid {self.pid}) {reason}; exit code {self.proc.returncode}; "
            f"stderr tail:\n{tail}"
        )


class DemoServer(_Child):
    """A running ``lifescope.demo.server`` child. Use as a context manager to stop it on exit."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str) -> None:
        super().__init__(proc, "demo-server", watch="READY ")
        self.host = host
        self.port: int = 0
        self.control_port: int = 0
        """The server's control-only listener on 127.0.0.1: toggles work through it even while
        the main listener is in an accept stall."""

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port or self.port}"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DemoServer(pid={self.pid}, url={self.url!r}, returncode={self.returncode})"

    def control_state(self) -> dict[str, object]:
        """``{"toggles": {...}, "status": {"accepting", "requests", ...}}`` from the server."""
        return control_request(self.control_url)

    def toggles(self) -> dict[str, float]:
        """Every live toggle's current value (0 = off); see ``lifescope.demo.toggles``."""
        return toggle_values(self.control_state())

    def set_toggle(self, name: str, value: bool | float) -> dict[str, float]:
        """Set one server toggle now (True = its default on-value); returns all toggles."""
        return toggle_values(control_request(self.control_url, name, value))


class LoadGen(_Child):
    """A running ``lifescope.demo.load`` child; its one-line summary is read after it exits.

    Its first line is ``READY <port>``: the loopback port of its control endpoint, through which
    ``set_mode`` switches the misbehaving clients (slow readers, flood, churn) at run time.
    """

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        super().__init__(proc, "demo-load", watch="READY ")
        self.url = url
        self.control_port: int = 0

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def control_state(self) -> dict[str, object]:
        """``{"toggles": {...}, "status": {"flood_open", "slow_readers_open", ...}}``."""
        return control_request(self.control_url)

    def toggles(self) -> dict[str, float]:
        """Every mode's current value (0 = off); see ``lifescope.demo.toggles.LOAD_MODES``."""
        return toggle_values(self.control_state())

    def set_mode(self, name: str, value: bool | float) -> dict[str, float]:
        """Set one load mode now (True = its default on-value); returns all modes."""
        return toggle_values(control_request(self.control_url, name, value))

    @property
    def summary(self) -> str | None:
        """The summary line (``requests=... errors=... rps=...``) once the child has exited."""
        for line in reversed(self.stdout_tail(_TAIL_LINES)):
            if line.startswith("requests="):
                return line
        return None

    def summary_fields(self) -> dict[str, float]:
        """The summary parsed into numbers; empty if there is no summary (yet)."""
        fields: dict[str, float] = {}
        for token in (self.summary or "").split():
            key, sep, value = token.partition("=")
            if sep:
                try:
                    fields[key] = float(value)
                except ValueError:
                    continue
        return fields

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LoadGen(pid={self.pid}, url={self.url!r}, returncode={self.returncode})"


def _number(value: float) -> str:
    """A toggle value for a URL or a flag, without ``:g``'s rounding to six digits."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def toggle_values(state: Mapping[str, object]) -> dict[str, float]:
    """The ``{name: value}`` toggles of a control answer (``control_request``)."""
    toggles = state.get("toggles")
    if not isinstance(toggles, dict):
        raise ControlError(f"control answer has no toggles: {state!r}")
    return {str(k): float(v) for k, v in toggles.items()}


# ------------------------------------------------------------------------------------- spawning


def _child_env(python: str, die_with_parent: bool) -> dict[str, str]:
    env = lifecycle.child_env(die_with_parent)
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        # Another interpreter (e.g. a different CPython to attach to) may not have lifescope
        # installed. Point it at our source tree — but never at our site-packages, whose compiled
        # extensions belong to this interpreter's version.
        import lifescope

        src_root = os.path.dirname(os.path.dirname(os.path.abspath(lifescope.__file__)))
        if os.path.basename(src_root) not in ("site-packages", "dist-packages"):
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = src_root + (os.pathsep + old if old else "")
    return env


def _spawn(argv: list[str], python: str, die_with_parent: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(python, die_with_parent),
        close_fds=True,
    )


def start_demo_server(
    port: int = 0,
    flags: Sequence[str] = (),
    python: str = sys.executable,
    timeout: float = 10.0,
    *,
    host: str = "127.0.0.1",
    die_with_parent: bool = True,
) -> DemoServer:
    """Spawn ``python -m lifescope.demo.server`` and return once its listener accepts connections.

    ``flags`` are extra server flags (``["--gil-hog", "--slow-middleware", "200"]``). On a missing
    or late ``READY`` line the child is killed and RuntimeError carries its stderr tail.
    """
    if not is_loopback_host(host):
        raise ValueError(f"refusing non-loopback host {host!r}: use one of {LOOPBACK_HELP}")
    argv = [python, "-m", "lifescope.demo.server", "--host", host, "--port", str(port), *flags]
    server = DemoServer(_spawn(argv, python, die_with_parent), host)
    ports = server._wait_ready(timeout)
    server.port = ports[0]
    server.control_port = ports[1] if len(ports) > 1 else ports[0]
    return server


def format_mix(mix: Mapping[str, float] | str | None) -> str | None:
    """Render a route mix for ``--mix``: ``{"fast": 5, "db": 2}`` -> ``"fast=5,db=2"``."""
    if mix is None or isinstance(mix, str):
        return mix
    return ",".join(f"{name}={weight:g}" for name, weight in mix.items())


def start_load(
    url: str,
    rate: float = 50.0,
    concurrency: int = 8,
    duration: float = 60.0,
    mix: Mapping[str, float] | str | None = None,
    python: str = sys.executable,
    *,
    max_requests: int | None = None,
    modes: Mapping[str, float] | None = None,
    die_with_parent: bool = True,
    timeout: float = 10.0,
) -> LoadGen:
    """Spawn ``python -m lifescope.demo.load`` against a loopback URL; it runs in the background.

    Returns once the child's control endpoint is up (its ``READY`` line), so ``set_mode`` works
    at once. ``modes`` are initial mode values (``{"flood": 50}``). The URL is checked here too
    (ValueError), so a bad target fails in the caller, not in a child.
    """
    check_loopback_url(url)
    argv = [
        python,
        "-m",
        "lifescope.demo.load",
        "--url",
        url,
        "--rate",
        f"{rate:g}",
        "--concurrency",
        str(concurrency),
        "--duration",
        f"{duration:g}",
    ]
    mix_arg = format_mix(mix)
    if mix_arg is not None:
        argv += ["--mix", mix_arg]
    if max_requests is not None:
        argv += ["--max-requests", str(max_requests)]
    for name, value in (modes or {}).items():
        argv += ["--mode", f"{name}={_number(value)}"]
    load = LoadGen(_spawn(argv, python, die_with_parent), url)
    load.control_port = load._wait_ready(timeout)[0]
    return load
