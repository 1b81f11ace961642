"""`ssh://[user@]host[:port]/PID`: which host, as whom, which process."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

SCHEME = "ssh://"


class SpecError(ValueError):
    """Not a usable `ssh://` target; the message says what to type instead."""


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    host: str
    pid: int
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """What `ssh` takes as its destination: `user@host` (the port goes in `-p`)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{host}{port}/{self.pid}"


def is_remote(text: str | None) -> bool:
    return bool(text) and text.startswith(SCHEME)  # type: ignore[union-attr]


def parse(text: str) -> RemoteTarget:
    example = "e.g. ssh://deploy@web1/1234 or ssh://web1:2222/1234"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "ssh" or not parts.hostname:
        raise SpecError(f"{text!r} is not ssh://[user@]host[:port]/PID — {example}")
    if parts.password is not None:
        raise SpecError(f"{text!r} carries a password; lifescope uses ssh's own keys and agent "
                        "only — drop it")  # fmt: skip
    if parts.query or parts.fragment:
        raise SpecError(f"{text!r} has a ?query or #fragment — {example}")
    pid_text = parts.path.strip("/")
    if not pid_text.isdigit() or int(pid_text) <= 0:
        raise SpecError(f"{text!r} names no process id after the host — {example}")
    try:
        port = parts.port
    except ValueError:
        raise SpecError(f"{text!r} has a bad port — {example}") from None
    user = urllib.parse.unquote(parts.username) if parts.username else None
    return RemoteTarget(host=parts.hostname, pid=int(pid_text), user=user, port=port)
