"""Threads versus coroutines: what each thread is doing, which one runs the event loop, and
every episode where blocking code stalled that loop.

The loop's busy share comes from the threads probe (a loop thread is idle exactly while it
sits in its selector's `epoll_wait`/`select`/`poll`); stalls and their culprit come from the
stack samples (one callback running past the threshold); whether the GIL was held during a
stall — CPU work versus a blocking call — comes from the GIL probe.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from lifescope import syscalls
from lifescope.analysis.frames import innermost_app, label
from lifescope.analysis.gil import Holds, waits_for_gil
from lifescope.samples import (
    Frame,
    GilInfo,
    PacketsSample,
    SocketsSample,
    StacksWindow,
    ThreadsSample,
    ThreadStat,
)

STATES = ("python", "native", "gil-wait", "io", "lock", "sleep", "other")
"""python: running Python holding the GIL · native: running without the GIL · gil-wait ·
io: blocked in epoll/select/poll/recv/read/accept/send · lock: futex not on the GIL ·
sleep: time.sleep and friends · other: any other kernel wait."""

STALL_THRESHOLD_S = 0.1
"""asyncio's own slow-callback limit (`loop.slow_callback_duration`)."""


def classify(thread: ThreadStat, holder: int | None, info: GilInfo | None) -> str:
    """One thread at one instant, in the vocabulary of `STATES`.

    Without GIL data a running thread is "python" only if we cannot tell: it is reported as
    "native" never by guess — callers pass holder=None and get "running".
    """
    name = syscalls.name(thread.syscall)
    if thread.state == "R" or name == "running":
        if holder is None:
            return "running"
        return "python" if holder == thread.tid else "native"
    if info is not None and waits_for_gil(thread, info):
        return "gil-wait"
    if name in syscalls.POLL or name in syscalls.SOCKET_READ or name in syscalls.ACCEPT:
        return "io"
    if name in syscalls.SOCKET_WRITE or name == "connect":
        return "io"
    if name in syscalls.LOCK:
        return "lock"
    if name in syscalls.SLEEP:
        return "sleep"
    return "other"


def _frames_by_thread(stacks: Sequence[StacksWindow]) -> dict[int, set[tuple[str, str]]]:
    seen: dict[int, set[tuple[str, str]]] = {}
    for window in stacks:
        for span in window.spans:
            bucket = seen.setdefault(span.tid, set())
            for index in span.stack:
                frame = window.frames[index]
                bucket.add((frame.name, frame.file))
    return seen


def role(frames: Iterable[tuple[str, str]]) -> str:
    """event-loop, executor, request or other, from the functions a thread was seen in.

    py-spy names methods by qualified name (`BaseEventLoop._run_once`), so only the last
    component is compared.
    """
    frames = {(name.rsplit(".", 1)[-1], file) for name, file in frames}
    for name, file in frames:
        if name in ("_run_once", "run_forever") and file.endswith("asyncio/base_events.py"):
            return "event-loop"
        if "uvloop" in file:
            return "event-loop"
    for name, file in frames:
        if name == "_worker" and file.endswith("concurrent/futures/thread.py"):
            return "executor"
    request_markers = {
        ("process_request_thread", "socketserver.py"),
        ("handle", "werkzeug/serving.py"),
        ("handle_request", "gunicorn/workers/sync.py"),
        ("handle", "gunicorn/workers/gthread.py"),
        ("handle_request", "gunicorn/workers/gthread.py"),
    }
    for name, file in frames:
        for marker_name, marker_file in request_markers:
            if name == marker_name and file.endswith(marker_file):
                return "request"
    return "other"


@dataclass(frozen=True, slots=True)
class Stall:
    start: float
    duration_s: float
    frame: str | None
    gil_held: bool | None
    ongoing: bool = False
    """Still stalled at the end of the window: the duration so far, not the final one."""
    cut_start: bool = False
    """Already stalled at the loop thread's first stack sample of the window: the duration
    seen, not the whole (a live window slides over the middle of stalls all the time)."""


@dataclass(frozen=True, slots=True)
class LoopView:
    tid: int
    busy_share: float | None
    stalls: tuple[Stall, ...]
    running: str | None
    executors: tuple[int, ...]
    busiest: str | None = None
    """The callback the loop spent the most sampled time in over the window (`running` is
    only the latest sample: a loop in select() at that instant reads as its outer `main`)."""


def _busy(thread: ThreadStat) -> bool:
    return syscalls.name(thread.syscall) not in syscalls.POLL


_LOOP_FRAMES = ("_run_once", "run_forever")
_MACHINERY = ("/asyncio/", "/selectors.py", "uvloop/")


def callback_key(frames: Sequence[Frame]) -> Frame | None:
    """The frame of user code an event loop is running right now, or None when it polls.

    Frames inner to the loop's `_run_once` are the running callback; asyncio's and the
    selector's own frames are dropped, so a loop sitting in `select()` has no key, and a loop
    running `handle_block` has that handler as its key whatever line it is on.
    """
    cut = len(frames)
    for index, frame in enumerate(frames):
        if frame.name.rsplit(".", 1)[-1] in _LOOP_FRAMES:
            cut = index
            break
    inner = [f for f in frames[:cut] if not any(m in f.file for m in _MACHINERY)]
    return innermost_app(inner) if inner else None


Segment = tuple[float, float, "tuple[str, str] | None", "str | None"]


WINDOW_GAP_S = 0.25
"""The longest gap between two py-spy windows (one ends, the next starts ~0.1 s later): no
sample of any thread falls in it, so it cannot end a callback by itself."""


def _callback_segments(
    tid: int, stacks: Sequence[StacksWindow], boundaries: Sequence[float] = ()
) -> list[Segment]:
    """(start, end, callback function, label) runs of the loop thread: one per callback.

    Consecutive samples in the same function are one callback unless something shows a new
    one began: another function in between, or a response written in between (`boundaries`;
    a blocking callback writes its response as it ends, and the next request's starts at
    once, in the same function when the same endpoint is hit back to back). The gap between
    two py-spy windows holds no samples at all and does not end a callback."""
    marks = sorted(boundaries)
    segments: list[Segment] = []
    previous_window: StacksWindow | None = None
    for window in stacks:
        for span in window.spans:
            if span.tid != tid:
                continue
            frame = callback_key([window.frames[i] for i in span.stack])
            key = (frame.name, frame.file) if frame is not None else None
            text = label(frame) if frame is not None else None
            if segments and segments[-1][2] == key:
                gap = span.start - segments[-1][1]
                bridged = gap < 0.05 or (window is not previous_window and gap < WINDOW_GAP_S)
                if bridged and not _between(marks, segments[-1][1] - 0.002, span.start + 0.002):
                    first = segments[-1]
                    segments[-1] = (first[0], span.end, key, first[3])
                    previous_window = window
                    continue
            segments.append((span.start, span.end, key, text))
            previous_window = window
    return [piece for segment in segments for piece in _split(segment, marks)]


def _between(marks: Sequence[float], lo: float, hi: float) -> bool:
    index = bisect_left(marks, lo)
    return index < len(marks) and marks[index] <= hi


def _split(segment: Segment, marks: Sequence[float]) -> list[Segment]:
    """A run of one function cut at each response written inside it: separate callbacks."""
    start, end, key, text = segment
    if key is None:
        return [segment]
    cuts = [m for m in marks[bisect_left(marks, start + 0.005) :] if m < end - 0.005]
    edges = [start, *cuts, end]
    return [(a, b, key, text) for a, b in pairwise(edges)]


def response_instants(
    samples: Sequence[SocketsSample], packets: Sequence[PacketsSample] = ()
) -> list[float]:
    """When responses were written. From tcp_info: a client connection that has sent bytes
    (bytes_acked > 0) last sent `last_data_sent_ms` before the sample (milliseconds; at the
    sockets probe's 2 Hz, a keep-alive connection answered twice between two samples shows
    one). From packets: the first payload a listener's port sends on a connection, which is
    every response when clients open a connection per request."""
    instants: set[float] = set()
    listen_ports: set[int] = set()
    for sample in samples:
        ports = {int(s.local.rsplit(":", 1)[1]) for s in sample.sockets if s.state == "LISTEN"}
        listen_ports |= ports
        for sock in sample.sockets:
            if (
                sock.state == "LISTEN"
                or not sock.bytes_acked
                or sock.last_data_sent_ms is None
                or int(sock.local.rsplit(":", 1)[1]) not in ports
            ):
                continue
            instants.add(round(sample.t - sock.last_data_sent_ms / 1000, 3))
    for batch in packets:
        for event in batch.events:
            if event.kind == "DATA" and int(event.src.rsplit(":", 1)[1]) in listen_ports:
                instants.add(round(event.t, 3))
    return sorted(instants)


def loop_view(
    tid: int,
    samples: Sequence[ThreadsSample],
    stacks: Sequence[StacksWindow],
    history: Holds | None,
    executors: tuple[int, ...],
    threshold_s: float = STALL_THRESHOLD_S,
    boundaries: Sequence[float] = (),
) -> LoopView:
    """Busy share from the threads probe; stalls from stack samples.

    A stall is one callback running for longer than the threshold. The syscall alone cannot
    say that: a loaded loop polls with a zero timeout between callbacks, for microseconds a
    100 Hz sampler never sees, so "not seen in epoll_wait" would merge many short callbacks
    into one false stall. Stack samples at 100 Hz show which callback runs; a stall is a run
    of samples inside the same callback function, so its edges are good to ~10 ms.
    """
    series = [(s.t, t) for s in samples for t in s.threads if t.tid == tid]
    busy_time = total = 0.0
    for (t0, _), (t1, thread) in pairwise(series):
        total += t1 - t0
        if _busy(thread):
            busy_time += t1 - t0
    last_t = stacks[-1].t if stacks else None
    first_t = min(
        (span.start for window in stacks for span in window.spans if span.tid == tid),
        default=None,
    )
    segments = _callback_segments(tid, stacks, boundaries)
    stalls = [
        Stall(
            start,
            end - start,
            text,
            _gil_held(tid, start, end, history),
            ongoing=last_t is not None and end >= last_t - 0.02,
            cut_start=first_t is not None and start <= first_t + 0.02,
        )
        for start, end, key, text in segments
        if key is not None and end - start >= threshold_s
    ]
    return LoopView(
        tid=tid,
        busy_share=round(busy_time / total, 4) if total > 0 else None,
        stalls=tuple(stalls),
        running=_latest_stack(tid, stacks),
        executors=executors,
        busiest=_busiest(segments),
    )


def _busiest(segments: Sequence[Segment]) -> str | None:
    """The callback with the most time in `segments` (the first of equals)."""
    weights: defaultdict[str, float] = defaultdict(float)
    for start, end, key, text in segments:
        if key is not None and text is not None:
            weights[text] += end - start
    return max(weights, key=weights.__getitem__) if weights else None


def _gil_held(tid: int, start: float, end: float, history: Holds | None) -> bool | None:
    """Did the loop thread hold the GIL for most of the stall? (CPU work vs blocking call)"""
    if history is None or not history.runs:
        return None
    held = covered = 0.0
    for run_start, run_end, holder in history.runs:
        overlap = min(run_end, end) - max(run_start, start)
        if overlap > 0:
            covered += overlap
            if holder == tid:
                held += overlap
    if covered < 0.5 * (end - start):
        return None
    return held > 0.5 * covered


def _latest_stack(tid: int, stacks: Sequence[StacksWindow]) -> str | None:
    for window in reversed(stacks):
        spans = [span for span in window.spans if span.tid == tid]
        if spans:
            frame = innermost_app([window.frames[i] for i in spans[-1].stack])
            return label(frame) if frame is not None else None
    return None


@dataclass(frozen=True, slots=True)
class Concurrency:
    roles: dict[int, str]
    state_shares: dict[int, dict[str, float]]
    current_state: dict[int, str]
    loops: tuple[LoopView, ...]
    model: str | None


def analyse(
    samples: Sequence[ThreadsSample],
    stacks: Sequence[StacksWindow],
    history: Holds | None,
    info: GilInfo | None,
    threshold_s: float = STALL_THRESHOLD_S,
    boundaries: Sequence[float] = (),
) -> Concurrency:
    """`boundaries`: instants responses were written (`response_instants`), which end a
    loop's callback even when the next one runs the same function."""
    roles = {tid: role(frames) for tid, frames in _frames_by_thread(stacks).items()}
    counts: dict[int, Counter[str]] = {}
    current: dict[int, str] = {}
    for sample in samples:
        holder = history.holder_at(sample.t) if history is not None else None  # once a sample
        for thread in sample.threads:
            state = classify(thread, holder, info)
            counts.setdefault(thread.tid, Counter())[state] += 1
            current[thread.tid] = state
    shares = {
        tid: {state: round(n / sum(c.values()), 4) for state, n in c.most_common()}
        for tid, c in counts.items()
    }
    executors = tuple(sorted(tid for tid, r in roles.items() if r == "executor"))
    loops = tuple(
        loop_view(tid, samples, stacks, history, executors, threshold_s, boundaries)
        for tid, r in sorted(roles.items())
        if r == "event-loop"
    )
    model = "greenlets" if gevent_hub(stacks) else _model(roles, len(current))
    return Concurrency(roles, shares, current, loops, model)


def gevent_hub(stacks: Sequence[StacksWindow]) -> bool:
    """gevent's hub in the recent stacks: requests are greenlets switched on one thread, and
    the thread-per-request reading of its stacks would be wrong (issue 12.8)."""
    return any("gevent/hub.py" in f.file for window in stacks[-3:] for f in window.frames)


def _model(roles: dict[int, str], thread_count: int) -> str | None:
    """The essay's names: asyncio event loop, thread per request, or a hybrid of the two."""
    if not roles and thread_count == 0:
        return None
    kinds = set(roles.values())
    if "event-loop" in kinds:
        return "hybrid" if ("executor" in kinds or "request" in kinds) else "asyncio"
    return "threads"
