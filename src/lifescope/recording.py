"""Reading a recording: the stream saved to a file, replayed through the same analysis.

A recording cut short (a recorder killed with SIGKILL, a disk that filled up) or damaged in
the middle still replays up to the damage; the caller gets the good samples and a one-line
note naming the byte offset where reading stopped.
"""

from __future__ import annotations

import gzip
import shlex
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from lifescope import stream
from lifescope.samples import Hello, Sample


class RecordingError(Exception):
    """Nothing in the file can be replayed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Recording:
    path: str
    samples: tuple[Sample, ...]
    hello: Hello
    start: float
    end: float
    problem: str | None
    """Set when reading stopped early: "truncated record at byte offset N" (of the
    decompressed stream when the file is gzip-compressed, as recordings are)."""


GZIP_MAGIC = b"\x1f\x8b"


def load(path: str) -> Recording:
    """Read a recording (gzip-compressed or plain stream). Offsets in messages count bytes
    of the decompressed stream."""
    samples: list[Sample] = []
    problem = None
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            handle: BinaryIO = gzip.GzipFile(fileobj=raw) if compressed else raw  # type: ignore[assignment]
            try:
                for sample in stream.read(handle):
                    samples.append(sample)
            except stream.StreamError as exc:
                if exc.offset == 0 and not samples:
                    raise RecordingError(f"{path} is not a lifescope recording: {exc}") from exc
                problem = str(exc)
                if compressed:  # the offset counts the stream inside the gzip, not the file
                    problem += (
                        f" of the decompressed stream (`zcat {shlex.quote(path)} | tail -c "
                        f"+{exc.offset + 1}` starts there)"
                    )
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                if not samples:
                    raise RecordingError(f"{path} is not a readable recording: {exc}") from exc
                problem = f"recording cut short ({exc})"
    except FileNotFoundError as exc:
        raise RecordingError(f"no such recording: {path}") from exc
    except IsADirectoryError as exc:
        raise RecordingError(f"{path} is a directory, not a recording") from exc
    except PermissionError as exc:
        raise RecordingError(f"cannot read {path}: permission denied") from exc
    hello = next((s for s in samples if isinstance(s, Hello)), None)
    if hello is None:
        raise RecordingError(f"{path} holds no session header (empty or cut before it)")
    times = [t for s in samples if (t := getattr(s, "t", None)) is not None]
    start = min(times, default=hello.mono_at_start)
    end = max(times, default=hello.mono_at_start)
    return Recording(path, tuple(samples), hello, start, end, problem)
