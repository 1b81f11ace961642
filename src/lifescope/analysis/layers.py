"""Where each request is in its life: L0 handshake · L1 accept queue · L2 read & parse ·
L3 middleware · L4 handler and its I/O · L5 write response · L6 keep-alive.

Two kinds of evidence, joined per window:

* the kernel's, per connection (`connections.py` phases): a handshake in flight is L0, a
  connection nobody accepted yet L1, unsent response bytes L5, an idle keep-alive L6;
* the code's, per thread or task: its stack, matched innermost frame first against rules
  (`lifescope/rules/*.toml`) — a parser frame is L2, a middleware frame L3, a DB driver L4,
  `json.dumps` L5 — falling back to "the application's own code" as L4 handler. Waits
  (`asyncio.sleep`, `time.sleep`, locks) take the layer of the code that waits, so an
  `await` inside a middleware is L3.

Every decision keeps its evidence, so the UI can say *why* a request is in L4. What cannot
be attributed (an asyncio request whose task we cannot read) is "unknown", not a guess.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lifescope.analysis import connections as conns
from lifescope.analysis.frames import kind as frame_kind
from lifescope.analysis.frames import label
from lifescope.rules import LAYERS, Rule
from lifescope.samples import (
    Frame,
    Socket,
    SocketsSample,
    StacksWindow,
    TaskInfo,
    TasksSample,
)

UNKNOWN = "unknown"
MAX_SOCKET_SAMPLES = 6
_LOOP_MACHINERY = (
    "/asyncio/",
    "/selectors.py",
    "/threading.py",
    "/concurrent/futures/",
    "/socketserver.py",
    "<frozen",
    "/runpy.py",
)
_PHASE_LAYER = {"handshake": "L0", "accept-queue": "L1", "idle": "L6"}


@dataclass(frozen=True, slots=True)
class Decision:
    layer: str
    kind: str
    frame: str | None
    rule: str | None
    wait: str | None = None
    """A wait the code is in (sleep, lock, queue), inherited into `layer`."""

    @property
    def evidence(self) -> str:
        text = f"{self.layer} {self.kind}"
        if self.frame:
            text += f": {self.frame}"
        if self.wait:
            text += f" ({self.wait})"
        return text


def _matches(rule: Rule, frame: Frame, innermost: bool) -> bool:
    if rule.file is not None and rule.file not in frame.file:
        return False
    if rule.function is not None and not rule.function.search(frame.name):
        return False
    return rule.code is None or (
        innermost and frame.code is not None and rule.code.search(frame.code) is not None
    )


def classify(frames: Sequence[Frame], rules: Sequence[Rule]) -> Decision | None:
    """The layer of one stack (innermost first), or None when it serves no request."""
    wait: str | None = None
    for index, frame in enumerate(frames):
        for rule in rules:
            if not _matches(rule, frame, index == 0):
                continue
            if rule.layer == "inherit":
                wait = wait or rule.kind
                break
            return Decision(rule.layer, rule.kind, label(frame), rule.source, wait)
        else:
            if any(m in frame.file for m in _LOOP_MACHINERY):
                # The event loop, a thread's bootstrap, an executor's worker loop: whatever is
                # outer to these (the app's `main()`) runs the server, not a request.
                return None
            if frame_kind(frame.file) == "app":
                return Decision("L4", "handler", label(frame), None, wait)
    return None


@dataclass(frozen=True, slots=True)
class InFlight:
    layer: str
    since_s: float | None
    """How long it has been in this layer, as far as the window shows."""
    evidence: str
    thread: int | None
    task: str | None
    conn: str | None


@dataclass(frozen=True, slots=True)
class LayerStats:
    shares: dict[str, float]
    """L0..L6 (and unknown) → share of in-flight request time in the window."""
    now: dict[str, int]
    in_flight: tuple[InFlight, ...]
    measured: str
    """What the code-side evidence came from: "stacks", "stacks+tasks" or "none"."""


def _thread_segments(
    stacks: Sequence[StacksWindow],
    rules: Sequence[Rule],
    start: float,
    end: float,
    roles: dict[int, str],
) -> dict[int, list[tuple[float, float, Decision]]]:
    """Per thread, the spans of request work with their layer.

    A thread that is neither an event loop, an executor nor a known request thread (a
    background worker, a metrics thread, the demo's GIL hog) counts only where a rule
    recognises its code — its own functions alone do not make it a request."""
    segments: dict[int, list[tuple[float, float, Decision]]] = {}
    cache: dict[tuple[int, tuple[int, ...]], Decision | None] = {}
    for window in stacks:
        for span in window.spans:
            lo, hi = max(span.start, start), min(span.end, end)
            if hi <= lo:
                continue
            key = (id(window), span.stack)
            if key not in cache:
                cache[key] = classify([window.frames[i] for i in span.stack], rules)
            decision = cache[key]
            if decision is not None and (
                roles.get(span.tid, "other") != "other" or decision.rule is not None
            ):
                segments.setdefault(span.tid, []).append((lo, hi, decision))
    return segments


def _task_decision(task: TaskInfo, rules: Sequence[Rule]) -> Decision | None:
    """A parked task's layer. As for threads, the application's own frames alone do not make
    a task a request (the server's main task waiting for shutdown is not one): a framework
    or a stream must be in its chain, or a rule must have recognised its code."""
    frames = [Frame(a.name, a.file, a.line) for a in reversed(task.chain)]
    decision = classify(frames, rules)
    if (
        decision is not None
        and decision.rule is None
        and not any(
            frame_kind(f.file) == "library" or "asyncio/streams.py" in f.file for f in frames
        )
    ):
        return None
    if decision is not None and task.awaiting and not decision.wait:
        return Decision(decision.layer, decision.kind, decision.frame, decision.rule, task.awaiting)
    return decision


def _kernel_layer(c: conns.Connection) -> str | None:
    """The layer the kernel alone can prove: bytes of a request nobody has read yet are L2
    (the server has not got round to reading it — on a blocked loop, every other request
    sits here), unacknowledged response bytes L5, and the phases of `_PHASE_LAYER`."""
    if c.kind != "client":
        return None
    return _client_layer(c.socket, c.phase)


def _client_layer(sock: Socket, phase: str) -> str | None:
    if phase == "response" and sock.send_q > 0:
        return "L5"
    if phase == "request" and sock.recv_q > 0:
        return "L2"
    return _PHASE_LAYER.get(phase)


_SUMMARIES: dict[int, tuple[SocketsSample, Counter[str], int]] = {}
_SUMMARIES_KEPT = 32
_SUMMARIES_LOCK = threading.Lock()
"""Reports may be built on two threads at once (the UI's analysis thread and a seek; two
metrics scrapes)."""


def _socket_summary(sample: SocketsSample) -> tuple[Counter[str], int]:
    """Client connections per kernel layer in one sample, and those mid-request with no
    kernel evidence. Samples are immutable and a 2 Hz refresh over a 10 s window sees each
    one ~20 times, so the summary is kept (keyed by identity; the entry holds the sample, so
    the id cannot be reused while it is there). At 10k connections one is ~10 ms."""
    hit = _SUMMARIES.get(id(sample))
    if hit is not None and hit[0] is sample:
        return hit[1], hit[2]
    ports = conns.listen_ports(sample.sockets)
    port = conns.port
    phase = conns.phase
    layers: Counter[str] = Counter()
    requests = 0
    for sock in sample.sockets:
        if sock.state == "LISTEN" or port(sock.local) not in ports:
            continue  # listeners and outbound connections: no kernel-side request layer
        ph = phase(sock, "client")
        layer = _client_layer(sock, ph)
        if layer is not None:
            layers[layer] += 1
        elif ph == "request":
            requests += 1
    with _SUMMARIES_LOCK:
        while len(_SUMMARIES) >= _SUMMARIES_KEPT:
            del _SUMMARIES[next(iter(_SUMMARIES))]  # oldest first: dicts keep insertion order
        _SUMMARIES[id(sample)] = (sample, layers, requests)
    return layers, requests


def analyse(
    stacks: Sequence[StacksWindow],
    socket_samples: Sequence[SocketsSample],
    socket_stats: conns.ConnectionsStats | None,
    task_samples: Sequence[TasksSample],
    rules: Sequence[Rule],
    start: float,
    end: float,
    roles: dict[int, str] | None = None,
) -> LayerStats:
    """Layers of every in-flight request now, and the share of request time per layer.

    Time is weighted honestly per source: thread stacks by span duration; connections and
    parked tasks by the interval each of their samples stands for (sockets at 2 Hz, tasks at
    1-4 Hz). A request whose connection is mid-request but whose code we cannot see (no task
    reader, nothing on a thread) is counted as "unknown" for that interval.
    """
    segments = _thread_segments(stacks, rules, start, end, roles or {})
    time_in: Counter[str] = Counter()
    in_flight: list[InFlight] = []
    for tid, parts in segments.items():
        for lo, hi, decision in parts:
            time_in[decision.layer] += hi - lo
        last_lo, last_hi, last = parts[-1]
        if end - last_hi < 1.5:  # still current (stack windows arrive ~1 s late)
            since = last_lo
            for lo, hi, decision in reversed(parts[:-1]):
                if decision.layer != last.layer or since - hi > 0.05:
                    break
                since = lo
            in_flight.append(
                InFlight(last.layer, round(last_hi - since, 3), last.evidence, tid, None, None)
            )

    def threads_busy_at(t: float) -> int:
        return sum(1 for parts in segments.values() if any(lo <= t <= hi for lo, hi, _ in parts))

    task_layers: list[tuple[float, list[tuple[TaskInfo, Decision]]]] = []
    for sample in task_samples:
        decided = []
        for task in sample.tasks:
            if task.state == "running":
                continue  # the running one is the loop thread's stack, counted above
            decision = _task_decision(task, rules)
            if decision is not None:
                decided.append((task, decision))
        task_layers.append((sample.t, decided))
    for i, (t, decided) in enumerate(task_layers):
        nxt = task_layers[i + 1][0] if i + 1 < len(task_layers) else end
        dt = max(0.0, min(nxt, end) - max(t, start))
        for _, decision in decided:
            time_in[decision.layer] += dt
    parked_now = task_layers[-1][1] if task_layers else []
    for task, decision in parked_now:
        in_flight.append(InFlight(decision.layer, None, decision.evidence, None, task.name, None))

    def parked_at(t: float) -> int:
        best = None
        for when, decided in task_layers:
            if when <= t:
                best = decided
        return len(best) if best is not None else 0

    # At most MAX_SOCKET_SAMPLES samples, each standing for the time until the next one kept:
    # at 10k connections every sample of a 10 s window was ~150k rows per refresh.
    stride = max(1, -(-len(socket_samples) // MAX_SOCKET_SAMPLES))
    socket_samples = socket_samples[::-1][::stride][::-1]
    for i, sample in enumerate(socket_samples):
        nxt = socket_samples[i + 1].t if i + 1 < len(socket_samples) else end
        dt = max(0.0, min(nxt, end) - max(sample.t, start))
        if dt <= 0:
            continue
        layer_counts, requests = _socket_summary(sample)
        for layer, count in layer_counts.items():
            time_in[layer] += count * dt
        unknown = requests - threads_busy_at(sample.t) - parked_at(sample.t)
        if unknown > 0:
            time_in[UNKNOWN] += unknown * dt

    request_phase = 0
    if socket_stats is not None:
        for c in socket_stats.connections:
            layer = _kernel_layer(c)
            if layer is not None:
                in_flight.append(
                    InFlight(
                        layer,
                        None,
                        f"{layer} {'unread request' if layer == 'L2' else c.phase}: "
                        f"{c.socket.peer}",
                        c.thread,
                        None,
                        c.socket.peer,
                    )
                )
            elif c.kind == "client" and c.phase == "request":
                request_phase += 1
    code_units = sum(1 for f in in_flight if f.conn is None)
    for _ in range(max(0, request_phase - code_units)):
        in_flight.append(
            InFlight(
                UNKNOWN,
                None,
                "request received, response not finished; its code is not visible",
                None,
                None,
                None,
            )
        )
    total = sum(time_in.values())
    shares = {
        layer: round(time_in[layer] / total, 4) if total else 0.0 for layer in (*LAYERS, UNKNOWN)
    }
    measured = "stacks+tasks" if task_samples else ("stacks" if stacks else "none")
    return LayerStats(shares, dict(Counter(f.layer for f in in_flight)), tuple(in_flight), measured)
