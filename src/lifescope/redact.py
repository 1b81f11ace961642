"""Secrets out of a target's command line before it is kept anywhere.

A recording, a snapshot and a metric label all carry the target's command line, and passwords
and tokens are passed in argv more often than anyone likes (`--password=…`,
`postgres://user:secret@db/app`, `API_TOKEN=…`). By default lifescope keeps the shape of the
command and replaces the values of secret-looking options and the credentials inside URLs;
`--keep-command-line` keeps it verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "<redacted>"

_SECRET_NAME = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|auth|credentials?|cookie|session[-_]?key|signature|dsn)",
    re.IGNORECASE,
)
_OPTION = re.compile(r"^(-{1,2}[\w.-]+)(=)(.*)$", re.DOTALL)
"""`--name=value` / `-name=value`"""
_ASSIGNMENT = re.compile(r"^([A-Za-z_][\w.-]*)(=)(.*)$", re.DOTALL)
"""`NAME=value` (environment-style, as `env` or Django/gunicorn settings take them)"""
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@"
)
_QUERY_SECRET = re.compile(r"(?P<key>[?&;][^=&;#\s]+)=(?P<value>[^&;#\s]*)")


def _url(text: str) -> str:
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)

    def query(m: re.Match[str]) -> str:
        if _SECRET_NAME.search(m["key"]) and m["value"]:
            return f"{m['key']}={MASK}"
        return m.group(0)

    return _QUERY_SECRET.sub(query, text) if "://" in text or "?" in text else text


def argument(arg: str) -> str:
    """One argument with its secret parts masked (the name of an option stays)."""
    for pattern in (_OPTION, _ASSIGNMENT):
        m = pattern.match(arg)
        if m and _SECRET_NAME.search(m.group(1)):
            return f"{m.group(1)}={MASK}" if m.group(3) else arg
    return _url(arg)


def argv(args: Sequence[str]) -> list[str]:
    """Every argument masked; `--password VALUE` (the value as the next argument) too."""
    out: list[str] = []
    secret_next = False
    for arg in args:
        if secret_next and not arg.startswith("-"):
            out.append(MASK)
            secret_next = False
            continue
        secret_next = arg.startswith("--") and "=" not in arg and bool(_SECRET_NAME.search(arg))
        out.append(argument(arg))
    return out


def command_line(args: Sequence[str]) -> str:
    return " ".join(argv(args)).strip() or "?"
