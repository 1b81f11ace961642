"""A real OpenSSH server on a loopback port, for tests that attach through it as a user would.

Debian's `openssh-server` (`.ci/run` installs it), started here with its own config, host key
and log in a temporary directory, public-key authentication only (no password), for
throwaway users created here and removed afterwards. Everything is stopped by pid.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

SSHD = "/usr/sbin/sshd"


@dataclass
class User:
    name: str
    uid: int
    gid: int


@dataclass
class Sshd:
    root: str
    port: int
    proc: subprocess.Popen[bytes]
    users: dict[str, User] = field(default_factory=dict)

    @property
    def ssh_command(self) -> str:
        """`LIFESCOPE_SSH`: the user's ssh with this server's client config."""
        return f"ssh -F {self.root}/ssh_config"

    def url(self, user: str, pid: int) -> str:
        return f"ssh://{self.users[user].name}@127.0.0.1:{self.port}/{pid}"

    def pids_of(self, user: str) -> list[int]:
        """Every process of `user` on the "host" (sshd's session children included)."""
        return _pids_of(self.users[user].uid)

    def log(self) -> str:
        with open(f"{self.root}/sshd.log", errors="replace") as handle:
            return handle.read()


def _pids_of(uid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{name}").st_uid == uid:
                    out.append(int(name))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> str | None:
    """None when a test sshd can run here, else why not."""
    if not os.path.exists(SSHD):
        return f"{SSHD} missing (apt-get install openssh-server; .ci/run does)"
    if os.geteuid() != 0:
        return "starting sshd and creating test users needs root"
    if shutil.which("ssh") is None or shutil.which("useradd") is None:
        return "ssh client or useradd missing"
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def running(user_names: tuple[str, ...], sudoers: tuple[str, ...] = ()) -> Iterator[Sshd]:
    """sshd on 127.0.0.1 with key auth for new users `user_names` (the ones in `sudoers` may
    run anything with `sudo -n`). Users, sudoers file, server and files all removed after."""
    tag = secrets.token_hex(3)
    # sshd's StrictModes refuses keys under a world-writable directory (/tmp), so: /run.
    root = tempfile.mkdtemp(prefix="lifescope-sshd-", dir="/run")
    os.chmod(root, 0o755)
    users: dict[str, User] = {}
    sudoers_file = f"/etc/sudoers.d/lifescope-test-{tag}"
    proc = None
    try:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{root}/host_key")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{root}/client_key")
        os.makedirs(f"{root}/authorized", mode=0o755)
        with open(f"{root}/client_key.pub") as handle:
            client_pub = handle.read()
        for short in user_names:
            name = f"ls{short[:4]}{tag}"
            # "*": no password at all, yet not locked ("!"), which sshd would refuse.
            _run("useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name)
            entry = pwd.getpwnam(name)
            users[short] = User(name, entry.pw_uid, entry.pw_gid)
            path = f"{root}/authorized/{name}"
            with open(path, "w") as handle:
                handle.write(client_pub)
            os.chmod(path, 0o644)
        if sudoers:
            with open(sudoers_file, "w") as handle:
                for short in sudoers:
                    handle.write(f"{users[short].name} ALL=(root) NOPASSWD: ALL\n")
            os.chmod(sudoers_file, 0o440)
        port = _free_port()
        with open(f"{root}/sshd_config", "w") as handle:
            handle.write(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\n"
                f"PidFile {root}/sshd.pid\nAuthorizedKeysFile {root}/authorized/%u\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "PubkeyAuthentication yes\nUsePAM no\nPermitRootLogin no\nStrictModes yes\n"
                f"AllowUsers {' '.join(u.name for u in users.values())}\n"
                "LogLevel VERBOSE\nMaxStartups 50\n"
            )
        with open(f"{root}/host_key.pub") as handle:
            host_pub = " ".join(handle.read().split()[:2])
        with open(f"{root}/known_hosts", "w") as handle:
            handle.write(f"[127.0.0.1]:{port} {host_pub}\n")
        with open(f"{root}/ssh_config", "w") as handle:
            handle.write(
                f"Host *\n  IdentityFile {root}/client_key\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {root}/known_hosts\n  StrictHostKeyChecking yes\n"
                "  LogLevel ERROR\n"
            )
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
        proc = subprocess.Popen(
            [SSHD, "-D", "-f", f"{root}/sshd_config", "-E", f"{root}/sshd.log"],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {open(f'{root}/sshd.log').read()}")
            time.sleep(0.1)
        yield Sshd(root, port, proc, users)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for user in users.values():
            # Anything of theirs still running is a failure the tests report; end it here, by
            # pid, so userdel can remove the account.
            for pid in _pids_of(user.uid):
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
            subprocess.run(["userdel", "--remove", user.name], capture_output=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sudoers_file)
        shutil.rmtree(root, ignore_errors=True)
