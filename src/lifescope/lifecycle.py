"""Every process lifescope starts ends with it — on `q`, on SIGTERM, SIGHUP or SIGINT, and when
the process that started it disappears.

Why this is its own module: a Textual app's graceful exit writes to its terminal (restore the
screen, show the cursor) from a writer thread, and when the terminal is gone — a closed SSH
session, `tmux kill-session`, a browser tab of `--web` that went away — that write can block
forever. Seen here: `lifescope demo` left alive, re-parented to init, with its demo server and
load generator, after its tmux session was killed. So a signal does not wait for the UI's
graceful exit to stop the children: the handler sends them SIGTERM first, asks the UI to exit,
and a watchdog ends the process with ``os._exit`` if the graceful path has not finished within
a couple of seconds. A second signal exits at once.

Children are tracked here by their ``Popen`` (never by a bare pid, which may be reused once
reaped), and each is also asked to die with its parent (``PR_SET_PDEATHSIG``) so a SIGKILLed
lifescope leaves nothing behind either.

Stdlib only: the demo's server and load generator import it and must start fast.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable

PARENT_PID_ENV = "LIFESCOPE_PARENT_PID"
"""Set in a child's environment by `child_env`; the child arms PR_SET_PDEATHSIG when it sees it."""

CHILD_GRACE_S = 1.0
"""How long children get between SIGTERM and SIGKILL once lifescope itself is told to stop."""
EXIT_GRACE_S = 2.0
"""How long the UI's own graceful exit may take after a signal before the watchdog ends it."""
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

_PR_SET_PDEATHSIG = 1

_children: set[subprocess.Popen[bytes]] = set()
_lock = threading.Lock()
_exiting = threading.Event()


# ----------------------------------------------------------------------------- child processes


def track(proc: subprocess.Popen[bytes]) -> None:
    """Remember a child so a signal, or interpreter exit, stops it."""
    with _lock:
        _children.add(proc)


def untrack(proc: subprocess.Popen[bytes]) -> None:
    with _lock:
        _children.discard(proc)


def tracked() -> list[subprocess.Popen[bytes]]:
    with _lock:
        return list(_children)


def child_env(die_with_parent: bool = True, env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a child that should die with this process (see `arm_parent_death`)."""
    env = dict(os.environ if env is None else env)
    env.pop(PARENT_PID_ENV, None)
    if die_with_parent:
        env[PARENT_PID_ENV] = str(os.getpid())
    return env


def _signal_all(procs: Iterable[subprocess.Popen[bytes]], sig: int) -> None:
    for proc in procs:
        # send_signal polls first, so a reaped child's (possibly reused) pid is never signalled.
        with contextlib.suppress(ProcessLookupError, OSError):
            proc.send_signal(sig)


def terminate_all(grace_s: float = CHILD_GRACE_S) -> None:
    """SIGTERM every tracked child, SIGKILL those still alive after ``grace_s``; reap all."""
    procs = tracked()
    _signal_all(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        untrack(proc)


atexit.register(terminate_all)


def arm_parent_death(sig: int = signal.SIGTERM) -> None:
    """Called by a child at startup: ask the kernel to send ``sig`` when our spawner goes away.

    Done in the child after exec (keyed on `PARENT_PID_ENV`) instead of in a ``preexec_fn``:
    preexec_fn runs between fork and exec, which is unsafe when the parent has threads — and a
    Textual app always does. The parent pid is compared afterwards to close the race where the
    parent died before the prctl took effect.

    Caveat (Linux semantics): the signal fires when the *thread* that spawned us exits, not only
    the process. Spawn from a long-lived thread (normally the main one).
    """
    raw = os.environ.pop(PARENT_PID_ENV, None)  # pop: grandchildren must not inherit it
    if raw is None or not sys.platform.startswith("linux"):
        return
    try:
        expected_parent = int(raw)
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (ValueError, OSError, AttributeError):
        return
    if os.getppid() != expected_parent:
        raise SystemExit(0)


# ------------------------------------------------------------------------------------- signals


def exit_on_signals(request_exit: Callable[[int], object]) -> Callable[[], None]:
    """Make SIGTERM, SIGHUP and SIGINT end this process and its children, whatever state its
    terminal is in. ``request_exit(code)`` starts the graceful exit (it is called from the
    signal handler, so it must only schedule work). Returns a function restoring the old
    handlers.

    Python runs the handler on the main thread even while it is blocked in a lock or a write
    (the wait is interrupted, the handler runs, the wait resumes), so a wedged UI still gets
    here.
    """

    def handler(signum: int, _frame: object) -> None:
        code = 128 + signum
        if not begin_exit(code):
            os._exit(code)  # a second signal: the user means it
        with contextlib.suppress(Exception):
            request_exit(code)

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)

    return restore


def exiting() -> bool:
    """True once this process has begun to end (a signal): nothing new may be started, such
    as a reconnection of an `ssh://` session whose ssh was just stopped by that signal."""
    return _exiting.is_set()


def begin_exit(code: int) -> bool:
    """Start ending this process: SIGTERM to every child now (tracked ones, and any other
    direct child, such as the `attach` processes textual-serve starts for `demo --web`), then a
    watchdog that SIGKILLs the children after `CHILD_GRACE_S` and exits with ``code`` after
    `EXIT_GRACE_S` unless the caller's own graceful exit finished first. False if an exit was
    already under way."""
    if _exiting.is_set():
        return False
    _exiting.set()
    _signal_all(tracked(), signal.SIGTERM)
    for pid in _direct_children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    threading.Thread(target=_watchdog, args=(code,), name="lifescope-exit", daemon=True).start()
    return True


def _direct_children() -> set[int]:
    """Our children from /proc (a zombie stays listed until reaped, so its pid is not reused)."""
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children") as f:
                pids.update(int(word) for word in f.read().split())
    return pids


def _watchdog(code: int) -> None:
    """Finish what a signal started even if the graceful exit never returns."""
    started = time.monotonic()
    terminate_all(CHILD_GRACE_S)
    time.sleep(max(0.0, EXIT_GRACE_S - (time.monotonic() - started)))
    os._exit(code)
