"""Judge one measurement against its truth: each check returns (right?, what was measured).

The "what was measured" text is the evidence a reader needs without re-running anything —
the shares, the in-flight items with their evidence, the stalls, the processes — and it is
what `docs/FIDELITY.md` prints and what a failing test says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.fidelity.runner import Measurement, Runner
from tests.fidelity.scenarios import KNOWN_FLAKY, KNOWN_WRONG, LAYERS, Scenario, Truth

Verdict = tuple[bool, str]
EDGE_S = 0.05
"""A stall this close to either end of the window may be cut by it: not judged."""
MIN_STALLS = 3


def shares(m: Measurement) -> dict[str, float]:
    return dict(m.snapshot.get("layers") or {})


def largest(m: Measurement) -> str | None:
    """The largest of L0–L6, or None when every one of them is zero."""
    known = {layer: shares(m).get(layer, 0.0) for layer in LAYERS}
    best = max(LAYERS, key=lambda layer: known[layer])
    return best if known[best] > 0 else None


def requests(m: Measurement) -> list[dict[str, Any]]:
    """In-flight items that are requests: every one but an idle keep-alive (L6)."""
    return [f for f in m.snapshot.get("in_flight", []) if f.get("layer") != "L6"]


def shares_text(m: Measurement) -> str:
    parts = [f"{k} {v:.2f}" for k, v in shares(m).items() if v >= 0.005]
    return " ".join(parts) or "all 0"


def in_flight_text(m: Measurement, most: int = 3) -> str:
    counts = Counter(f["evidence"] for f in requests(m))
    if not counts:
        return "none in flight"
    items = [f"{n}× {evidence}" for evidence, n in counts.most_common(most)]
    if len(counts) > most:
        items.append(f"+{len(counts) - most} more kinds")
    return "; ".join(items)


def check_layer(truth: Truth, m: Measurement) -> Verdict:
    got = largest(m)
    return got == truth.layer, f"largest {got or 'none'} ({shares_text(m)})"


def check_frame(truth: Truth, m: Measurement) -> Verdict:
    assert truth.frame is not None
    named = [f for f in requests(m) if f["layer"] == truth.layer and truth.frame in f["evidence"]]
    return bool(named), f"{len(named)} of {len(requests(m))} name it: {in_flight_text(m, 2)}"


def check_in_flight(truth: Truth, m: Measurement) -> Verdict:
    assert truth.in_flight is not None
    items = requests(m)
    ok = truth.fewest_in_flight <= len(items) <= truth.in_flight
    text = f"{len(items)} in flight: {in_flight_text(m)}"
    return ok, text if ok else f"{text} [{who_text(items)}]"


def who_text(items: list[dict[str, Any]]) -> str:
    """Whose each item is (thread, task, connection, time in its layer): a wrong count says
    which two items were one request, or which one was no request, the next time it fails."""
    parts = []
    for f in items:
        who = " ".join(f"{k} {f[k]}" for k in ("thread", "task", "conn") if f.get(k) is not None)
        since = f.get("since_ms")
        parts.append(f"{f['layer']} {who or '?'}" + ("" if since is None else f" {since:.0f} ms"))
    return "; ".join(parts)


def check_model(truth: Truth, m: Measurement) -> Verdict:
    got = m.snapshot.get("model")
    return got == truth.model, f"model {got}"


def _complete_stalls(m: Measurement) -> tuple[list[float], list[float]]:
    window = float(m.snapshot.get("window_s") or 0.0)
    judged, edge = [], []
    for loop in m.snapshot.get("event_loops", []):
        for stall in loop.get("stalls", []):
            start, ms = float(stall["start_s"]), float(stall["duration_ms"])
            cut = (
                stall.get("ongoing")
                or stall.get("cut_start")  # lifescope says so itself since the stall began
                or start < EDGE_S
                or start + ms / 1000 > window - EDGE_S
            )
            (edge if cut else judged).append(ms)
    return judged, edge


def check_stalls(truth: Truth, m: Measurement) -> Verdict:
    assert truth.stall_ms is not None
    low, high = truth.stall_ms
    judged, edge = _complete_stalls(m)
    loops = len(m.snapshot.get("event_loops", []))
    text = (
        f"{loops} loop(s); stalls ms: {', '.join(f'{ms:.0f}' for ms in judged) or 'none'}"
        + (f" (+{len(edge)} cut by the window)" if edge else "")
    )
    ok = len(judged) >= MIN_STALLS and all(low <= ms <= high for ms in judged)
    return ok, text


def processes(m: Measurement) -> list[dict[str, Any]]:
    return list(m.snapshot.get("target", {}).get("processes", []))


def processes_text(m: Measurement) -> str:
    roles = Counter(p.get("role") for p in processes(m))
    listed = ", ".join(f"{n} {role}" for role, n in sorted(roles.items()))
    return f"listed: {listed}; truth pids: workers {m.workers}, helpers {m.helpers}"


def check_workers(truth: Truth, m: Measurement) -> Verdict:
    listed = sorted(p["pid"] for p in processes(m) if p.get("role") == "worker")
    ok = len(listed) == truth.workers and set(listed) == set(m.workers)
    return ok, processes_text(m)


def check_pids(truth: Truth, m: Measurement) -> Verdict:
    items = requests(m)
    if not items:
        return False, "nothing in flight to attribute to a worker"
    pids = [f.get("pid") for f in items]
    if all(pid is None for pid in pids):
        return False, f"in_flight[].pid not emitted ({len(items)} items)"
    ok = all(pid in m.workers for pid in pids)
    return ok, f"pids {sorted(Counter(pids).items(), key=str)}; workers {m.workers}"


def target_overflows(m: Measurement) -> int | None:
    """What lifescope shows as drops on the target's own listener(s)."""
    ours = [
        lv.get("overflows")
        for lv in m.snapshot.get("connections", {}).get("listen", [])
        if str(lv.get("local", "")).endswith(f":{m.port}")
    ]
    known = [n for n in ours if n is not None]
    return sum(known) if known else None


def check_drops(truth: Truth, m: Measurement) -> Verdict:
    shown = target_overflows(m)
    text = (
        f"lifescope: {shown} on the target's listener; kernel per-socket: target "
        f"{m.own_drops}, neighbour {m.neighbour_drops}"
    )
    if truth.drops == "none":
        if not m.neighbour_drops or m.own_drops != 0:
            raise RuntimeError(f"scenario did not produce its truth: {text}")
        return shown == 0, text
    if not m.own_drops:
        raise RuntimeError(f"scenario did not produce its truth: {text}")
    return bool(shown), text


CHECKS: dict[str, Callable[[Truth, Measurement], Verdict]] = {
    "layer": check_layer,
    "in_flight": check_in_flight,
    "frame": check_frame,
    "stalls": check_stalls,
    "workers": check_workers,
    "pids": check_pids,
    "drops": check_drops,
    "model": check_model,
}


def judge(truth: Truth, check: str, m: Measurement) -> Verdict:
    return CHECKS[check](truth, m)


def expected(scenario: Scenario, check: str) -> bool | None:
    """What the table expects today: right (True), wrong (False) or either (None, flaky)."""
    key = (scenario.id, check)
    if key in KNOWN_FLAKY:
        return None
    return key not in KNOWN_WRONG


def verdict(runner: Runner, scenario: Scenario, check: str) -> tuple[bool, str, bool]:
    """(right?, evidence, re-measured?) for one truth, as the tests and the doc decide it.

    lifescope's answers move a little from one window to the next (a request between two
    samples, a layer share near a tie), so a verdict that contradicts the table is measured
    once more, and the second measurement decides: a plain test fails only when lifescope is
    wrong twice running, a strict xfail turns into XPASS only when it is right twice running.
    """
    truth = scenario.truth
    ok, evidence = judge(truth, check, runner.measure(scenario))
    want = expected(scenario, check)
    if want is None or ok == want:
        return ok, evidence, False
    ok, again = judge(truth, check, runner.measure(scenario, attempt=1))
    return ok, f"{evidence}; measured again: {again}", True
