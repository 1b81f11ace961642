"""Run the fidelity matrix on real servers and write docs/FIDELITY.md.

    python tools/fidelity.py                 # the whole matrix (~5 min on 2 cores)
    python tools/fidelity.py --only uvicorn  # scenarios whose id contains "uvicorn"
    python tools/fidelity.py --json-dir /tmp/snaps   # also keep every snapshot

The same table (tests/fidelity/scenarios.py), runner and checks as tests/fidelity/test_matrix.py,
so the doc says what the tests assert. Each verdict is compared with the table's KNOWN_WRONG:
a check that is right but still listed there is flagged, because its strict xfail now fails.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fidelity import checks  # noqa: E402
from tests.fidelity.runner import Measurement, Runner, ServerFailed  # noqa: E402
from tests.fidelity.scenarios import KNOWN_FLAKY, KNOWN_WRONG, SCENARIOS, Scenario  # noqa: E402

PACKAGES = ("gunicorn", "uvicorn", "hypercorn", "granian", "uwsgi", "flask", "werkzeug",
            "django", "fastapi", "starlette", "aiohttp", "tornado", "gevent", "py-spy")  # fmt: skip


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "—"


def _machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), "
        f"CPython {platform.python_version()}"
    )


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out if len(out) <= 80 else out[:79] + "…"


def verdict(scenario: Scenario, check: str, ok: bool) -> str:
    key = (scenario.id, check)
    if key in KNOWN_FLAKY:
        return "right (known flaky)" if ok else "wrong (known flaky)"
    known = key in KNOWN_WRONG
    if ok:
        return "**right — remove from KNOWN_WRONG**" if known else "right"
    return "wrong (known)" if known else "**WRONG (new)**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


Judged = dict[tuple[str, str], tuple[bool, str, bool]]


def judge_all(runner: Runner, scenario: Scenario) -> Judged:
    """Every truth of one scenario, right after its measurement (a re-measurement, when a
    verdict contradicts the table, then finds its server still up)."""
    judged: Judged = {}
    for check in scenario.truth.checks():
        try:
            judged[(scenario.id, check)] = checks.verdict(runner, scenario, check)
        except ServerFailed as exc:
            judged[(scenario.id, check)] = (False, f"re-measurement failed: {exc}", True)
        except RuntimeError as exc:
            judged[(scenario.id, check)] = (False, f"scenario broken: {exc}", False)
    return judged


def render(
    results: dict[str, Measurement | str],
    judged: Judged,
    seconds: float,
    took: float,
    only: str | None,
) -> str:
    rows, details = [], []
    right = total = 0
    for scenario in SCENARIOS:
        if scenario.id not in results:
            continue
        result = results[scenario.id]
        truth = scenario.truth
        if isinstance(result, str):
            rows.append(
                f"| {scenario.id} | {_cell(scenario.load.describe())} | {truth.describe()} "
                f"| — | not run: {_cell(result.splitlines()[0])} |"
            )
            continue
        verdicts, lines = [], []
        for check in truth.checks():
            ok, text, again = judged[(scenario.id, check)]
            total += 1
            right += ok
            verdicts.append(f"{check}: {verdict(scenario, check, ok)}" + (" ²" if again else ""))
            lines.append(f"  - {check}: {'✓' if ok else '✗'} {text}")
        rows.append(
            f"| {scenario.id} | {_cell(scenario.load.describe())} | {_cell(truth.describe())} "
            f"| {_cell(checks.shares_text(result))} | {_cell('; '.join(verdicts))} |"
        )
        threads = [
            f"{t['name']} [{t['role']}] {t['top_frame'] or '—'}"
            for t in result.snapshot.get("threads", [])[:6]
        ]
        details.append(
            f"- **{scenario.id}** (pid {result.target_pid}, model "
            f"{result.snapshot.get('model') or '—'}, collected {result.collect_s:.1f} s)\n"
            + "\n".join(lines)
            + f"\n  - in flight: {_cell(checks.in_flight_text(result, most=4))}"
            + f"\n  - threads: {_cell('; '.join(threads)) or '—'}"
        )
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    scope = f" (only scenarios matching `{only}`)" if only else ""
    head = [
        "# Fidelity matrix: does lifescope tell the truth on real servers?",
        "",
        f"Generated {now} by `python tools/fidelity.py`{scope}, in {took:.0f} s.",
        "",
        f"- **Machine**: {_machine()}",
        f"- **lifescope**: {_commit()}",
        f"- **Servers**: {versions}",
        f"- **Method**: each server is started on loopback (its own process group, stopped by "
        f"pid with every child), a bounded client load is started and warmed up (every client "
        f"served once), then lifescope collects for {seconds:g} s exactly as `lifescope snapshot "
        f"PID --json` does (every default probe) on the master, the worker or the single "
        f"process, and each truth is judged on that `lifescope.snapshot/1` document. The "
        f"truths are built into the apps (`tests/fidelity/apps/`): a handler or middleware "
        f"that waits 300 ms, a slow sqlite query, a 60,000-item JSON document, a 16 MiB body "
        f"read 16 KiB per 50 ms, idle keep-alive clients, a listener that never accepts.",
        f"- **Checks**: *layer* — the largest of L0–L6 is the truth's; *in_flight* — requests "
        f"in flight at the window's end (every item but L6), N or one fewer from three clients "
        f"up; *stalls* — every event-loop stall not cut by the window lasts "
        f"250–400 ms, at least {checks.MIN_STALLS}; *workers* — the master lists exactly the "
        f"worker pids (helpers are not workers); *pids* — each in-flight request names its "
        f"worker; *drops* — the target's listener shows its own drops (kernel per-socket "
        f"count, as `ss -ltm` shows it) and not a neighbour's; *model* — the snapshot names "
        f"the server's concurrency model.",
        "",
        f"**{right} of {total} checks right.** Verdict *wrong (known)* is a strict xfail in "
        f"`tests/fidelity/test_matrix.py`; *WRONG (new)* is a failing test; *right — remove "
        f"from KNOWN_WRONG* is an XPASS (strict) until its entry goes; *known flaky* is a "
        f"non-strict xfail (right in some runs only, today). ² marks a verdict that "
        f"contradicted the table and was measured once more: the second measurement decides "
        f"(so a plain test fails only when wrong twice running, a strict xfail passes only "
        f"when right twice running).",
        "",
        "| scenario | load | truth | measured shares | verdict |",
        "|---|---|---|---|---|",
    ]
    return "\n".join([*head, *rows, "", "## What was measured, per scenario", "", *details, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="collection per scenario")
    parser.add_argument("--only", default=None, help="run scenarios whose id contains this")
    parser.add_argument("--output", default=str(ROOT / "docs" / "FIDELITY.md"))
    parser.add_argument("--json-dir", default=None, help="also write each snapshot here")
    args = parser.parse_args()
    # SIGTERM (and SIGINT, which a shell's background job ignores) unwinds through `finally`,
    # so the running server and its workers are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = [s for s in SCENARIOS if args.only is None or args.only in s.id]
    runner = Runner(seconds=args.seconds)
    results: dict[str, Measurement | str] = {}
    judged: Judged = {}
    started = time.monotonic()
    try:
        for index, scenario in enumerate(chosen, 1):
            print(f"[{index}/{len(chosen)}] {scenario.id}", file=sys.stderr, flush=True)
            try:
                results[scenario.id] = runner.measure(scenario)
            except ServerFailed as exc:
                results[scenario.id] = str(exc)
                print(f"  not run: {exc}", file=sys.stderr)
                continue
            if args.json_dir:
                out = Path(args.json_dir)
                out.mkdir(parents=True, exist_ok=True)
                name = scenario.id.replace("/", "__").replace("@", "_at_")
                record = json.dumps(results[scenario.id].__dict__, indent=1)
                (out / f"{name}.json").write_text(record)
            judged.update(judge_all(runner, scenario))
    finally:
        runner.close()
    text = render(results, judged, args.seconds, time.monotonic() - started, args.only)
    Path(args.output).write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
