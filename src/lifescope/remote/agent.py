"""The host side of a remote session: run the collector, and end it with the session.

What ends it (each seen in a test, none left to the host's sshd configuration):

* the channel closes — the local lifescope quit, was killed, or the link broke and sshd
  noticed: the collector's stdin reaches EOF (a thread waits for it) and its next write
  fails with EPIPE; either stops it;
* the session's process (sshd's child, or `sudo`) dies: the kernel's parent-death signal;
* a collector that does not stop within `STOP_GRACE_S` of that is ended by the watchdog,
  which removes the private directory first;
* the link went silent without closing (the laptop slept, a network partition): sshd may not
  notice for many minutes (TCP's retransmission timeout; ClientAliveInterval is the host's
  choice, not ours), so neither EOF nor EPIPE comes. The stream then stops draining and a
  write blocks; one blocked for `STALL_S` ends the process the same way. By then the local
  side has declared the link dead (ServerAliveInterval, ~15 s) and reconnected.

The target is never paused by any of these: py-spy always runs `--nonblocking`, and
lifescope's own readers only read.

Python 3.8 syntax: this runs on the host's interpreter.
"""

import os
import signal
import sys
import threading
import time

from lifescope.remote import compat

STOP_GRACE_S = 5.0
STALL_S = 30.0
STALL_ENV = "LIFESCOPE_REMOTE_STALL_S"
"""Overrides `STALL_S` in the host process's environment (tests)."""


class _WatchedStdout:
    """`sys.stdout` for the collector: the same pipe, with the start of a write in progress
    kept, so the stall watchdog can tell a dead link from a quiet one."""

    def __init__(self, raw):
        self._raw = raw
        self.buffer = self
        self.busy_since = None

    def write(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.busy_since = time.monotonic()
        try:
            return self._raw.write(data)
        finally:
            self.busy_since = None

    def flush(self):
        if self._raw.closed:
            return  # the collector closed its stream; the interpreter's final flush lands here
        self.busy_since = time.monotonic()
        try:
            self._raw.flush()
        finally:
            self.busy_since = None

    def fileno(self):
        return self._raw.fileno()

    def close(self):
        self._raw.close()


def run(collector_argv, ready, cleanup=None):
    """Announce `ready` on stdout, then stream until the channel closes. Returns the exit code."""
    compat.install()
    from lifescope import collector, lifecycle

    os.environ[lifecycle.PARENT_PID_ENV] = str(os.getppid())
    lifecycle.arm_parent_death()
    watcher = threading.Thread(
        target=_end_with_channel, args=(cleanup,), name="lifescope-channel", daemon=True
    )
    watcher.start()
    out = _WatchedStdout(sys.stdout.buffer)
    sys.stdout = out
    stall_s = float(os.environ.get(STALL_ENV) or STALL_S)
    threading.Thread(
        target=_end_on_stall, args=(out, stall_s, cleanup), name="lifescope-stall", daemon=True
    ).start()
    out.write(("lifescope-remote " + ready + "\n").encode())
    out.flush()
    return collector.main(collector_argv)


def _end_on_stall(out, stall_s, cleanup):
    while True:
        time.sleep(min(1.0, stall_s / 4))
        since = out.busy_since
        if since is not None and time.monotonic() - since > stall_s:
            sys.stderr.write(f"lifescope: the stream has not drained for {stall_s:g} s; the "
                             "link is gone, stopping\n")  # fmt: skip
            if cleanup is not None:
                cleanup()
            os._exit(0)


def _end_with_channel(cleanup):
    """Stdin carries nothing after the handshake: its EOF means the session is over.

    Read from the descriptor, not `sys.stdin.buffer`: a daemon thread blocked inside the
    buffered reader holds its lock, and the interpreter's shutdown then aborts on it ("could
    not acquire lock for <stdin> at interpreter shutdown") instead of exiting with the
    collector's own code and message."""
    try:
        while os.read(sys.stdin.fileno(), 65536):
            pass
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)  # the collector's own handler: a clean stop
    time.sleep(STOP_GRACE_S)
    if cleanup is not None:
        cleanup()
    os._exit(0)
