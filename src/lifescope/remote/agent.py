"""The host side of a remote session: run the collector, and end it with the session.

What ends it (each seen in a test, none left to the host's sshd configuration):

* the channel closes — the local lifescope quit, was killed, or the link broke and sshd
  noticed: the collector's stdin reaches EOF (a thread waits for it) and its next write
  fails with EPIPE; either stops it;
* the session's process (sshd's child, or `sudo`) dies: the kernel's parent-death signal;
* a collector that does not stop within `STOP_GRACE_S` of that is ended by the watchdog,
  which removes the private directory first.

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
    out = sys.stdout.buffer
    out.write(("lifescope-remote " + ready + "\n").encode())
    out.flush()
    return collector.main(collector_argv)


def _end_with_channel(cleanup):
    """Stdin carries nothing after the handshake: its EOF means the session is over."""
    source = sys.stdin.buffer
    try:
        while source.read(65536):
            pass
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)  # the collector's own handler: a clean stop
    time.sleep(STOP_GRACE_S)
    if cleanup is not None:
        cleanup()
    os._exit(0)
