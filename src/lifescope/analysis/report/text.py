"""The report as plain lines for a terminal or a log (`lifescope snapshot` without --json)."""

from __future__ import annotations

from lifescope.analysis.report.views import CostView, Report
from lifescope.analysis.wording import GIL_WORDS, percent


def shedding_note(cost: CostView, short: bool = False) -> str:
    """What the header says while the probes shed load; the same words in text and UI.
    `short`: for a narrow header, which must still say it (the rates are lowered)."""
    if short:
        why = "lean mode" if cost.lean else "machine saturated"
        return f"sampling at ×{cost.rate_scale:g} ({why})"
    if cost.lean:
        return f"lean mode (thin link): sampling at ×{cost.rate_scale:g}"
    facts = []
    if cost.machine_idle is not None:
        facts.append(f"{percent(cost.machine_idle)} idle")
    if cost.target_cpu_wait is not None:
        facts.append(f"target waits for CPU {percent(cost.target_cpu_wait)}")
    why = f" ({', '.join(facts)})" if facts else ""
    return (
        f"machine saturated{why}: sampling at ×{cost.rate_scale:g} to spare the target"
        " (--full-rate overrides)"
    )


TEXT_STALLS = 5
"""Stalls listed per loop in the text report (the latest); the count says how many there were."""
TEXT_IN_FLIGHT = 10
"""In-flight requests listed in the text report; the JSON has them all."""


def to_text(report: Report) -> str:
    """The same report for a terminal or a log: plain lines, no colour."""
    lines = [
        f"pid {report.pid}  Python {report.python}  {report.command}",
        f"window {report.window_s:.1f}s  lifescope cpu {percent(report.cost.cpu_share)} of a core"
        + (f"  {shedding_note(report.cost)}" if report.cost.rate_scale < 1 else "")
        + (f"  TARGET GONE: {report.gone}" if report.gone else ""),
        "",
        "probes:",
    ]
    for p in report.probes:
        why = f"  ({'; '.join(filter(None, (p.reason, p.remedy)))})" if p.reason else ""
        lines.append(f"  {p.name:<8} {p.status:<11} {p.rate_hz:7.1f}/s{why}")
    gil_view = report.gil
    if gil_view.no_gil:
        lines += [
            "",
            f"{gil_view.no_gil}: {gil_view.runnable_mean} threads runnable at once on average "
            f"(max {gil_view.runnable_max})",
        ]
    else:
        lines += [
            "",
            f"GIL held {percent(gil_view.held_share)} (source {gil_view.source}, "
            f"{gil_view.samples} samples)",
        ]
    if gil_view.switches_per_s is not None:
        hold = dict(gil_view.hold_ms)
        lines.append(
            f"  {gil_view.switches_per_s:.0f} switches/s, waiters {gil_view.waiters_mean}, hold ms "
            + " ".join(f"{k} {hold.get(k)}" for k in ("p50", "p90", "p99", "max"))
        )
    lines.append(f"model: {report.model or '—'}")
    for loop in report.loops:
        shown = loop.stalls[-TEXT_STALLS:]
        more = f" (the last {len(shown)}:)" if len(shown) < len(loop.stalls) else ""
        lines.append(
            f"event loop {loop.tid}: busy {percent(loop.busy_share)}, "
            f"{len(loop.stalls)} stalls ≥100 ms{more}"
        )
        for stall in shown:
            gil_word = GIL_WORDS[stall.gil_held]
            at_least = "≥" if stall.ongoing or stall.cut_start else ""  # cut by the window
            lines.append(
                f"  +{stall.start_s:.1f}s {at_least}{stall.duration_ms:.0f} ms "
                f"{stall.frame or '?'} ({gil_word})"
            )
    if report.processes:
        lines += ["", "processes (pre-fork server):"]
        lines.append(
            f"  {'pid':>7} {'role':<7} {'cpu':>5} {'threads':>7} {'conns':>6} {'busy':>5} "
            f"{'fds':>6} {'rss MiB':>8}"
        )
        for proc in report.processes:
            lines.append(
                f"  {proc.pid:>7} {proc.role:<7} {percent(proc.cpu_share):>5} {proc.threads:>7} "
                f"{proc.connections:>6} {proc.busy:>5} {proc.fds:>6} "
                f"{proc.rss_bytes / 2**20:>8.1f}"
            )
    lines += ["", "threads:"]
    # Columns as wide as their longest value: a fixed 14 cut clock_nanosleep to clock_nanoslee.
    name_w = max((len(t.name) for t in report.threads), default=4)
    state_w = max((len(t.state) for t in report.threads), default=5)
    call_w = max((len(t.syscall or "—") for t in report.threads), default=7)
    name_w, state_w, call_w = max(name_w, 4), max(state_w, 5), max(call_w, 7)
    lines.append(
        f"  {'tid':>7} {'name':<{name_w}} {'state':<{state_w}} {'syscall':<{call_w}} {'cpu':>5} "
        f"{'active':>6} {'gil':>5}  frame"
    )
    for t in report.threads:
        lines.append(
            f"  {t.tid:>7} {t.name:<{name_w}} {t.state:<{state_w}} {t.syscall or '—':<{call_w}} "
            f"{percent(t.cpu_share):>5} {percent(t.active_share):>6} {percent(t.gil_share):>5}  "
            f"{t.top_frame or '—'}"
        )
    conn = report.connections
    lines += ["", f"fds {conn.fds} of {conn.fd_limit}", "listening:"]
    for lv in conn.listen:
        lines.append(f"  {lv.local:<24} accept queue {lv.accept_queue}/{lv.backlog}")
    states = ", ".join(f"{state} {n}" for state, n in conn.by_state) or "none"
    lines.append(f"connections: {states}")
    if report.layers is not None:
        shares = "  ".join(f"{layer} {percent(share)}" for layer, share in report.layers.shares)
        lines += ["", f"layers (share of request time): {shares}"]
        flights = report.layers.in_flight
        if len(flights) > TEXT_IN_FLIGHT:
            lines.append(f"in flight: {len(flights)} (the first {TEXT_IN_FLIGHT}:)")
        elif flights:
            lines.append(f"in flight: {len(flights)}")
        for flight in flights[:TEXT_IN_FLIGHT]:
            lines.append(f"  {flight.layer:<7} {flight.evidence}")
    return "\n".join(lines)
