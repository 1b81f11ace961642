"""What the audience is looking at, in one to three sentences of the essay's words.

`lifescope demo` is shown on a projector to people who have read (or are hearing) "The Request
Lifecycle": they know "the accept queue", "layer 5", "the GIL", "the event loop is blocked",
not `tcpi_last_data_sent`. So the overlay says the single most important thing the report
shows, in those words, ranked, each with a severity the UI can colour — and when nothing is
wrong it says so calmly, naming the concurrency model on screen.

Pure: a `Report` in, sentences out. Each rule reads only fields `report.build` already computed,
and says nothing the numbers do not support (a threshold not crossed is silence, not a guess).
Slow middleware is invisible to thread states and sockets alike (an awaiting coroutine uses
neither), so layer 3 is narrated only from the request-layer engine's shares, when it has them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from lifescope.analysis.report import ConnectionView, Report, StallView, reading
from lifescope.analysis.wording import in_prose


class Severity(IntEnum):
    """How loudly to say it. Ordered: a higher value outranks a lower one."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str
    """One sentence for the room, in the essay's vocabulary."""
    severity: Severity
    rule: str
    """Which rule spoke: one of `PRIORITY`, or calm. Stable, so a UI or a test can key on it."""
    layer: int | None = None
    """The essay's layer (0-6) the sentence is about, when it is about one."""
    detail: str = ""
    """The numbers behind the sentence, for a second, smaller line."""
    score: float = 0.0
    """How strongly the rule fired (0..1): a stalled share, a queue's fill. Informational (a UI
    may scale an indicator by it); ranking is by severity, then `PRIORITY`."""


PRIORITY = (
    "gone", "loop-stall", "accept-queue", "gil", "loop-busy", "middleware", "executors",
    "send-queue", "keepalive",
)  # fmt: skip
"""Order within one severity: by how many requests the problem hurts. A stalled loop stops
every request; a full accept queue turns new clients away; a GIL hog slows every thread; a busy
loop is headroom running out; slow middleware and busy executors delay requests without
stopping the server; slow clients
mostly hurt themselves on an asyncio server; idle connections cost only descriptors."""

MAX_SENTENCES = 3
"""A live audience reads one sentence, maybe two; three is the most an overlay can carry."""

RECENT_S = 10.0
"""Only stalls that ended this recently are narrated: a stall from a minute ago is history, and
the room is looking at what the screen shows now."""
STALL_SHARE_CRITICAL = 0.2
"""A loop stalled a fifth of the time turns every request's latency into a lottery."""
STALL_LONG_MS = 500.0
"""Half a second without the loop is visible to any human client: critical on its own."""

LOOP_BUSY_WARNING = 0.5
"""A loop busy half the time has no headroom: one burst and requests queue behind each other."""
LOOP_BUSY_CRITICAL = 0.9
"""Busy nine tenths of the time is a saturated loop: requests are already queueing."""

GIL_HELD_CRITICAL = 0.9
"""The essay's "nine times in ten": beyond this the other threads get the GIL only in scraps."""
GIL_HELD_WARNING = 0.7
GIL_WAITERS_MIN = 0.1
"""Mean number of threads waiting for the GIL (or one thread's waiting share). A busy GIL that
nobody waits for is just a busy program; it is contention only when someone queues."""
GIL_CULPRIT_MIN = 0.15
"""A named thread (a focus) holding the GIL more than one time in seven is visibly taking turns
from the others (on a loaded 2-core machine the demo's hog got 20-30 %)."""

ACCEPT_QUEUE_MIN = 3
"""A sample can catch one or two connections between the handshake and accept() on a healthy
server; three or more waiting means accept() is lagging behind arrivals."""

SLOW_CLIENTS_MIN = 3
"""One or two stuck connections can be one bad network path; three is a pattern."""
SEND_STUCK_MS = 250
"""A response still unacknowledged with nothing moving for this long is stuck, not in flight:
a healthy peer acknowledges within Linux's longest delayed-ACK timeout (200 ms), so a small
response caught mid-flight (common: delayed ACKs hold a few hundred bytes for up to 40 ms on
loopback) never counts."""
SEND_STUCK_BYTES = 64 * 1024
"""Without tcp_info timers, only a send queue this deep counts as stuck."""

KEEPALIVE_IDLE_MIN = 50
"""The demo's load generator keeps about eight pooled connections; fifty idle ones are clients
holding connections they are not using — each one a file descriptor and kernel buffers."""
FD_SHARE_CRITICAL = 0.5
"""Half the descriptor limit in use: the next flood ends in accept() failing with EMFILE."""

LAYER_DOMINANT = 0.5
"""More than half of all in-flight request time in one layer: that is where requests wait."""

EXECUTOR_BUSY_SHARE = 0.5
"""An executor thread runnable half the time or more is doing the waiting for a request."""
EXECUTOR_BUSY_MIN = 2
"""One busy worker is one slow query; two or more is a pattern worth telling the room."""

_CALM = {
    "asyncio": "No stall, queue or contention in sight: one event loop serves every request "
    "and spends its time waiting for I/O.",
    "hybrid": "No stall, queue or contention in sight: one event loop serves the requests and "
    "hands blocking work to a pool of threads.",
    "threads": "No stall, queue or contention in sight: a thread per request, none of them "
    "waiting long.",
    "greenlets": "gevent: every request is a greenlet on one thread, and a sampler sees only "
    "the one running — requests parked in I/O show as received, their code not visible.",
}
"""Said as what was measured, not as "all is well": a request awaiting in slow middleware, for
one, shows in none of the numbers these rules read."""


@dataclass(frozen=True, slots=True)
class Focus:
    """What the room was just told to watch: on stage, the pathology a key switched on.

    A focused rule that finds its evidence speaks first, whatever its severity (a presenter
    who switched on slow clients wants them named, not the loop stall that was there
    before); one that finds none says nothing, so focus never invents a problem.
    """

    rules: tuple[str, ...]
    """Rule names (`PRIORITY`) that show this pathology, the first that speaks wins."""
    culprit: str | None = None
    """The function (loop stalls, executors) or thread (GIL) the pathology runs in: the
    focused rule then speaks about it only, or not at all."""


def narrate(
    report: Report, limit: int = MAX_SENTENCES, focus: Sequence[Focus] = ()
) -> tuple[Sentence, ...]:
    """The `limit` most important sentences about `report`, most important first.

    Ranked by severity, then by `PRIORITY`, except that sentences for `focus` (most recent
    first) lead, after only a gone target. Never empty: with nothing notable it returns one
    calm sentence naming the concurrency model — or, while the first stacks have not arrived,
    says it is still reading instead of guessing a model.
    """
    focused = _focused(report, focus)
    spoke = {s.rule for s in focused}
    found = [s for rule in _RULES if (s := rule(report)) is not None and s.rule not in spoke]
    # A critical stall already says the loop is busy; otherwise the busy share says more (many
    # short callbacks, none long enough to be a stall, can still saturate the loop).
    if not any(s.rule == "loop-stall" and s.severity == Severity.CRITICAL for s in found):
        busy = _loop_busy(report)
        if busy is not None:
            found.append(busy)
    if spoke & {"loop-stall", "loop-busy"}:
        found = [s for s in found if s.rule not in ("loop-stall", "loop-busy")]
    if not found and not focused:
        return (_calm(report),)
    found.sort(key=lambda s: (-s.severity, PRIORITY.index(s.rule), -s.score))
    gone = [s for s in found if s.rule == "gone"]
    ranked = gone + focused + [s for s in found if s.rule != "gone"]
    return tuple(ranked[: max(1, limit)])


def _focused(report: Report, focus: Sequence[Focus]) -> list[Sentence]:
    sentences: list[Sentence] = []
    for wanted in focus:
        for name in wanted.rules:
            rule = _BY_NAME.get(name)
            sentence = rule(report, wanted.culprit) if rule is not None else None
            if sentence is not None:
                if sentence.rule not in {s.rule for s in sentences}:
                    sentences.append(sentence)
                break
    return sentences


def headline(report: Report) -> Sentence:
    """The one sentence for the overlay."""
    return narrate(report, 1)[0]


# ------------------------------------------------------------------------------------------ rules


def function_name(frame: str | None) -> str | None:
    """``"handle_block (server.py:123)"`` -> ``"handle_block"``: the room needs the name only."""
    if not frame:
        return None
    return frame.split(" (", 1)[0].rsplit(".", 1)[-1] or None


def _gone(report: Report) -> Sentence | None:
    if report.gone is None:
        return None
    return Sentence(f"The server is gone: {report.gone}.", Severity.CRITICAL, "gone", score=1.0)


def _recent_stalls(report: Report, stalls: tuple[StallView, ...]) -> list[StallView]:
    return [
        s
        for s in stalls
        if s.ongoing or report.window_s - (s.start_s + s.duration_ms / 1000.0) <= RECENT_S
    ]


def _loop_stall(report: Report, culprit: str | None = None) -> Sentence | None:
    """With `culprit`, only the stalls in that function count (a focus): None without any."""
    best: Sentence | None = None
    for loop in report.loops:
        stalls = _recent_stalls(report, loop.stalls)
        if culprit is not None:
            stalls = [s for s in stalls if function_name(s.frame) == culprit]
        if not stalls:
            continue
        span = min(report.window_s, RECENT_S) or 1.0
        stalled_ms = sum(s.duration_ms for s in stalls)
        share = min(1.0, stalled_ms / 1000.0 / span)
        by_frame: defaultdict[str | None, float] = defaultdict(float)
        for s in stalls:
            by_frame[function_name(s.frame)] += s.duration_ms
        guilty = max(by_frame, key=by_frame.__getitem__)  # the first of equals
        main = [s for s in stalls if function_name(s.frame) == guilty]
        held = [s.gil_held for s in main if s.gil_held is not None]
        where = f" in {guilty}" if guilty else ""
        if held and sum(held) > len(held) / 2:
            text = f"The event loop is busy{where}, holding the GIL: every other request waits."
        elif held:
            text = f"The event loop is blocked{where}: every other request waits."
        else:
            text = f"The event loop is stalled{where}: every other request waits."
        longest = max(s.duration_ms for s in stalls)
        ongoing = any(s.ongoing for s in stalls)
        critical = ongoing or share >= STALL_SHARE_CRITICAL or longest >= STALL_LONG_MS
        count = len(stalls)
        detail = (
            f"{count} stall{'s' if count != 1 else ''}, longest {longest:.0f} ms, "
            f"stalled {in_prose(share)} of the last {span:.0f} s"
        )
        if ongoing:
            detail += " — stalled now"
        sentence = Sentence(
            text,
            Severity.CRITICAL if critical else Severity.WARNING,
            "loop-stall",
            layer=None,
            detail=detail,
            score=max(share, 1.0 if ongoing else 0.0),
        )
        if best is None or (sentence.severity, sentence.score) > (best.severity, best.score):
            best = sentence
    return best


def _loop_busy(report: Report, culprit: str | None = None) -> Sentence | None:
    loop = max(
        (each for each in report.loops if each.busy_share is not None),
        key=lambda each: each.busy_share or 0.0,
        default=None,
    )
    if loop is None or loop.busy_share is None or loop.busy_share < LOOP_BUSY_WARNING:
        return None
    share = loop.busy_share
    name = function_name(loop.busiest)
    if culprit is not None and name != culprit:
        return None
    where = f", mostly in {name}" if name else ""
    critical = share >= LOOP_BUSY_CRITICAL
    tail = "requests are queueing behind it." if critical else "requests start to queue."
    return Sentence(
        f"The event loop is busy {in_prose(share)} of the time{where}: {tail}",
        Severity.CRITICAL if critical else Severity.WARNING,
        "loop-busy",
        detail=f"loop thread {loop.tid} busy {in_prose(share)} of the window",
        score=share,
    )


def _gil_waiters(report: Report) -> float:
    """Mean threads waiting for the GIL, or the best stand-in the report has."""
    if report.gil.waiters_mean is not None:
        return report.gil.waiters_mean
    shares = [t.waiting_gil_share for t in report.threads if t.waiting_gil_share is not None]
    if shares:
        return sum(shares)
    return float(sum(1 for t in report.threads if t.state == "gil-wait"))


def _gil(report: Report, culprit: str | None = None) -> Sentence | None:
    """With `culprit` (a thread name), only that thread holding a real share of the GIL
    speaks, and the sentence gives its own share, not the total."""
    held = report.gil.held_share
    if held is None:
        return None
    waiters = _gil_waiters(report)
    top_wait = max((t.waiting_gil_share or 0.0 for t in report.threads), default=0.0)
    if waiters < GIL_WAITERS_MIN and top_wait < GIL_WAITERS_MIN:
        return None
    if culprit is not None:
        named = [t for t in report.threads if t.name == culprit]
        own = max((t.gil_share or 0.0 for t in named), default=0.0)
        if own < GIL_CULPRIT_MIN:
            return None
        held_by = own
        who = f"One thread ({culprit})"
    else:
        if held < GIL_HELD_WARNING:
            return None
        held_by = held
        holder = max(report.threads, key=lambda t: t.gil_share or 0.0, default=None)
        who = "One thread"
        if holder is not None and (holder.gil_share or 0.0) >= 0.5 * held:
            # Named, the sentence is about that thread: its own share, not the total (the
            # demo's hog at 65 % with the loop at 34 % read "almost all the time").
            who = f"One thread ({holder.name})"
            held_by = holder.gil_share or held
    tenths = round(held_by * 10)
    often = "almost all the time" if tenths >= 10 else f"{tenths} times in 10"
    waiting = [t.name for t in report.threads if (t.waiting_gil_share or 0.0) >= GIL_WAITERS_MIN]
    detail = f"GIL held {in_prose(held)}, {waiters:.1f} threads waiting on average"
    if waiting:
        detail += f" (most: {', '.join(waiting[:3])})"
    return Sentence(
        f"{who} holds the GIL {often}: the others queue for it.",
        Severity.CRITICAL if held >= GIL_HELD_CRITICAL else Severity.WARNING,
        "gil",
        detail=detail,
        score=held,
    )


def _accept_queue(report: Report) -> Sentence | None:
    listen = report.connections.listen
    if not listen:
        return None
    fullest = max(listen, key=lambda lv: (lv.accept_queue / max(1, lv.backlog), lv.accept_queue))
    overflows = max((lv.overflows or 0 for lv in listen), default=0)
    queued = fullest.accept_queue
    full = queued >= fullest.backlog
    detail = f"{fullest.local}: {queued} of {fullest.backlog} waiting for accept()"
    if overflows:
        detail += f", {overflows} dropped (overflows) in the window"
    if full or (overflows and queued >= ACCEPT_QUEUE_MIN):
        return Sentence(
            "The accept queue is full: new connections wait in the kernel (layer 1) "
            "— or are dropped.",
            Severity.CRITICAL,
            "accept-queue",
            layer=1,
            detail=detail,
            score=1.0,
        )
    if queued >= ACCEPT_QUEUE_MIN:
        return Sentence(
            f"{queued} new connections wait in the kernel's accept queue: "
            "the server is not calling accept() (layer 1).",
            Severity.WARNING,
            "accept-queue",
            layer=1,
            detail=detail,
            score=queued / max(1, fullest.backlog),
        )
    # Overflows with our queue empty are not narrated: the counter is per network namespace,
    # so on a shared host they are most likely another listener's.
    return None


def _send_queue(report: Report) -> Sentence | None:
    stuck = [c for c in report.connections.top if c.kind == "client" and _stuck(c)]
    if len(stuck) < SLOW_CLIENTS_MIN:
        return None
    total = sum(c.send_q for c in stuck)
    return Sentence(
        f"Responses are stuck in the kernel's send buffer: {len(stuck)} slow clients (layer 5).",
        Severity.WARNING,
        "send-queue",
        layer=5,
        detail=f"{total / 1024:.0f} KiB written but not yet taken by the clients",
        score=min(1.0, len(stuck) / 20),
    )


def _stuck(conn: ConnectionView) -> bool:
    if conn.send_q <= 0:
        return False
    if conn.idle_ms is None:
        return conn.send_q >= SEND_STUCK_BYTES
    return conn.idle_ms >= SEND_STUCK_MS


def _keepalive(report: Report) -> Sentence | None:
    conn = report.connections
    idle = conn.keepalive_idle
    if idle is None or idle < KEEPALIVE_IDLE_MIN:
        return None
    fd_share = conn.fds / conn.fd_limit if conn.fds and conn.fd_limit else None
    critical = fd_share is not None and fd_share >= FD_SHARE_CRITICAL
    text = f"{idle} idle keep-alive connections each hold a file descriptor (layer 6)."
    if critical:
        text = (
            f"{idle} idle keep-alive connections hold {in_prose(fd_share or 0.0)} of the "
            "file-descriptor limit (layer 6)."
        )
    detail = f"{conn.fds} of {conn.fd_limit} descriptors open" if conn.fds is not None else ""
    return Sentence(
        text,
        Severity.CRITICAL if critical else Severity.WARNING,
        "keepalive",
        layer=6,
        detail=detail,
        score=min(1.0, fd_share if fd_share is not None else idle / 1000),
    )


def _middleware(report: Report) -> Sentence | None:
    """Layer 3 from the request-layer engine, when it can see where awaiting requests are.

    Nothing else in the report can: a coroutine awaiting in middleware uses no thread, no CPU
    and no socket queue. Read defensively, since older reports have no layers.
    """
    layers = getattr(report, "layers", None)
    if layers is None:
        return None
    share = dict(layers.shares).get("L3", 0.0) or 0.0
    if share < LAYER_DOMINANT:
        return None
    now = dict(layers.now).get("L3", 0)
    return Sentence(
        "Requests spend most of their time in middleware (layer 3), before any handler runs.",
        Severity.WARNING,
        "middleware",
        layer=3,
        detail=f"{in_prose(share)} of in-flight request time in layer 3, {now} requests there now",
        score=share,
    )


def _executors(report: Report, culprit: str | None = None) -> Sentence | None:
    executors = [t for t in report.threads if t.role == "executor"]
    busy = [t for t in executors if (t.active_share or 0.0) >= EXECUTOR_BUSY_SHARE]
    if culprit is not None:
        # Focused on one function: a thread in it that waits for the GIL is still doing
        # the request's work (sqlite hands the GIL back between statements), so it counts.
        busy = [
            t
            for t in executors
            if function_name(t.top_frame) == culprit
            and (t.active_share or 0.0) + (t.waiting_gil_share or 0.0) >= EXECUTOR_BUSY_SHARE
        ]
    if len(busy) < EXECUTOR_BUSY_MIN:
        return None
    frames = Counter(
        name for t in busy if (name := function_name(t.top_frame)) and name != "_worker"
    )
    where = f" in {frames.most_common(1)[0][0]}" if frames else ""
    who = f"All {len(busy)}" if len(busy) == len(executors) else f"{len(busy)} of {len(executors)}"
    return Sentence(
        f"{who} executor threads are busy{where}: requests wait for them (layer 4).",
        Severity.WARNING,
        "executors",
        layer=4,
        detail=", ".join(f"{t.name} {in_prose(t.active_share or 0.0)}" for t in busy[:4]),
        score=len(busy) / max(1, len(executors)),
    )


def _calm(report: Report) -> Sentence:
    if reading(report):
        return Sentence(
            "Reading the server: its threads' roles and any event loop show with the first stacks.",
            Severity.INFO,
            "reading",
        )
    text = _CALM.get(report.model or "", "Nothing notable yet: no stall, queue or contention.")
    busy = [loop.busy_share for loop in report.loops if loop.busy_share is not None]
    detail = f"event loop busy {in_prose(max(busy))}" if busy else ""
    if report.gil.held_share is not None:
        detail += (", " if detail else "") + f"GIL held {in_prose(report.gil.held_share)}"
    return Sentence(text, Severity.INFO, "calm", detail=detail)


_RULES = (_gone, _loop_stall, _gil, _accept_queue, _send_queue, _keepalive, _executors, _middleware)
"""Every rule but the busy loop, which `narrate` consults only when no critical stall spoke."""

_Rule = Callable[..., Sentence | None]
_BY_NAME: dict[str, _Rule] = {
    "loop-stall": _loop_stall,
    "loop-busy": _loop_busy,
    "gil": _gil,
    "executors": _executors,
    "accept-queue": lambda report, _culprit=None: _accept_queue(report),
    "send-queue": lambda report, _culprit=None: _send_queue(report),
    "keepalive": lambda report, _culprit=None: _keepalive(report),
    "middleware": lambda report, _culprit=None: _middleware(report),
}
"""The rules a `Focus` may name; those that can name a culprit take it."""
