"""Stack spans end when their thread does.

py-spy's chrometrace output says when a thread's stack *changes*, never when the thread
*ends*: a thread that exits keeps its last stack until the recording stops, so a
thread-per-request server (werkzeug, `ThreadingHTTPServer`) showed every thread that served
a request in the last second as still serving it — 12 "in flight" for 4 clients. The threads
probe lists the live threads many times a second; a thread missing from a later list was
gone by then, and its spans are cut there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lifescope.samples import StacksWindow, ThreadsSample


def exits(threads: Sequence[ThreadsSample]) -> dict[int, float]:
    """Thread id → when it had exited: midway between the last sample that listed it and the
    next one (which did not). Threads in the last sample are alive as far as anyone knows."""
    last: dict[int, int] = {}
    for index, sample in enumerate(threads):
        for thread in sample.threads:
            last[thread.tid] = index
    final = len(threads) - 1
    return {tid: (threads[i].t + threads[i + 1].t) / 2 for tid, i in last.items() if i < final}


def clip(
    stacks: Sequence[StacksWindow], threads: Sequence[ThreadsSample]
) -> tuple[StacksWindow, ...]:
    """`stacks` with every span of an exited thread cut at its exit. Windows that need no cut
    are returned as they are (several analyses cache by a window's identity)."""
    gone = exits(threads)
    if not gone:
        return tuple(stacks)
    out = []
    for window in stacks:
        spans = []
        changed = False
        for span in window.spans:
            exited = gone.get(span.tid)
            if exited is None or span.end <= exited:
                spans.append(span)
            else:
                changed = True
                if span.start < exited:
                    spans.append(replace(span, end=exited))
        out.append(replace(window, spans=tuple(spans)) if changed else window)
    return tuple(out)


def now(threads: Sequence[ThreadsSample], end: float) -> tuple[float, frozenset[int] | None]:
    """The moment "in flight now" is asked at, and the threads known alive then.

    That moment is the last listing of the live threads when it is under a second old, else
    `end` (the threads probe stalled or absent: nobody is known alive or gone). py-spy keeps
    an exited thread's last stack until its recording ends, and only a listing shows the
    thread gone. A thread missing from that listing serves nothing now, however recently its
    stack was in a handler: an exited thread's spans end up to half a listing's period
    (`clip`) or one walk after its exit, inside the 50 ms that bridges stack samples and
    listings, and a thread-per-request server read 6 in flight for 4 clients under a hog."""
    if threads and end - 1.0 < threads[-1].t < end:
        return threads[-1].t, frozenset(t.tid for t in threads[-1].threads)
    return end, None
