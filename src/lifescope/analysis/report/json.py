"""The `lifescope.snapshot/1` document, derived from the views.

Each object in it is a view's fields, walked generically: a nested view becomes an object, a
tuple of (key, value) pairs an object, any other tuple a list. A field added to a view reaches
the JSON without an edit here. What the contract needs otherwise is said once per view in
`SHAPES`: the fields it leaves out (the UI's extras, never part of the schema) and, where keys
were written in another order than the view's fields, that order — the document's fields are
added over time, never renamed or moved. The top level is the contract's own grouping (the
target, `event_loops`, `lifescope` for lifescope's own cost), written out below.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from functools import cache

from lifescope.analysis.processes import ProcessView
from lifescope.analysis.report.views import (
    ConnectionsView,
    ConnectionView,
    CostView,
    GilView,
    InFlightView,
    LoopView,
    ProbeView,
    Report,
    SocketRef,
    ThreadView,
)

SNAPSHOT_SCHEMA = "lifescope.snapshot/1"


@dataclass(frozen=True, slots=True)
class Shape:
    """How one view differs from a plain walk of its fields."""

    omit: frozenset[str] = frozenset()
    order: tuple[str, ...] = ()
    """Every key, in the contract's order; empty: the fields' own order."""
    null_if_empty: frozenset[str] = frozenset()
    """Pairs written as null rather than {} when there are none."""


SHAPES: dict[type, Shape] = {
    ProbeView: Shape(omit=frozenset({"name"})),  # the key its object is listed under
    ThreadView: Shape(omit=frozenset({"strip"})),
    SocketRef: Shape(omit=frozenset({"syscall"})),
    GilView: Shape(
        omit=frozenset({"histogram", "held_series"}), null_if_empty=frozenset({"hold_ms"})
    ),
    LoopView: Shape(
        order=(
            "tid",
            "pid",
            "busy_share",
            "running",
            "busiest",
            "executors",
            "tasks",
            "task_source",
            "stalls",
        )
    ),
    InFlightView: Shape(
        omit=frozenset({"tid"}),
        order=("layer", "since_ms", "evidence", "thread", "conn", "task", "pid"),
    ),
    ConnectionView: Shape(omit=frozenset({"kind", "fd", "idle_ms"})),
    ConnectionsView: Shape(
        omit=frozenset({"total", "by_phase"}),
        order=("listen", "by_state", "keepalive_idle", "top", "fds", "fd_limit"),
    ),
    CostView: Shape(omit=frozenset({"lean"})),
}


@cache
def _keys(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, written as an object of pairs) for each key of `cls`'s JSON, in order."""
    shape = SHAPES.get(cls, Shape())
    declared = {f.name: str(f.type) for f in fields(cls) if f.name not in shape.omit}
    names = shape.order or tuple(declared)
    if set(names) != set(declared):
        raise ValueError(f"{cls.__name__}: JSON order {names} is not its fields {tuple(declared)}")
    return tuple((name, declared[name].startswith("tuple[tuple[")) for name in names)


def view_json(view: object) -> dict[str, object]:
    """A view as a JSON object: its fields, as `SHAPES` says."""
    cls: type = type(view)
    shape = SHAPES.get(cls, Shape())
    document: dict[str, object] = {}
    for name, pairs in _keys(cls):
        value = getattr(view, name)
        if pairs:
            as_object = {key: _value(item) for key, item in value}
            document[name] = None if not as_object and name in shape.null_if_empty else as_object
        else:
            document[name] = _value(value)
    return document


def _value(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_json", None)  # a type outside the report with its own shape
        return own() if callable(own) else view_json(value)
    if isinstance(value, tuple):
        return [_value(item) for item in value]
    return value


def _single_process(report: Report) -> list[dict[str, object]]:
    """`target.processes` when the workers probe stands by (a single process): every entry
    has every field, as a pre-fork server's do. Threads, fds and established connections are
    counted by the other probes; CPU, memory and busy connections of the process are not
    measured then, so they are null (a sum of the live threads' CPU would miss exited ones)."""
    if not report.pid:
        return []
    empty = dict.fromkeys(
        name for name in (f.name for f in fields(ProcessView)) if name not in ("pid", "role")
    )
    main = {"pid": report.pid, "role": "main", **empty}
    if report.threads:
        main["threads"] = len(report.threads)
    main["fds"] = report.connections.fds
    if report.connections.by_state:
        main["connections"] = dict(report.connections.by_state).get("ESTABLISHED", 0)
    workers = [{"pid": pid, "role": "worker", **empty} for pid in report.workers]
    return [main, *workers]


def to_json(report: Report) -> dict[str, object]:
    """The `lifescope.snapshot/1` document. Fields are added over time, never renamed."""
    layers = report.layers
    return {
        "schema": SNAPSHOT_SCHEMA,
        "target": {
            "pid": report.pid,
            "python": report.python,
            "command": report.command,
            "processes": [view_json(p) for p in report.processes] or _single_process(report),
            "gone": report.gone,
        },
        "window_s": report.window_s,
        "probes": {p.name: view_json(p) for p in report.probes},
        "threads": [view_json(t) for t in report.threads],
        "gil": view_json(report.gil),
        "event_loops": [view_json(loop) for loop in report.loops],
        "model": report.model,
        "layers": dict(layers.shares) if layers else None,
        "packets": report.packets.summary.as_dict() if report.packets else None,
        "in_flight": [view_json(f) for f in (layers.in_flight if layers else ())],
        "connections": view_json(report.connections),
        "lifescope": view_json(report.cost),
    }
