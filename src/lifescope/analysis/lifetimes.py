"""Stack spans end when their thread does.

py-spy's chrometrace output says when a thread's stack *changes*, never when the thread
*ends*: a thread that exits keeps its last stack until the recording stops, so a
thread-per-request server (werkzeug, `ThreadingHTTPServer`) showed every thread that served
a request in the last second as still serving it — 12 "in flight" for 4 clients. The threads
probe lists the live threads many times a second; a thread missing from a later list was
gone by then, and its spans are cut there.

The same listings show where a window stopped looking: py-spy closes its slices when it
writes its file, after its last sample, and a thread born in between is listed but in no
span. A window ends before such a thread's birth (`sampled_end`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import replace
from math import inf
from typing import TypeVar

from lifescope.samples import StacksWindow, TasksSample, ThreadsSample

T = TypeVar("T")


def listed(threads: Sequence[ThreadsSample]) -> tuple[dict[int, int], dict[int, int]]:
    """Thread id → the index of the first listing that has it, and of the last: one pass over
    the listings (thousands per window, each refresh) for both `exits` and `births`."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index, sample in enumerate(threads):
        for thread in sample.threads:
            first.setdefault(thread.tid, index)
            last[thread.tid] = index
    return first, last


def exits(threads: Sequence[ThreadsSample], last: dict[int, int]) -> dict[int, float]:
    """Thread id → when it had exited: midway between the last sample that listed it and the
    next one (which did not). Threads in the last sample are alive as far as anyone knows."""
    final = len(threads) - 1
    return {tid: (threads[i].t + threads[i + 1].t) / 2 for tid, i in last.items() if i < final}


def births(
    threads: Sequence[ThreadsSample], first: dict[int, int], last: dict[int, int]
) -> dict[int, tuple[float, float, float]]:
    """Thread id → (the last listing without it, the first and the last listing with it): it
    was born after the first of these, and alive from the second to the third — to no known
    end (inf) when the newest listing has it. Threads of the first listing have no known
    birth and are left out."""
    final = len(threads) - 1
    return {
        tid: (threads[i - 1].t, threads[i].t, threads[last[tid]].t if last[tid] < final else inf)
        for tid, i in first.items()
        if i > 0
    }


def sampled_end(window: StacksWindow, born: dict[int, tuple[float, float, float]]) -> float:
    """Where `window`'s stacks stop being evidence. A window that shows sampling only up to
    `sampled_to` (py-spy's) and lists every thread at every sample (`--idle`) was not
    sampling while a thread it never saw lived, born after that, for a whole sampling
    interval (a shorter life can fall between two samples) or to the newest listing (a
    collection ending just after such a birth read three requests "not visible"). A window
    with no span at all (a py-spy run stopped before its first sample) saw nothing. Without
    this, a thread-per-request server read "code not visible" for every request begun in a
    window's last ~0.1-0.2 s (2 runs in 8 under two CPU hogs at 25 Hz). A thread py-spy
    cannot see (not Python) cuts too: a window a little short, never a wrong stack."""
    last = window.sampled_to
    if last is None:
        return window.t
    if not window.spans:
        return window.start
    interval = 1.0 / window.rate_hz if window.rate_hz > 0 else 0.0
    seen = {span.tid for span in window.spans}
    late = [
        max(before, last)
        for tid, (before, first, final) in born.items()
        if first > last and before < window.t and final - first >= interval and tid not in seen
    ]
    return min(late, default=window.t)


def clip(
    stacks: Sequence[StacksWindow], threads: Sequence[ThreadsSample]
) -> tuple[StacksWindow, ...]:
    """`stacks` with every span of an exited thread cut at its exit, and every window cut
    where it stopped sampling (`sampled_end`). Windows that need no cut are returned as they
    are (several analyses cache by a window's identity)."""
    first, last = listed(threads)
    gone = exits(threads, last)
    born = births(threads, first, last)
    out = []
    for window in stacks:
        end = sampled_end(window, born)
        spans = []
        changed = end < window.t
        for span in window.spans:
            cut = min(end, gone.get(span.tid, end))
            if span.end <= cut:
                spans.append(span)
            else:
                changed = True
                if span.start < cut:
                    spans.append(replace(span, end=cut))
        out.append(replace(window, t=end, spans=tuple(spans)) if changed else window)
    return tuple(out)


def sampled_to(stacks: Sequence[StacksWindow]) -> float:
    """The newest moment the stacks sampled. "In flight now" is asked there: a py-spy window
    runs on to its file's writing, up to ~0.2 s past its last sample under a CPU hog, and a
    moment asked in that gap found no thread sampled within 50 ms of it: every request of a
    thread-per-request server read "code not visible" (the likely reading of a hog run)."""
    if not stacks:
        return inf  # no stacks: nothing moves the moment asked
    newest = max(stacks, key=lambda w: w.t)
    return newest.t if newest.sampled_to is None else newest.sampled_to


def asked(
    threads: Sequence[ThreadsSample],
    tasks: Sequence[TasksSample],
    stacks: Sequence[StacksWindow],
    end: float,
) -> tuple[float, frozenset[int] | None, int]:
    """The moment "in flight now" is asked at, the threads the last listing by then has,
    and the index in `tasks` of the sample its parked tasks come from (-1: none).

    It is a moment the stacks saw and another source spoke of, the newest under a second
    before `end` (where the stacks last sampled):

    * with asyncio tasks read, a task sample that found tasks (Django imports asyncio and
      runs no loop: its empty samples say nothing): parked tasks and stacks then speak of one
      instant. Read 0.2-0.5 s apart (tasks at 2 Hz, stacks at 100), the loop thread seen
      writing request A's response was counted beside a task list taken while A still
      slept, or after A's client had sent its next request: 5 in flight for 4 clients in 4
      of 12 runs of uvicorn's two workers under two CPU hogs;
    * else a listing of the live threads. py-spy keeps an exited thread's last stack until
      its recording ends, and only a listing shows the thread gone (5 and 6 in flight for 4
      clients in hog runs); the states are the listing's too, not those of the 40 ms of
      stacks after it (four threads back from their handler read as four L2 requests).

    "Saw" because py-spy's windows leave ~0.1 s between them: a listing there, before the
    newer window's first sample, found no thread sampled and every request of a
    thread-per-request server "code not visible" (3 runs in 10 on a quiet machine). With no
    such moment, the newest candidate is taken, or `end`; without a recent task sample the
    parked tasks are the nearest sample's, and without a recent listing nobody is known
    alive or gone (the threads probe stalled or absent)."""
    seen = _sampled_stretches(stacks, end - 1.0)
    listing_times = [sample.t for sample in threads]
    found = [i for i, sample in enumerate(tasks) if sample.tasks]
    from_tasks = [tasks[i].t for i in found if end - 1.0 < tasks[i].t <= end]
    candidates = from_tasks or [t for t in listing_times if end - 1.0 < t <= end]
    looked = [t for t in candidates if any(lo <= t <= hi for lo, hi in seen)]
    at = max(looked or candidates or [end])
    i = min(found, key=lambda j: abs(tasks[j].t - at), default=-1)  # at itself, or nearest
    listing = bisect_right(listing_times, at) - 1
    if listing >= 0 and at - 1.0 < threads[listing].t:
        return at, frozenset(t.tid for t in threads[listing].threads), i
    return at, None, i


def _sampled_stretches(stacks: Sequence[StacksWindow], since: float) -> list[tuple[float, float]]:
    """From each window's first sample to its last, for the windows ending after `since`."""
    return [
        (min(span.start for span in w.spans), w.t if w.sampled_to is None else w.sampled_to)
        for w in stacks
        if w.spans and w.t > since
    ]


def sampled_at(stacks: Sequence[StacksWindow], t: float) -> frozenset[int]:
    """Threads the stacks show at `t`, whatever they were doing: a span covers it."""
    return frozenset(
        span.tid
        for window in stacks
        if window.start <= t <= window.t
        for span in window.spans
        if span.start <= t <= span.end
    )


def state_at(
    parts: Sequence[tuple[float, float, T]], t: float, sampled: bool, key: Callable[[T], object]
) -> tuple[T, float, float] | None:
    """A thread's request state at `t` from its request `parts` (time-ordered (start, end,
    state)), since when its `key` (the layer) has held, and the end of its part.

    That is the part covering `t`; for a thread whose stack was not sampled at `t`
    (`sampled` False: a gap in its spans), a part ending or starting within 50 ms of it.
    A thread sampled at `t` doing something else (an event loop in `select`) serves no
    request then, however near its last request part: bridged, the loop thread's 3 ms
    response write 40 ms before (or 5 ms after) was one more request beside the parked
    tasks."""
    covering = [i for i, (lo, hi, _) in enumerate(parts) if lo <= t <= hi]
    if covering:
        upto = parts[: covering[-1] + 1]
    elif sampled:
        return None
    else:
        upto = [part for part in parts if part[0] <= t + 0.05]
        if not upto or t - upto[-1][1] >= 0.05:
            return None
    last_lo, last_hi, last = upto[-1]
    since = last_lo
    for lo, hi, state in reversed(upto[:-1]):
        if key(state) != key(last) or since - hi > 0.05:
            break
        since = lo
    return last, since, last_hi


def _before(threads: Sequence[ThreadsSample], t: float) -> int:
    """The index of the last listing before `t` (-1: none)."""
    return bisect_left([sample.t for sample in threads], t) - 1


def listing_at(threads: Sequence[ThreadsSample], t: float) -> ThreadsSample | None:
    """The listing nearest to `t`. Which thread waits on which connection must be read at
    the socket sample's moment: joined with a listing taken 40 ms later, an http.server
    connection whose 5-byte body Nagle held behind unacknowledged headers (L5) had no thread
    on it any more, its thread already in the next request's handler, and one request was
    counted twice (5 in flight for 4 clients under two CPU hogs)."""
    i = _before(threads, t)
    near = [threads[j] for j in (i, i + 1) if 0 <= j < len(threads)]
    return min(near, key=lambda s: abs(s.t - t), default=None)
