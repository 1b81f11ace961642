"""The header's two lines, decided per width: what is watched, then what watching costs.

Line one: the state (live, paused, gone, link down, replay) and the target — never dropped;
then the title (the demo's URL, a recording's path, the target's command line), the
"lifescope" badge, the Python version and the uptime. When the line is too narrow, the
uptime goes first, then the version; then the title is shortened with "…" (a command line
first of all, at its end; a URL or path at its start, so the port or file name stays).
Line two: lifescope's own cost — its CPU, a load-shedding note (kept at any width: the rates
on screen are lowered), errors, memory, then each probe's achieved rate for as many probes
as fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rich.text import Text

from lifescope.analysis import report as analysis
from lifescope.analysis.wording import percent
from lifescope.samples import HEALTHY, Hello
from lifescope.ui.fit import Part, fit_line, part
from lifescope.ui.source import State


def render(
    width: int,
    state: State,
    hello: Hello | None,
    report: analysis.Report | None,
    *,
    title: str = "",
    host: str | None = None,
    waiting_for: str = "",
    dropped: int = 0,
) -> Text:
    text = fit_line(_first(state, hello, report, title, host, waiting_for), width)
    if report is not None:
        text.append("\n")
        text.append_text(fit_line(_cost(report, dropped), width))
    return text


def _first(
    state: State,
    hello: Hello | None,
    report: analysis.Report | None,
    title: str,
    host: str | None,
    waiting_for: str,
) -> list[Part]:
    parts = [
        Part(Text(" lifescope ", style="bold reverse"), priority=3, sep=""),
        Part(Text(f" {state.text}", style=state.style), sep=""),
    ]
    if state.note:
        # Whole or not at all: a reconnection's countdown and a damaged recording's offset
        # are numbers.
        parts.append(Part(Text(state.note, style="yellow"), priority=1, sep=""))
    if hello is None:
        if waiting_for and not state.text.startswith("✖"):
            parts.append(Part(Text(f"  attaching to {waiting_for}…"), sep=""))
        return parts
    where = f"pid {hello.pid}" + (f" on {host}" if host else "")
    parts.append(Part(Text(f"  {where}", style="bold"), sep=""))
    if hello.python:
        parts.append(part(f"Py {hello.python}", "cyan", priority=5))
    if report is not None and report.uptime_s is not None:
        parts.append(part(f"up {_duration(report.uptime_s)}", priority=6))
    if title:  # ours (the demo's URL, a recording's path): its end says the most
        parts.append(Part(Text(title, style="dim"), priority=4, elide="start"))
    else:  # the target's command line: its start (the program) says the most
        parts.append(Part(Text(hello.command, style="dim"), priority=7, elide="end"))
    return parts


def _cost(report: analysis.Report, dropped: int) -> list[Part]:
    cost = report.cost
    parts = [part(f" cost: cpu {percent(cost.cpu_share, 1)} of a core", "dim", sep="")]
    if cost.rate_scale < 1:
        parts.append(part(analysis.shedding_note(cost, short=True), "bold yellow"))
    parts.append(part(f"errors {cost.errors}", "bold red" if cost.errors else "dim"))
    if dropped:
        parts.append(part(f"ui dropped {dropped}", "yellow", priority=1))
    workers = [p for p in report.processes if p.role == "worker"]
    if workers:
        cpu = sum(p.cpu_share or 0.0 for p in workers)
        conns = sum(p.connections for p in workers)
        parts.append(part(f"{len(workers)} workers: cpu {percent(cpu, 1)}, {conns} conns (w)",
                          "cyan", priority=1))  # fmt: skip
    parts.append(part(f"rss {_mib(cost.rss_bytes)}", "dim", priority=2))
    rates = _rates(report.probes)
    if rates:  # the first rate after a " · ", the others after a space, as one list
        rates[0] = replace(rates[0], sep=None)
    parts += rates
    return parts


def _rates(probes: Sequence[analysis.ProbeView]) -> list[Part]:
    """One part per probe, most telling first; each dropped whole when the line is full."""
    parts = []
    for rank, probe in enumerate(probes):
        if probe.status == "standby":
            continue  # healthy and not needed now: its 0/s would read as broken
        word = rate(probe.rate_hz) if probe.status in HEALTHY else probe.status
        style = "dim" if probe.status in HEALTHY else "bold red"
        parts.append(part(f"{probe.name} {word}", style, priority=10 + rank, sep=" "))
    return parts


def rate(hz: float) -> str:
    """An achieved rate as read: whole numbers from 10/s, one decimal below (the sockets
    probe at 1.4/s and the tasks probe at 0.8/s read "0/s" when rounded)."""
    return f"{hz:.0f}/s" if hz >= 10 or hz == 0 else f"{hz:.1f}/s"


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
