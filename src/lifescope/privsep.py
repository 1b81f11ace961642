"""Under sudo, only the collector keeps root.

Reading another process's memory and capturing packets need root; rendering a screen, parsing a
recording someone sent you and writing your files do not. So `sudo lifescope attach|demo|replay`
splits in two before the UI starts (as OpenSSH's privilege separation does):

* a **broker** stays root. It does one thing: on the UI's request it starts a collector
  (``python -m lifescope.collector PID OPTIONS``, options re-parsed by the collector's own
  parser, so nothing but known flags gets through) and hands back the collector's stdout and
  stderr as file descriptors over a Unix socket (SCM_RIGHTS). It stops them on request, and
  stops all of them and exits when the UI's end of the socket closes — however the UI ends;
* the **UI** drops to the invoking user (``SUDO_UID``/``SUDO_GID``) and runs as that user from
  then on: a bug in rendering or a malicious recording replayed can never act as root, and
  what it writes belongs to that user. `/proc/PID/status` shows it.

Outside sudo (a plain user, or root logged in as root) nothing changes: collectors are the
UI's own children (`session.CollectorProcess`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any, NoReturn

from lifescope import lifecycle, outputs
from lifescope.options import CollectorOptions

_MAX_MESSAGE = 64 * 1024
_broker: Broker | None = None


def invoking_user() -> tuple[int, int] | None:
    """(uid, gid) of the user who ran sudo, if we are root because of sudo; else None."""
    if os.geteuid() != 0:
        return None
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0:
        return None
    return int(uid), int(gid)


def broker() -> Broker | None:
    """The broker collectors come from in this process, once privileges were dropped."""
    return _broker


def separate() -> None:
    """Under sudo: start the broker, then drop this process to the invoking user. A no-op
    otherwise. Call it before any thread starts (setuid applies to the calling thread's
    process credentials only when no other thread holds different ones)."""
    global _broker
    user = invoking_user()
    if user is None or _broker is not None:
        return
    _broker = Broker.start()
    drop_to(*user)


def drop_to(uid: int, gid: int) -> None:
    try:
        entry = pwd.getpwuid(uid)
        os.initgroups(entry.pw_name, gid)
        home = entry.pw_dir
    except KeyError:  # a uid with no passwd entry: no supplementary groups at all
        os.setgroups([])
        home = None
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if home:
        os.environ["HOME"] = home
    for name in ("SUDO_UID", "SUDO_GID"):  # nothing below us should think it is root-by-sudo
        os.environ.pop(name, None)


# ----------------------------------------------------------------------------------- the UI side


class Broker:
    """The UI's handle on the root broker process."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock

    @classmethod
    def start(cls) -> Broker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifescope.privsep", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # the terminal is the UI's
            env=lifecycle.child_env(die_with_parent=True),
            start_new_session=True,
        )
        theirs.close()
        lifecycle.track(proc)
        return cls(proc, ours)

    def _ask(
        self, request: dict[str, Any], fds: list[int] | None = None
    ) -> tuple[dict[str, Any], list[int]]:
        socket.send_fds(self.sock, [json.dumps(request).encode()], fds or [])
        data, fds, _flags, _addr = socket.recv_fds(self.sock, _MAX_MESSAGE, 4)
        if not data:
            raise OSError("the privileged broker exited")
        return json.loads(data), fds

    def spawn(self, pid: int, options: CollectorOptions) -> tuple[int, int, int]:
        """Start a root collector; returns (its pid, its stdout fd, its stderr fd). A
        recording is opened here, as the user, and its descriptor passed down."""
        passed: list[int] = []
        if options.record is not None:
            with outputs.open_stream(options.record, options.force) as recording:
                passed.append(os.dup(recording.fileno()))
            options = dataclasses.replace(options, record=None, force=False, record_fd=-1)
        try:
            reply, fds = self._ask({"op": "spawn", "pid": pid, "argv": options.argv()}, passed)
        finally:
            for fd in passed:
                os.close(fd)
        if not reply.get("ok") or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise OSError(reply.get("error", "the broker could not start a collector"))
        return int(reply["pid"]), fds[0], fds[1]

    def stop(self, pid: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._ask({"op": "stop", "pid": pid})


# ------------------------------------------------------------------------------- the root side


def serve(sock: socket.socket) -> None:
    """The broker's loop: spawn and stop collectors for the UI until its socket closes."""
    from lifescope import collector as collector_module

    parser = collector_module.parser()
    parser.error = _refuse  # type: ignore[method-assign]  # a bad request is refused, not fatal
    children: dict[int, subprocess.Popen[bytes]] = {}
    try:
        while True:
            data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 1)
            if not data:
                return  # the UI is gone, however it ended
            try:
                request = json.loads(data)
                op = request["op"]
            except (ValueError, KeyError, TypeError):
                sock.sendall(json.dumps({"ok": False, "error": "bad request"}).encode())
                continue
            if op == "spawn":
                _spawn(sock, parser, request, children, fds)
            elif op == "stop":
                child = children.pop(int(request.get("pid", -1)), None)
                if child is not None:
                    _stop(child)
                sock.sendall(b'{"ok": true}')
            else:
                sock.sendall(json.dumps({"ok": False, "error": f"unknown op {op!r}"}).encode())
    finally:
        for child in children.values():
            _stop(child)


def _spawn(
    sock: socket.socket,
    parser: Any,
    request: dict[str, Any],
    children: dict[int, subprocess.Popen[bytes]],
    fds: list[int],
) -> None:
    """Start one collector. Its options are checked by the collector's own parser, and a root
    collector is never given a path to write: a recording comes as a descriptor the UI opened."""
    try:
        pid = int(request["pid"])
        options = CollectorOptions.from_namespace(
            parser.parse_args([str(pid), *[str(a) for a in request["argv"]]])
        )
        if options.output not in (None, "-") or options.record is not None:
            raise ValueError("paths")
        if options.record_fd is not None:
            if len(fds) != 1:
                raise ValueError("no descriptor")
            options = dataclasses.replace(options, record_fd=fds[0])
    except (KeyError, TypeError, ValueError, SystemExit):
        for fd in fds:
            os.close(fd)
        sock.sendall(json.dumps({"ok": False, "error": "refused: not collector options"}).encode())
        return
    stderr = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifescope.collector", str(pid), *options.argv()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        pass_fds=fds,
        env=lifecycle.child_env(die_with_parent=True),
        start_new_session=True,
    )
    for fd in fds:
        os.close(fd)
    children[proc.pid] = proc
    assert proc.stdout is not None
    message = json.dumps({"ok": True, "pid": proc.pid}).encode()
    socket.send_fds(sock, [message], [proc.stdout.fileno(), stderr.fileno()])
    proc.stdout.close()  # the UI holds the only read end now: its close ends the collector
    stderr.close()


def _refuse(message: str) -> NoReturn:
    raise ValueError(message)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        with contextlib.suppress(OSError):
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(3)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    lifecycle.arm_parent_death()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the UI's Ctrl-C is the UI's to handle
    sock = socket.socket(fileno=int(argv[0]))
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

