"""Where each request is in its life: L0 handshake · L1 accept queue · L2 read & parse ·
L3 middleware · L4 handler and its I/O · L5 write response · L6 keep-alive.

A request is a connection first, then code:

* the kernel's evidence, per client connection (`connections.py` phases): a handshake in
  flight is L0, a connection nobody accepted yet L1, request bytes nobody read yet L2,
  unsent response bytes L5, an idle keep-alive L6;
* the code serving it: a thread or a parked asyncio task whose stack passes through a
  server's or framework's *boundary* (`[[boundaries]]` in `lifescope/rules/*.toml`: gunicorn's
  `handle_request`, Django's `_get_response`, Starlette's router, AnyIO's worker thread
  running a sync endpoint). Being inside one is what makes code a request — a busy thread
  that serves no connection (a GIL hog, a metrics flusher, the ASGI lifespan task) is not
  one — and the boundaries passed say which layer the code is in: the application's code
  inside Django's middleware chain is L3, inside `_get_response` L4. Rules then say what a
  frame does wherever it is (a DB driver, `json.dumps`), innermost frame first, and a wait
  (`time.sleep`, a lock) takes the layer of the code that waits — the frame that calls
  `time.sleep` is itself that code.
* the join: a thread blocked reading a client connection that is idle is that connection's
  keep-alive (L6), counted once, by the connection.

Every decision keeps its evidence, so the UI can say *why* a request is in L4. What cannot
be attributed (a request whose code is not visible) is "unknown", not a guess.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lifescope import syscalls
from lifescope.analysis import concurrency, lifetimes
from lifescope.analysis import connections as conns
from lifescope.analysis.frames import kind as frame_kind
from lifescope.analysis.frames import label
from lifescope.rules import INHERIT, LAYERS, NONE, Rule
from lifescope.samples import (
    Frame,
    Socket,
    SocketsSample,
    StacksWindow,
    TaskInfo,
    TasksSample,
    ThreadsSample,
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
_IO_KINDS = frozenset({"db", "cache", "http client", "dns"})
"""I/O a rule recognises (L4 by default). Like a sleep, it is a wait: called from
middleware it is middleware's time (L3), from the handler the handler's."""
POOL = "worker thread"
"""The kind of a boundary that is a worker pool's run loop (AnyIO's): its thread is a
request only while it runs something the request handed it."""
_KIND_OF = {"L2": "parse", "L3": "middleware", "L4": "handler", "L5": "write"}


@dataclass(frozen=True, slots=True)
class Decision:
    layer: str
    kind: str
    frame: str | None
    rule: str | None
    wait: str | None = None
    """A wait the code is in (sleep, lock, queue), inherited into `layer`."""
    request: bool = True
    """Inside a request boundary. False: code that serves a request only if the kernel ties
    it to a client connection (a thread blocked on one)."""

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


_Region = tuple[str, str, Rule] | None
"""(layer of the server's frames, layer of application code, the boundary) in force."""
_EXCLUDED: _Region = ("", "", Rule(NONE, "", ""))
"""Inside a `none` rule: this code serves no request, whatever the kernel says."""


def _regions(frames: Sequence[Frame], rules: Sequence[Rule]) -> list[_Region]:
    """The region each frame is in, walking from the outermost frame in. A `none` rule
    (the lifespan task, a task waiting for a worker thread) ends the request region until a
    boundary further in opens a new one."""
    regions: list[_Region] = [None] * len(frames)
    current: _Region = None
    for index in range(len(frames) - 1, -1, -1):
        frame = frames[index]
        for rule in rules:
            if (rule.boundary or rule.layer == NONE) and _matches(rule, frame, False):
                current = (
                    _EXCLUDED if rule.layer == NONE else (rule.layer, rule.app or rule.layer, rule)
                )
                break
        regions[index] = current
    return regions


def classify(
    frames: Sequence[Frame],
    rules: Sequence[Rule],
    middleware: frozenset[tuple[str, str]] = frozenset(),
) -> Decision | None:
    """The layer of one stack (innermost first), or None when it is idle machinery or serves
    no request by rule.

    `middleware`: application functions seen calling into a framework (a WSGI or ASGI
    wrapper): L3 wherever they are.
    """
    regions = _regions(frames, rules)
    if regions and regions[0] is _EXCLUDED:
        return None
    wait: str | None = None
    for index, frame in enumerate(frames):
        region = regions[index] if regions[index] is not _EXCLUDED else None
        decided: Decision | None = None
        for rule in rules:
            if rule.boundary or rule.layer == NONE or not _matches(rule, frame, index == 0):
                continue
            if rule.layer == INHERIT:
                wait = wait or rule.kind
                if rule.code is None:
                    break  # a library's wait function: whoever called it decides
                continue  # this frame's own line waits: the frame itself decides, below
            layer = rule.layer
            if rule.kind in _IO_KINDS and region is not None and region[1] == "L3":
                layer = "L3"  # I/O waited on by middleware is middleware's time
            decided = Decision(
                layer, rule.kind, label(frame), rule.source, wait, region is not None
            )
            break
        else:
            decided = _by_position(frame, region, middleware, wait)
        if decided is not None:
            return decided
        if region is None and any(m in frame.file for m in _LOOP_MACHINERY):
            # The event loop, a thread's bootstrap, an executor's worker loop outside any
            # request: whatever is outer to these (the app's `main()`) runs the server.
            return None
    return None


def _by_position(
    frame: Frame, region: _Region, middleware: frozenset[tuple[str, str]], wait: str | None
) -> Decision | None:
    """A frame no rule recognised: application code takes the layer of where it runs; a
    server's or framework's own frame decides only if it is a boundary itself."""
    if frame_kind(frame.file) == "app":
        if (frame.name, frame.file) in middleware:
            return Decision("L3", "middleware", label(frame), None, wait, region is not None)
        if region is None:
            return Decision("L4", "handler", label(frame), None, wait, request=False)
        return Decision(
            region[1], _KIND_OF.get(region[1], "request"), label(frame), region[2].source, wait
        )
    if region is not None and _matches(region[2], frame, False):
        if region[2].kind == POOL:
            return None  # a pool's thread with nothing inside its boundary: waiting for work
        layer = region[0]
        return Decision(
            layer, region[2].kind or _KIND_OF.get(layer, ""), label(frame), region[2].source, wait
        )
    return None


def learn_middleware(
    stacks: Sequence[StacksWindow], tasks: Sequence[TasksSample], rules: Sequence[Rule]
) -> frozenset[tuple[str, str]]:
    """Application functions seen outside a framework's entry that call into it — WSGI and
    ASGI wrappers (`app = Wrapper(app)`) — from any stack or task of the window. When such a
    wrapper waits before calling in, its stack alone cannot tell it from a handler; the
    other samples of the window can."""
    entries = [r for r in rules if r.boundary and r.framework]
    found: set[tuple[str, str]] = set()

    def scan(frames: Sequence[Frame]) -> None:
        for frame in frames:
            # A function that calls the next handler of its chain (the collector read its
            # source: `probes/pyspy.SourceLines.calls_next`) is middleware, whatever its name.
            if frame.calls_next:
                found.add((frame.name, frame.file))
        for index, frame in enumerate(frames):
            if any(_matches(r, frame, False) for r in entries):
                for outer in frames[index + 1 :]:
                    if frame_kind(outer.file) == "app":
                        found.add((outer.name, outer.file))
                    elif any(r.boundary and _matches(r, outer, False) for r in rules):
                        break  # past the server's own boundary: not a wrapper any more
                return

    seen: set[tuple[int, tuple[int, ...]]] = set()
    for window in stacks:
        for span in window.spans:
            key = (id(window), span.stack)
            if key not in seen:
                seen.add(key)
                scan([window.frames[i] for i in span.stack])
    for sample in tasks[-2:]:
        for task in sample.tasks:
            scan(_task_frames(task))
    return frozenset(found)


def _task_frames(task: TaskInfo) -> list[Frame]:
    return [Frame(a.name, a.file, a.line, a.code, a.calls_next) for a in reversed(task.chain)]


@dataclass(frozen=True, slots=True)
class InFlight:
    layer: str
    since_s: float | None
    """How long it has been in this layer, as far as the window shows."""
    evidence: str
    thread: int | None
    task: str | None
    conn: str | None
    pid: int | None = None
    """The worker serving it (a pre-fork server); None: the attached process."""


@dataclass(frozen=True, slots=True)
class LayerStats:
    shares: dict[str, float]
    """L0..L6 (and unknown) → share of in-flight request time in the window."""
    now: dict[str, int]
    in_flight: tuple[InFlight, ...]
    measured: str
    """What the code-side evidence came from: "stacks", "stacks+tasks" or "none", and what
    it cannot see ("gevent: parked greenlets are not visible")."""


class _Joins:
    """Which client connection each thread is blocked on, sample by sample (the kernel's
    join of code to connection), for the two places one request would be counted twice:

    * a thread blocked reading a connection that is idle — a thread-per-connection server's
      keep-alive: the connection is counted (L6), not the thread whose stack says "reading";
    * a thread blocked on a connection the kernel already places (response bytes unsent: L5,
      request bytes unread: L2): the thread is counted, with what its stack says, not the
      connection again."""

    def __init__(self, threads: Sequence[ThreadsSample], sockets: Sequence[SocketsSample]) -> None:
        self._times: dict[int, list[float]] = {}
        self._idle: dict[int, list[bool]] = {}
        self._blocked_times: list[float] = []
        self._blocked: list[frozenset[int]] = []
        if not sockets:
            return
        socket_times = [s.t for s in sockets]
        for sample in threads:
            nearest = sockets[max(0, bisect_right(socket_times, sample.t) - 1)]
            ports = conns.listen_ports(nearest.sockets)
            by_fd = {(s.pid, s.fd): s for s in nearest.sockets if s.fd is not None}
            blocked = set()
            for thread in sample.threads:
                sock = by_fd.get((thread.pid, thread.arg0)) if thread.arg0 is not None else None
                client = (
                    sock is not None
                    and syscalls.name(thread.syscall) in syscalls.FD_FIRST
                    and conns.port(sock.local) in ports
                )
                idle = (
                    client
                    and syscalls.name(thread.syscall) in syscalls.SOCKET_READ
                    and conns.phase(sock, "client") == "idle"  # type: ignore[arg-type]
                )
                if client and not idle:
                    blocked.add(sock.inode)  # type: ignore[union-attr]
                self._times.setdefault(thread.tid, []).append(sample.t)
                self._idle.setdefault(thread.tid, []).append(idle)
            self._blocked_times.append(sample.t)
            self._blocked.append(frozenset(blocked))

    def blocked_at(self, t: float) -> frozenset[int]:
        """Inodes of client connections a thread was blocked on (not idle) at `t`."""
        index = bisect_right(self._blocked_times, t) - 1
        if index < 0 or t - self._blocked_times[index] > 0.25:
            return frozenset()
        return self._blocked[index]

    def at(self, tid: int, t: float) -> bool:
        times = self._times.get(tid)
        if not times:
            return False
        index = bisect_right(times, t) - 1
        if index < 0 or t - times[index] > 0.25:
            return False
        return self._idle[tid][index]


def _thread_segments(
    stacks: Sequence[StacksWindow],
    rules: Sequence[Rule],
    start: float,
    end: float,
    middleware: frozenset[tuple[str, str]],
    joined: set[int],
    idle: _Joins,
) -> dict[int, list[tuple[float, float, Decision]]]:
    """Per thread, the spans of request work with their layer: stacks inside a request
    boundary, and a thread's own code while the kernel ties it to a client connection."""
    segments: dict[int, list[tuple[float, float, Decision]]] = {}
    cache: dict[tuple[int, tuple[int, ...]], Decision | None] = {}
    for window in stacks:
        for span in window.spans:
            lo, hi = max(span.start, start), min(span.end, end)
            if hi <= lo:
                continue
            key = (id(window), span.stack)
            if key not in cache:
                cache[key] = classify([window.frames[i] for i in span.stack], rules, middleware)
            decision = cache[key]
            if decision is None or not (decision.request or span.tid in joined):
                continue
            if decision.layer == "L2" and idle.at(span.tid, (lo + hi) / 2):
                continue  # waiting for the next request on a keep-alive connection: L6, by it
            segments.setdefault(span.tid, []).append((lo, hi, decision))
    return segments


def _task_decision(
    task: TaskInfo, rules: Sequence[Rule], middleware: frozenset[tuple[str, str]]
) -> Decision | None:
    """A parked task's layer, if it serves a request (it is inside a request boundary: the
    server's main task waiting for shutdown is not one, nor is the lifespan task)."""
    decision = classify(_task_frames(task), rules, middleware)
    if decision is None or not decision.request:
        return None
    if task.awaiting and not decision.wait:
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


_SUMMARIES: dict[int, tuple[SocketsSample, Counter[str], int, tuple[tuple[str, int], ...]]] = {}
_SUMMARIES_KEPT = 32
_SUMMARIES_LOCK = threading.Lock()
"""Reports may be built on two threads at once (the UI's analysis thread and a seek; two
metrics scrapes)."""


def _socket_summary(
    sample: SocketsSample,
) -> tuple[Counter[str], int, tuple[tuple[str, int], ...]]:
    """Client connections per kernel layer in one sample, and those mid-request with no
    kernel evidence. Samples are immutable and a 2 Hz refresh over a 10 s window sees each
    one ~20 times, so the summary is kept (keyed by identity; the entry holds the sample, so
    the id cannot be reused while it is there). At 10k connections one is ~10 ms."""
    hit = _SUMMARIES.get(id(sample))
    if hit is not None and hit[0] is sample:
        return hit[1], hit[2], hit[3]
    ports = conns.listen_ports(sample.sockets)
    port = conns.port
    phase = conns.phase
    layers: Counter[str] = Counter()
    requests = 0
    served: list[tuple[str, int]] = []
    """(layer, inode) of sockets a thread may be serving: counted once, by the thread."""
    for sock in sample.sockets:
        if sock.state == "LISTEN" or port(sock.local) not in ports:
            continue  # listeners and outbound connections: no kernel-side request layer
        ph = phase(sock, "client")
        layer = _client_layer(sock, ph)
        if layer is not None:
            layers[layer] += 1
            if layer in ("L2", "L5"):
                served.append((layer, sock.inode))
        elif ph == "request":
            requests += 1
    with _SUMMARIES_LOCK:
        while len(_SUMMARIES) >= _SUMMARIES_KEPT:
            del _SUMMARIES[next(iter(_SUMMARIES))]  # oldest first: dicts keep insertion order
        _SUMMARIES[id(sample)] = (sample, layers, requests, tuple(served))
    return layers, requests, tuple(served)


def analyse(
    stacks: Sequence[StacksWindow],
    socket_samples: Sequence[SocketsSample],
    socket_stats: conns.ConnectionsStats | None,
    task_samples: Sequence[TasksSample],
    rules: Sequence[Rule],
    start: float,
    end: float,
    thread_samples: Sequence[ThreadsSample] = (),
) -> LayerStats:
    """Layers of every in-flight request now, and the share of request time per layer.

    Time is weighted honestly per source: thread stacks by span duration; connections and
    parked tasks by the interval each of their samples stands for (sockets at 2 Hz, tasks at
    1-4 Hz). A request whose connection is mid-request but whose code we cannot see (no task
    reader, nothing on a thread) is counted as "unknown" for that interval.
    """
    middleware = learn_middleware(stacks, task_samples, rules)
    # Shares are over the time the code is visible: stack windows arrive ~1 s late, and a
    # connection seen mid-request after the last one would read as "unknown" for no reason.
    start, end = _code_covered(stacks, task_samples, start, end)
    joined = set(socket_stats.threads) if socket_stats is not None else set()
    idle = _Joins(thread_samples, socket_samples)
    segments = _thread_segments(stacks, rules, start, end, middleware, joined, idle)
    thread_pids = {t.tid: t.pid for sample in thread_samples[-3:] for t in sample.threads if t.pid}
    for window in stacks[-2:]:
        thread_pids.update(window.pids)
    time_in: defaultdict[str, float] = defaultdict(float)
    """Seconds of request time per layer."""
    in_flight: list[InFlight] = []
    task_times = [sample.t for sample in task_samples]
    moment = min(end, lifetimes.sampled_to(stacks))
    asked_at, alive, tasks_now = lifetimes.asked(thread_samples, task_samples, stacks, moment)
    sampled = lifetimes.sampled_at(stacks, asked_at)
    for tid, parts in segments.items():
        for lo, hi, decision in parts:
            time_in[decision.layer] += hi - lo
        if alive is not None and tid not in alive and tid not in sampled:
            continue  # gone: py-spy keeps a thread's last stack to the end of its recording
        state = lifetimes.state_at(parts, asked_at, tid in sampled, lambda d: d.layer)
        if state is not None:
            last, since, last_hi = state
            in_flight.append(
                InFlight(
                    last.layer, round(last_hi - since, 3), last.evidence, tid, None, None,
                    thread_pids.get(tid),
                )
            )  # fmt: skip

    def threads_busy_at(t: float) -> int:
        """Threads serving a request at `t`. The padding bridges the ~0.1 s between two py-spy
        windows, where no thread has a span and every request would read as unknown."""
        return sum(
            1
            for parts in segments.values()
            if any(lo - 0.15 <= t <= hi + 0.15 for lo, hi, _ in parts)
        )

    task_layers: list[tuple[float, list[tuple[TaskInfo, Decision]]]] = []
    for sample in task_samples:
        decided = []
        for task in sample.tasks:
            if task.state != "pending":
                continue  # the running one is the loop thread's stack, counted above
            found = _task_decision(task, rules, middleware)
            if found is not None:
                decided.append((task, found))
        task_layers.append((sample.t, decided))
    for i, (t, decided) in enumerate(task_layers):
        nxt = task_layers[i + 1][0] if i + 1 < len(task_layers) else end
        dt = max(0.0, min(nxt, end) - max(t, start))
        for _, decision in decided:
            time_in[decision.layer] += dt
    parked_now = task_layers[tasks_now][1] if tasks_now >= 0 else []
    for task, decision in parked_now:
        in_flight.append(
            InFlight(decision.layer, None, decision.evidence, None, task.name, None, task.pid)
        )

    def parked_at(t: float) -> int:
        index = bisect_right(task_times, t) - 1
        return len(task_layers[index][1]) if index >= 0 else 0

    # At most MAX_SOCKET_SAMPLES samples, each standing for the time until the next one kept:
    # at 10k connections every sample of a 10 s window was ~150k rows per refresh.
    stride = max(1, -(-len(socket_samples) // MAX_SOCKET_SAMPLES))
    socket_samples = socket_samples[::-1][::stride][::-1]
    for i, sockets in enumerate(socket_samples):
        nxt = socket_samples[i + 1].t if i + 1 < len(socket_samples) else end
        dt = max(0.0, min(nxt, end) - max(sockets.t, start))
        if dt <= 0:
            continue
        layer_counts, requests, served = _socket_summary(sockets)
        middle = max(sockets.t, start) + dt / 2  # the code evidence for the time it stands for
        blocked = idle.blocked_at(middle)
        if blocked:
            layer_counts = layer_counts.copy()
            for layer, inode in served:
                if inode in blocked:
                    layer_counts[layer] -= 1  # its thread is counted, with its own stack
        for layer, count in layer_counts.items():
            time_in[layer] += count * dt
        unknown = requests - threads_busy_at(middle) - parked_at(middle)
        if unknown > 0:
            time_in[UNKNOWN] += unknown * dt

    threads_now = {f.thread for f in in_flight if f.thread is not None}
    in_flight += [
        f
        for f in _kernel_in_flight(socket_stats, sum(1 for f in in_flight if f.conn is None))
        if f.thread is None or f.thread not in threads_now  # that thread is this request
    ]
    now = Counter(f.layer for f in in_flight)
    if socket_stats is not None:  # idle keep-alives are on the ladder, but not in flight
        now["L6"] = sum(1 for c in socket_stats.connections if _kernel_layer(c) == "L6")
    total = sum(time_in.values())
    shares = {
        layer: round(time_in[layer] / total, 4) if total else 0.0 for layer in (*LAYERS, UNKNOWN)
    }
    measured = "stacks+tasks" if task_samples else ("stacks" if stacks else "none")
    if concurrency.gevent_hub(stacks):
        measured += " (gevent: only the running greenlet is visible; parked ones are unknown)"
    return LayerStats(shares, {k: n for k, n in now.items() if n}, tuple(in_flight), measured)


def _code_covered(
    stacks: Sequence[StacksWindow], tasks: Sequence[TasksSample], start: float, end: float
) -> tuple[float, float]:
    """The part of [start, end] that stack windows (or, without them, task samples) cover."""
    if stacks:
        start, end = max(start, stacks[0].start), min(end, max(w.t for w in stacks))
    if tasks:
        start, end = max(start, tasks[0].t), min(end, tasks[-1].t + 1.0)
    return start, end


def _kernel_in_flight(stats: conns.ConnectionsStats | None, code_units: int) -> Iterable[InFlight]:
    """What the connections alone say is in flight now, and the requests received whose code
    no thread or task accounts for ("unknown")."""
    if stats is None:
        return []
    found: list[InFlight] = []
    request_phase = 0
    for c in stats.connections:
        layer = _kernel_layer(c)
        if layer == "L6":
            continue  # a keep-alive connection waiting for its next request: none in flight
        if layer is not None:
            what = "unread request" if layer == "L2" else c.phase
            found.append(
                InFlight(
                    layer, None, f"{layer} {what}: {c.socket.peer}", c.thread, None, c.socket.peer,
                    c.socket.pid,
                )
            )  # fmt: skip
        elif c.kind == "client" and c.phase == "request":
            request_phase += 1
    found += [
        InFlight(UNKNOWN, None, "request received, response not finished; its code is not visible",
                 None, None, None)
        for _ in range(max(0, request_phase - code_units))
    ]  # fmt: skip
    return found
