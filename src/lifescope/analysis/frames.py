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


def kind(file: str) -> str:
    """'app', 'library' (installed package), 'stdlib' or 'native' for a frame's file."""
    if not file or file.startswith("<"):
        return "native"
    if _PACKAGES.search(file):
        return "library"
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
