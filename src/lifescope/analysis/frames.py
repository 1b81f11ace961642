"""Which frame of a stack is "the application's", and how to name a frame for a human.

A server thread's innermost frame is nearly always the event loop's selector or a lock —
true, but useless. What people want is the innermost frame of *their* code: not the standard
library, not an installed package. Paths tell which is which well enough without importing
anything from the target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lifescope.samples import Frame

_STDLIB = re.compile(r"/lib/python3\.\d+/(?!site-packages/|dist-packages/)")
_PACKAGES = re.compile(r"/(site|dist)-packages/")


LIBRARIES = frozenset(
    [
        "aiohttp",
        "aiosignal",
        "anyio",
        "asgiref",
        "asyncpg",
        "async_timeout",
        "attr",
        "attrs",
        "blinker",
        "celery",
        "certifi",
        "charset_normalizer",
        "click",
        "django",
        "fastapi",
        "flask",
        "frozenlist",
        "gevent",
        "greenlet",
        "grpc",
        "gunicorn",
        "h11",
        "h2",
        "httpcore",
        "httptools",
        "httpx",
        "idna",
        "itsdangerous",
        "jinja2",
        "kombu",
        "markupsafe",
        "multidict",
        "orjson",
        "psycopg",
        "psycopg2",
        "pydantic",
        "pydantic_core",
        "pymysql",
        "redis",
        "requests",
        "sniffio",
        "sqlalchemy",
        "starlette",
        "tornado",
        "twisted",
        "ujson",
        "urllib3",
        "uvicorn",
        "uvloop",
        "waitress",
        "watchfiles",
        "websockets",
        "werkzeug",
        "yarl",
        "zmq",
    ]
)
"""Frameworks and libraries a request passes through. Code installed in site-packages that is
not one of these is treated as the application's own: deployed apps are often pip-installed
into a virtualenv, and their handlers must still count as "the application's code"."""


def kind(file: str) -> str:
    """'app', 'library' (a known framework or library), 'stdlib' or 'native' for a file."""
    if not file or file.startswith("<"):
        return "native"
    match = _PACKAGES.search(file)
    if match:
        top = file[match.end() :].split("/", 1)[0].split(".", 1)[0].lower()
        return "library" if top in LIBRARIES or top.endswith(("-info", "_libs")) else "app"
    if _STDLIB.search(file):
        return "stdlib"
    return "app"


def short_file(file: str) -> str:
    """The part of a path that identifies it: `aiohttp/web_protocol.py`, `server.py`."""
    match = _PACKAGES.search(file)
    if match:
        return file[match.end() :]
    match = _STDLIB.search(file)
    if match:
        return file[match.end() :]
    return file.rsplit("/", 1)[-1]


def label(frame: Frame) -> str:
    return f"{frame.name} ({short_file(frame.file)}:{frame.line})"


def innermost_app(stack: Sequence[Frame]) -> Frame | None:
    """The innermost frame of application code, else of any installed library, else any.

    `stack` is innermost first. Falling back to libraries matters for servers installed as
    packages (their own code lives in site-packages too).
    """
    for wanted in ("app", "library"):
        for frame in stack:
            if kind(frame.file) == wanted:
                return frame
    return stack[0] if stack else None
