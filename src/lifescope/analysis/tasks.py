"""What the asyncio tasks of a window say: how many, in which state, parked where, awaiting whom.

Pure functions over :class:`~lifescope.samples.TasksSample` records — no I/O, no clock — so the
UI, the snapshot JSON and the tests all read the same numbers.

"Where a task is parked" is its innermost *application* frame (not the standard library, not
an installed package; :func:`lifescope.analysis.frames.innermost_app`) plus what that frame is
awaiting: ``"slow_auth_middleware → asyncio.sleep"``.  The application frame is the one a
developer can act on; the asyncio frame under it says whether the request is sleeping, waiting
for a lock, a queue, a socket or another task.  Thousands of parked requests collapse into a
handful of such points, which is the view a stack sampler cannot give (it sees only the one
running task).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lifescope.analysis.frames import innermost_app, kind, short_file
from lifescope.samples import Frame, StacksWindow, TaskAwait, TaskInfo, TasksSample

__all__ = [
    "STATES",
    "AwaitPoint",
    "TaskNode",
    "TasksSummary",
    "app_frame",
    "await_point",
    "counts_over_time",
    "latest",
    "summarize",
    "task_ages",
    "task_source",
    "task_tree",
]

STATES = ("running", "pending", "done", "cancelled")
MAX_TREE_NODES = 2000
"""A tree of 5,000 parked requests is not readable; the tree keeps the first 2,000 nodes."""
MAX_TREE_DEPTH = 100
"""Deeper await chains of tasks are cut (and keep the recursion far from Python's limit)."""


@dataclass(frozen=True, slots=True)
class AwaitPoint:
    """One place where tasks are parked, with how many are there."""

    frame: str
    """``"slow_auth_middleware → asyncio.sleep"``: application frame → what it awaits."""
    count: int
    file: str
    line: int
    """Where the application frame awaits (the first task seen there)."""


@dataclass(frozen=True, slots=True)
class TaskNode:
    """A task in the await tree; ``children`` are the tasks that it awaits."""

    address: int
    name: str
    state: str
    where: str
    """The task's await point (see :func:`await_point`)."""
    children: tuple[TaskNode, ...]


@dataclass(frozen=True, slots=True)
class TasksSummary:
    """The task view of one pass: the numbers behind the pane and the snapshot JSON."""

    t: float
    loop_tid: int | None
    count: int
    """Tasks read in the pass."""
    total: int
    """Tasks the target had; more than ``count`` when the pass was capped."""
    by_state: dict[str, int]
    top_awaiting: tuple[AwaitPoint, ...]
    read_ms: float
    errors: int

    @property
    def truncated(self) -> bool:
        return self.total > self.count

    def to_json(self) -> dict[str, object]:
        """``event_loops[].tasks`` of the snapshot: count, by_state, top_awaiting."""
        return {
            "count": self.total,
            "by_state": dict(self.by_state),
            "top_awaiting": [{"frame": p.frame, "count": p.count} for p in self.top_awaiting],
        }


def latest(samples: Iterable[object]) -> TasksSample | None:
    """The most recent TasksSample among any samples (by ``t``), or None."""
    best: TasksSample | None = None
    for sample in samples:
        if isinstance(sample, TasksSample) and (best is None or sample.t >= best.t):
            best = sample
    return best


def _frames(chain: Sequence[TaskAwait]) -> list[Frame]:
    """The chain as analysis frames, innermost first (the order `frames.py` expects)."""
    return [Frame(a.name, a.file, a.line) for a in reversed(chain)]


def app_frame(task: TaskInfo) -> Frame | None:
    """The task's innermost application frame (else library, else any) — for the layer engine,
    which places a parked request by it (an await in middleware is L3, in a DB driver L4)."""
    return innermost_app(_frames(task.chain)) if task.chain else None


def _callee(frame: TaskAwait) -> str:
    """How to name a frame the application awaits: ``asyncio.sleep``, ``asyncio.Event.wait``,
    ``aiohttp.client.ClientSession._request``; application frames by qualified name."""
    where = kind(frame.file)
    if where == "stdlib":
        package = short_file(frame.file).split("/")[0].removesuffix(".py")
        return f"{package}.{frame.name}"
    if where == "library":
        module = short_file(frame.file).removesuffix(".py").removesuffix("/__init__")
        return f"{module.replace('/', '.')}.{frame.name}"
    return frame.name


def _awaited_label(awaiting: str | None) -> str:
    if awaiting is None:
        return "?"
    return "task" if awaiting.startswith("task:") else awaiting


def await_point(task: TaskInfo) -> tuple[str, str, int]:
    """(label, file, line) of where a task is parked: its innermost application frame and what
    that frame awaits — the next frame in (``asyncio.sleep``) or, when it awaits an object
    directly, the task's ``awaiting`` (``future``, ``task``)."""
    if not task.chain:
        return (f"<{task.state}>", "", 0)
    frames = _frames(task.chain)
    app = innermost_app(frames)
    assert app is not None  # a non-empty chain always has a frame
    index = len(frames) - 1 - frames.index(app)  # position in the outermost-first chain
    if index + 1 < len(task.chain):
        what = _callee(task.chain[index + 1])
    else:
        what = _awaited_label(task.awaiting)
    if task.state == "running":
        what = "running"
    return (f"{app.name} → {what}", app.file, app.line)


def summarize(samples: Iterable[object], top: int = 10) -> TasksSummary | None:
    """Summary of the latest TasksSample among ``samples`` (None when there is none)."""
    sample = latest(samples)
    if sample is None:
        return None
    by_state: Counter[str] = Counter()
    points: Counter[str] = Counter()
    where: dict[str, tuple[str, int]] = {}
    for task in sample.tasks:
        by_state[task.state] += 1
        if task.state in ("done", "cancelled"):
            continue
        label, file, line = await_point(task)
        points[label] += 1
        where.setdefault(label, (file, line))
    ordered = sorted(points.items(), key=lambda item: (-item[1], item[0]))[: max(0, top)]
    return TasksSummary(
        t=sample.t,
        loop_tid=sample.loop_tid,
        count=len(sample.tasks),
        total=max(sample.total, len(sample.tasks)),
        by_state={state: by_state[state] for state in STATES if by_state[state]}
        | {s: n for s, n in by_state.items() if s not in STATES},
        top_awaiting=tuple(AwaitPoint(label, n, *where[label]) for label, n in ordered),
        read_ms=sample.read_ms,
        errors=sample.errors,
    )


def counts_over_time(samples: Iterable[object]) -> list[tuple[float, dict[str, int]]]:
    """(t, count by state) per TasksSample, oldest first: the pane's "tasks by state" graph.

    Counts are of the tasks read; a capped pass is scaled up to its ``total`` so a truncated
    view does not look like a drop in load.
    """
    out: list[tuple[float, dict[str, int]]] = []
    for sample in sorted((s for s in samples if isinstance(s, TasksSample)), key=lambda s: s.t):
        counts = Counter(task.state for task in sample.tasks)
        read = len(sample.tasks)
        if read and sample.total > read:
            scale = sample.total / read
            counts = Counter({k: round(v * scale) for k, v in counts.items()})
        out.append((sample.t, dict(counts)))
    return out


def task_tree(sample: TasksSample, max_nodes: int = MAX_TREE_NODES) -> tuple[TaskNode, ...]:
    """Who awaits whom: roots are tasks no other (read) task awaits; children are awaited.

    Bounded by ``max_nodes`` and cycle-safe (a torn read could in principle link two tasks to
    each other; each task appears at most once).
    """
    tasks = {t.address: t for t in sample.tasks}
    children: dict[int, list[int]] = {}
    for t in sample.tasks:
        if t.awaited_by is not None and t.awaited_by in tasks and t.awaited_by != t.address:
            children.setdefault(t.awaited_by, []).append(t.address)
    placed: set[int] = set()
    budget = [max(0, max_nodes)]

    def build(address: int, depth: int = 0) -> TaskNode | None:
        if address in placed or budget[0] <= 0:
            return None
        placed.add(address)
        budget[0] -= 1
        task = tasks[address]
        kids = []
        if depth < MAX_TREE_DEPTH:
            for child in children.get(address, []):
                node = build(child, depth + 1)
                if node is not None:
                    kids.append(node)
        return TaskNode(address, task.name, task.state, await_point(task)[0], tuple(kids))

    roots: list[TaskNode] = []
    for t in sample.tasks:
        if t.awaited_by is None or t.awaited_by not in tasks:
            node = build(t.address)
            if node is not None:
                roots.append(node)
    # Tasks only reachable through a cycle have no root: add them as roots, once each.
    for t in sample.tasks:
        if t.address not in placed:
            node = build(t.address)
            if node is not None:
                roots.append(node)
    return tuple(roots)


def task_ages(samples: Iterable[object]) -> dict[int, float]:
    """Seconds each task of the latest sample has been seen alive, by task address.

    Tasks carry no creation time the reader can see, so age is "observed for at least": the
    time since the first of an unbroken run of samples that contained the same task (same
    address *and* name — an address is reused once a task is freed).
    """
    ordered = sorted((s for s in samples if isinstance(s, TasksSample)), key=lambda s: s.t)
    if not ordered:
        return {}
    first_seen: dict[tuple[int, str], float] = {}
    for sample in ordered:
        present = {(t.address, t.name) for t in sample.tasks}
        first_seen = {key: first_seen.get(key, sample.t) for key in present}
    now = ordered[-1].t
    return {address: round(now - t0, 3) for (address, _), t0 in first_seen.items()}


def task_source(samples: Iterable[object]) -> str | None:
    """Where the window's coroutine view comes from: ``"memory"`` (the task reader),
    ``"stacks"`` (only the running coroutine, from thread stack samples — the reader was not
    available) or None (neither)."""
    source = None
    for sample in samples:
        if isinstance(sample, TasksSample):
            return "memory"
        if isinstance(sample, StacksWindow):
            source = "stacks"
    return source
