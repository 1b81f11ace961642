"""The README's description of `lifescope.snapshot/1` says what the JSON has: the thread states
it lists are every state a thread can be in, and every `target.processes` entry has the fields
it lists — on a single process too (there only `pid` and `role` were written)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lifescope.analysis import report
from lifescope.analysis.concurrency import STATES
from lifescope.recording import load
from lifescope.replay import Player

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FIXTURE = ROOT / "tests" / "fixtures" / "demo-session.lsr"


def snapshot() -> dict[str, object]:
    player = Player(load(str(FIXTURE)))
    player.seek(player.end)
    document = report.to_json(report.build(player.timeline.window()))
    return json.loads(json.dumps(document))


def test_the_readme_lists_every_thread_state() -> None:
    sentence = README[README.index("Thread states:") :].split(". What")[0]
    listed = set(re.findall(r"`([a-z-]+)`", sentence))
    assert listed == {*STATES, "running"}, listed
    seen = {t["state"] for t in snapshot()["threads"]}  # type: ignore[index, union-attr]
    assert seen <= listed, seen


def test_every_process_entry_has_the_fields_the_readme_lists() -> None:
    block = README[README.index('"processes": [{') :]
    block = block[: block.index("}]")]
    listed = set(re.findall(r'"([a-z_]+)"', block)) - {"processes", "main", "worker"}
    processes = snapshot()["target"]["processes"]  # type: ignore[index]
    assert len(processes) == 1 and processes[0]["role"] == "main"  # a single-process server
    assert set(processes[0]) == listed, processes
    assert processes[0]["threads"] and processes[0]["fds"] and processes[0]["connections"]
