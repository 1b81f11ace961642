"""Stacks with timestamps, out to the tools people already open: speedscope and Perfetto.

lifescope's own panes answer "what is happening now"; a recording answers it for any past
window. What neither does is let someone scroll through every stack of every thread on a
zoomable time axis, next to when the GIL was held and when the event loop stalled. Two free
viewers do exactly that, so a recording is exported rather than a flame-chart reimplemented:

* **speedscope** (`https://www.speedscope.app/file-format-schema.json`): one *evented* profile
  per thread, built from the stacks probe's spans (a span opens its frames at its start and
  closes them at its end; frames still on the stack in the next span stay open, so a frame
  that ran for a second is one bar, not a hundred). speedscope has no markers, so GIL-held
  intervals and loop stalls are profiles of their own ("GIL held by gil-hog (123)", "loop
  stalls: event-loop (100)") whose single-level frames ("GIL held", "stall: FRAME") line up
  with the threads on the same time axis.
* **Chrome trace / Perfetto** (Trace Event Format, JSON object form): `X` complete events per
  frame per thread, thread and process names as `M` metadata, and the GIL and each loop's
  stalls on tracks of their own (synthetic tids above Linux's largest possible tid), their
  details in `args`.

Times are seconds (speedscope) or microseconds (Chrome) from the start of the recording, the
same origin `snapshot --from FILE --at T` counts from; the wall-clock start is kept in the
file's metadata. Everything here is pure: samples in, plain JSON-ready dicts out. The GIL
intervals and stalls come from the same analysis functions the panes use
(`analysis.gil.holds`, `analysis.concurrency.analyse`), so an export never disagrees with
what was shown.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lifescope import __version__, outputs
from lifescope.analysis import concurrency, gil, report
from lifescope.recording import Recording
from lifescope.samples import (
    FREE,
    UNKNOWN_HOLDER,
    Frame,
    GilInfo,
    GilOwnership,
    GilRuns,
    Hello,
    PacketsSample,
    Sample,
    SocketsSample,
    StacksWindow,
    ThreadsSample,
)
from lifescope.timeline import Timeline

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
FORMATS = ("speedscope", "chrome", "snapshot")
"""`write` formats: speedscope JSON, Chrome trace (Perfetto) JSON, lifescope.snapshot/1."""

MARKER_TID_BASE = 1 << 22
"""First synthetic tid for marker tracks in Chrome traces. Linux's PID_MAX_LIMIT is 2**22 and
thread ids are below it, so these can never collide with a real thread of the target."""

GIL_HELD = "GIL held"

Source = Recording | Iterable[Sample]


# ----------------------------------------------------------------------------- gathering


@dataclass(slots=True)
class _Session:
    """The samples an export needs, clipped to [lo, hi], and the clock origin."""

    hello: Hello | None
    origin: float
    lo: float
    hi: float
    stacks: list[StacksWindow] = field(default_factory=list)
    gil_runs: list[GilRuns] = field(default_factory=list)
    gil_info: GilInfo | None = None
    threads: list[ThreadsSample] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    history: gil.Holds | None = None
    conc: concurrency.Concurrency | None = None


def _samples(source: Source) -> list[Sample]:
    if isinstance(source, Recording):
        return list(source.samples)
    return list(source)


def _gather(source: Source, start: float | None, end: float | None) -> _Session:
    samples = _samples(source)
    hello = next((s for s in samples if isinstance(s, Hello)), None)
    times = [t for s in samples if (t := getattr(s, "t", None)) is not None]
    first = min(times, default=hello.mono_at_start if hello else 0.0)
    last = max(times, default=first)
    origin = min(first, hello.mono_at_start) if hello is not None else first
    lo = first if start is None else max(first, start)
    hi = last if end is None else min(last, end)
    hi = max(lo, hi)
    session = _Session(hello=hello, origin=origin, lo=lo, hi=hi)
    comm: dict[int, str] = {}
    python_names: dict[int, str] = {}
    responses: list[SocketsSample | PacketsSample] = []  # where loop callbacks end
    for sample in samples:
        match sample:
            case StacksWindow():
                python_names.update(sample.thread_names)
                if sample.t >= lo and sample.start <= hi:
                    session.stacks.append(sample)
            case GilRuns():
                if sample.t >= lo and sample.start <= hi:
                    session.gil_runs.append(sample)
            case GilInfo():
                session.gil_info = sample
            case ThreadsSample():
                for thread in sample.threads:
                    comm[thread.tid] = thread.name
                if lo <= sample.t <= hi:
                    session.threads.append(sample)
            case GilOwnership():
                python_names.update(sample.threads)
            case SocketsSample() | PacketsSample():
                if lo <= sample.t <= hi:
                    responses.append(sample)
    # Python's thread names (from py-spy) over the kernel's 15-byte comm names.
    session.names = {**comm, **python_names}
    session.stacks.sort(key=lambda w: (w.start, w.t))
    session.gil_runs.sort(key=lambda r: (r.start, r.t))
    session.threads.sort(key=lambda s: s.t)
    if session.gil_runs:
        session.history = gil.holds(session.gil_runs, lo, hi)
    # The same inputs `report.build` gives the analysis, so stalls match the snapshot's.
    session.conc = concurrency.analyse(
        session.threads,
        session.stacks,
        session.history if session.gil_info is not None else None,
        session.gil_info,
        boundaries=concurrency.response_instants(
            [r for r in responses if isinstance(r, SocketsSample)],
            [r for r in responses if isinstance(r, PacketsSample)],
        ),
    )
    return session


def _thread_label(session: _Session, tid: int) -> str:
    name = session.names.get(tid)
    if tid == UNKNOWN_HOLDER:
        return "unknown thread"
    return f"{name} ({tid})" if name else str(tid)


# ------------------------------------------------------------------- stacks to open/close


class _FrameTable:
    """The export's shared frame table: one entry per distinct (name, file, line).

    Each py-spy window has its own frame table; the same function appears in every window
    under a different index, so frames are re-keyed by value to be shared across windows —
    which is also what lets a frame stay open from one window into the next.
    """

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self._index: dict[tuple[str, str, int], int] = {}

    def frame(self, frame: Frame) -> int:
        return self._add(frame.name, frame.file, frame.line)

    def marker(self, name: str) -> int:
        return self._add(name, "", 0)

    def _add(self, name: str, file: str, line: int) -> int:
        key = (name, file, line)
        index = self._index.get(key)
        if index is None:
            index = len(self.frames)
            self._index[key] = index
            entry: dict[str, object] = {"name": name}
            if file:
                entry["file"] = file
                entry["line"] = line
            self.frames.append(entry)
        return index


@dataclass(frozen=True, slots=True)
class _Event:
    opens: bool
    at: float
    frame: int


def _thread_events(
    windows: Sequence[StacksWindow], tid: int, table: _FrameTable, lo: float, hi: float
) -> list[_Event]:
    """Balanced open/close events for one thread, in time order.

    Consecutive spans that touch (gap under half a sample period: py-spy would have seen
    anything longer) keep their common outer frames open; a gap — between two py-spy windows,
    or while the thread did not exist — closes everything, because nothing was observed there.
    Overlapping spans are clipped to start where the previous one ended.
    """
    events: list[_Event] = []
    stack: list[int] = []
    last_end: float | None = None

    def close_to(depth: int, at: float) -> None:
        while len(stack) > depth:
            events.append(_Event(False, at, stack.pop()))

    for window in windows:
        tolerance = 0.5 / window.rate_hz if window.rate_hz > 0 else 0.005
        for span in sorted((s for s in window.spans if s.tid == tid), key=lambda s: s.start):
            begin = max(span.start, lo) if last_end is None else max(span.start, last_end, lo)
            finish = min(span.end, hi)
            if finish <= begin:
                continue
            frames = [table.frame(window.frames[i]) for i in reversed(span.stack)]
            if last_end is not None and begin - last_end > tolerance:
                close_to(0, last_end)
            common = 0
            while common < min(len(stack), len(frames)) and stack[common] == frames[common]:
                common += 1
            close_to(common, last_end if last_end is not None else begin)
            for frame in frames[common:]:
                events.append(_Event(True, begin, frame))
                stack.append(frame)
            last_end = finish
    if last_end is not None:
        close_to(0, last_end)
    return events


def _threads_in_order(session: _Session) -> list[int]:
    """Threads with stacks: event loops first (what people open the file for), then by tid."""
    tids = sorted({span.tid for window in session.stacks for span in window.spans})
    roles = session.conc.roles if session.conc is not None else {}
    rank = {"event-loop": 0, "request": 1, "executor": 2}
    return sorted(tids, key=lambda tid: (rank.get(roles.get(tid, ""), 3), tid))


# ------------------------------------------------------------------------- markers


@dataclass(frozen=True, slots=True)
class _Interval:
    start: float
    end: float
    label: str
    args: dict[str, object]


def _gil_intervals(session: _Session) -> dict[int, list[_Interval]]:
    """GIL-held runs per holder (tid, or UNKNOWN_HOLDER), from the GIL probe's history."""
    if session.history is None:
        return {}
    by_holder: dict[int, list[_Interval]] = {}
    for start, end, holder in session.history.runs:
        if holder == FREE or end <= start:
            continue
        name = _thread_label(session, holder)
        by_holder.setdefault(holder, []).append(
            _Interval(
                start,
                end,
                f"{GIL_HELD} by {name}",
                {"tid": None if holder == UNKNOWN_HOLDER else holder,
                 "thread": session.names.get(holder),
                 "duration_ms": round((end - start) * 1000, 3)},
            )
        )  # fmt: skip
    return by_holder


def _stall_intervals(session: _Session) -> dict[int, list[_Interval]]:
    """Loop stalls per event-loop thread, as `analysis.concurrency` finds them."""
    stalls: dict[int, list[_Interval]] = {}
    for loop in session.conc.loops if session.conc is not None else ():
        found = stalls.setdefault(loop.tid, [])
        for stall in loop.stalls:
            start = max(stall.start, session.lo)
            end = min(stall.start + stall.duration_s, session.hi)
            if end <= start:
                continue
            found.append(
                _Interval(
                    start,
                    end,
                    f"stall: {stall.frame or 'unknown frame'}",
                    {"loop_tid": loop.tid,
                     "frame": stall.frame,
                     "duration_ms": round(stall.duration_s * 1000, 1),
                     "gil_held": stall.gil_held,
                     "ongoing": stall.ongoing},
                )
            )  # fmt: skip
    return stalls


# ------------------------------------------------------------------------- speedscope


def _seconds(session: _Session, t: float) -> float:
    return round(t - session.origin, 6)


def _evented(session: _Session, name: str, events: list[dict[str, object]]) -> dict[str, object]:
    return {
        "type": "evented",
        "name": name,
        "unit": "seconds",
        "startValue": _seconds(session, session.lo),
        "endValue": _seconds(session, session.hi),
        "events": events,
    }


def _marker_events(
    session: _Session, intervals: Sequence[_Interval], frame_of: Callable[[_Interval], int]
) -> list[dict[str, object]]:
    """Open/close pairs, one per interval; intervals of one track never overlap, but an
    interval that starts before the previous one's rounded end is pushed back to it."""
    events: list[dict[str, object]] = []
    last = _seconds(session, session.lo)
    for interval in sorted(intervals, key=lambda i: i.start):
        start = max(last, _seconds(session, interval.start))
        end = _seconds(session, interval.end)
        if end <= start:
            continue
        frame = frame_of(interval)
        events.append({"type": "O", "frame": frame, "at": start})
        events.append({"type": "C", "frame": frame, "at": end})
        last = end
    return events


def to_speedscope(source: Source, *, start: float | None = None, end: float | None = None) -> (
    dict[str, Any]
):  # fmt: skip
    """A speedscope file: one evented profile per thread, then GIL-held and stall profiles.

    `start`/`end` (collector monotonic seconds, as in the recording) clip the export to a
    window; by default the whole recording is exported.
    """
    session = _gather(source, start, end)
    table = _FrameTable()
    profiles: list[dict[str, object]] = []
    for tid in _threads_in_order(session):
        stack_events = _thread_events(session.stacks, tid, table, session.lo, session.hi)
        if not stack_events:
            continue
        profiles.append(
            _evented(
                session,
                _thread_label(session, tid),
                [{"type": "O" if e.opens else "C", "frame": e.frame,
                  "at": _seconds(session, e.at)} for e in stack_events],
            )
        )  # fmt: skip
    for holder, intervals in sorted(_gil_intervals(session).items()):
        events = _marker_events(session, intervals, lambda _: table.marker(GIL_HELD))
        if events:
            name = f"{GIL_HELD} by {_thread_label(session, holder)}"
            profiles.append(_evented(session, name, events))
    for loop_tid, intervals in sorted(_stall_intervals(session).items()):
        # A loop with no stall still gets its (empty) profile: "no stall" is a finding.
        events = _marker_events(session, intervals, lambda i: table.marker(i.label))
        profiles.append(
            _evented(session, f"loop stalls: {_thread_label(session, loop_tid)}", events)
        )
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": table.frames},
        "profiles": profiles,
        "name": _title(session),
        "activeProfileIndex": 0,
        "exporter": f"lifescope {__version__}",
    }


def _title(session: _Session) -> str:
    hello = session.hello
    if hello is None:
        return "lifescope recording"
    return f"lifescope: pid {hello.pid} {short_command(hello.command)}"


def short_command(command: str, limit: int = 60) -> str:
    """A command line short enough for a title or a metric label.

    The interpreter's directory is dropped (`/opt/venv/bin/python3 -m app` reads as
    `python3 -m app`) and the rest is cut to `limit` characters with an ellipsis: enough to
    tell services apart, and the tail — where secrets passed as arguments tend to be — is
    left out.
    """
    head, _, rest = command.strip().partition(" ")
    text = f"{os.path.basename(head)} {rest}".strip() if head else ""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ------------------------------------------------------------------------- chrome trace


def _us(session: _Session, t: float) -> float:
    return round((t - session.origin) * 1e6, 3)


def to_chrome_trace(
    source: Source, *, start: float | None = None, end: float | None = None
) -> dict[str, Any]:
    """A Trace Event Format document (JSON object form) for Perfetto or chrome://tracing.

    Each thread's frames are nested `X` events on its own track; the GIL ("GIL held by T")
    and each event loop's stalls are `X` events on tracks of their own, so they never break
    the nesting of the stack slices they overlap.
    """
    session = _gather(source, start, end)
    hello = session.hello
    pid = hello.pid if hello is not None else 0
    table = _FrameTable()
    meta: list[dict[str, object]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
         "args": {"name": f"{short_command(hello.command)} (pid {pid})" if hello
                  else f"pid {pid}"}},
    ]  # fmt: skip
    slices: list[dict[str, object]] = []
    used: dict[int, str] = {}
    for tid in _threads_in_order(session):
        opened: list[tuple[int, float]] = []
        for event in _thread_events(session.stacks, tid, table, session.lo, session.hi):
            if event.opens:
                frame = table.frames[event.frame]
                slice_ = {"ph": "X", "cat": "stack", "name": frame["name"], "pid": pid,
                          "tid": tid, "ts": _us(session, event.at), "dur": 0.0}  # fmt: skip
                if "file" in frame:
                    slice_["args"] = {"file": frame["file"], "line": frame["line"]}
                opened.append((len(slices), event.at))
                slices.append(slice_)
            else:
                index, _ = opened.pop()
                ts = slices[index]["ts"]
                slices[index]["dur"] = round(_us(session, event.at) - ts, 3)  # type: ignore[operator]
        used[tid] = session.names.get(tid) or str(tid)

    gil_tid = MARKER_TID_BASE
    for intervals in _gil_intervals(session).values():
        for interval in intervals:
            slices.append(_marker_slice(session, pid, gil_tid, "gil", interval))
            used[gil_tid] = "GIL held"
    for n, (loop_tid, intervals) in enumerate(sorted(_stall_intervals(session).items())):
        track = MARKER_TID_BASE + 1 + n
        used[track] = f"loop stalls: {_thread_label(session, loop_tid)}"
        slices.extend(_marker_slice(session, pid, track, "stall", i) for i in intervals)

    for tid, name in used.items():
        meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                     "args": {"name": name}})  # fmt: skip
        if tid >= MARKER_TID_BASE:  # markers above the threads they explain
            meta.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                         "args": {"sort_index": tid - MARKER_TID_BASE - 100}})  # fmt: skip
    slices.sort(key=lambda e: (e["tid"], e["ts"]))  # stable: a parent stays before its child
    other: dict[str, object] = {
        "exporter": f"lifescope {__version__}",
        "time_origin": "recording start (collector monotonic clock)",
    }
    if hello is not None:
        other.update(
            pid=hello.pid,
            command=hello.command,
            python=hello.python,
            wall_at_origin=round(hello.wall_at_start + (session.origin - hello.mono_at_start), 6),
        )
    return {"traceEvents": meta + slices, "displayTimeUnit": "ms", "otherData": other}


def _marker_slice(
    session: _Session, pid: int, tid: int, cat: str, interval: _Interval
) -> dict[str, object]:
    ts = _us(session, interval.start)
    return {"ph": "X", "cat": cat, "name": interval.label, "pid": pid, "tid": tid, "ts": ts,
            "dur": round(_us(session, interval.end) - ts, 3), "args": interval.args}  # fmt: skip


# ------------------------------------------------------------------------- snapshot, files


def to_snapshot(source: Source, *, start: float | None = None, end: float | None = None) -> (
    dict[str, Any]
):  # fmt: skip
    """`lifescope.snapshot/1` for the window (default: the whole recording)."""
    timeline = Timeline(horizon_s=math.inf, maxlen=10**9)
    for sample in _samples(source):
        timeline.add(sample)
    stop = end if end is not None else timeline.last_t
    seconds = None if start is None or stop is None else max(0.0, stop - start)
    return report.to_json(report.build(timeline.window(seconds, end=stop)))


def export(source: Source, fmt: str, *, start: float | None = None,
           end: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The document for `fmt` (one of FORMATS); JSON-ready dicts, lists and numbers."""
    builders = {"speedscope": to_speedscope, "chrome": to_chrome_trace, "snapshot": to_snapshot}
    if fmt not in builders:
        raise ValueError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
    return builders[fmt](source, start=start, end=end)


def write(
    path: str,
    fmt: str,
    source: Source,
    *,
    start: float | None = None,
    end: float | None = None,
    force: bool = False,
) -> int:
    """Write `fmt` JSON to `path` through `outputs` (a new file, 0600, complete or absent);
    returns bytes written.

    An export carries the target's command line and code paths, so it gets a recording's
    permissions, not the umask's.
    """
    data = json.dumps(export(source, fmt, start=start, end=end), separators=(",", ":"))
    encoded = data.encode()
    with outputs.open_atomic(path, force) as out:
        out.write(encoded)
    return len(encoded)
