"""Fixtures for `ssh://` tests: a real sshd with throwaway users and targets owned by them."""

from __future__ import annotations

import os
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from tests.remote import sshd

HOST_PYTHON = "/usr/bin/python3"
"""The "host's" Python: Debian's, which has no lifescope and no pyelftools (the bundle path)."""

TARGET = textwrap.dedent(
    """
    import http.server, sys, threading, time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(0.02)
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()

    def hog():
        while True:
            sum(range(20000))
            time.sleep(0.005)

    threading.Thread(target=hog, name="gil-hog", daemon=True).start()
    print("READY", server.server_address[1], flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture(scope="module")
def host() -> Iterator[sshd.Sshd]:
    """sshd on loopback; users `a` (may sudo) and `b`; `LIFESCOPE_SSH` points at it."""
    why = sshd.available()
    if why is not None:
        pytest.skip(why)
    with sshd.running(("a", "b"), sudoers=("a",)) as server:
        old = os.environ.get("LIFESCOPE_SSH")
        os.environ["LIFESCOPE_SSH"] = server.ssh_command
        try:
            yield server
        finally:
            if old is None:
                os.environ.pop("LIFESCOPE_SSH", None)
            else:
                os.environ["LIFESCOPE_SSH"] = old


class Target:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.served = 0
        self._stop = threading.Event()

    def load(self, rate: float = 20.0) -> None:
        """Requests from here (the "laptop" side) at about `rate` per second, until stopped."""

        def run() -> None:
            while not self._stop.wait(1 / rate):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5):
                        self.served += 1
                except OSError:
                    pass

        threading.Thread(target=run, name="load", daemon=True).start()

    def state(self) -> str:
        with open(f"/proc/{self.pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def target_as(host: sshd.Sshd) -> Iterator[Callable[[str], Target]]:
    """Start the HTTP target as one of the host's users; stopped by pid."""
    started: list[Target] = []

    def start(user: str) -> Target:
        account = host.users[user]
        proc = subprocess.Popen(
            [HOST_PYTHON, "-c", TARGET],
            user=account.uid,
            group=account.gid,
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == [b"READY"], line
        target = Target(proc, int(line[1]))
        started.append(target)
        return target

    yield start
    for target in started:
        target.stop()


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids of `pids` still alive after `timeout` (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    alive = pids
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leftovers(host: sshd.Sshd, user: str, keep: set[int]) -> list[str]:
    """What `user` still runs on the host besides `keep` (the target), as command lines."""
    out = []
    for pid in host.pids_of(user):
        if pid in keep or not _alive(pid):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid}: {command}")
        except OSError:
            continue
    return out


def private_dirs(uid: int) -> list[str]:
    """lifescope's private directories on the host (in its temp dir) owned by `uid`."""
    root = "/tmp"
    found = []
    for name in os.listdir(root):
        if name.startswith("lifescope-remote-"):
            try:
                if os.lstat(os.path.join(root, name)).st_uid == uid:
                    found.append(name)
            except OSError:
                continue
    return found
