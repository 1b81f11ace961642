"""The command line's edges a new user met in their first hour (issue 16.5).

Each was seen once as a traceback, a silent exit 0 or the wrong usage text; each is run here
as a user runs it, against the committed recording of the real demo or a real target.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON

RECORDING = str(Path(__file__).parent / "fixtures" / "demo-session.lsr")  # 6.0 s long


def lifescope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "lifescope", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("command", ["snapshot", "export"])
@pytest.mark.parametrize("at", ["30", "500", "-5", "0"])
def test_at_outside_the_recording_is_an_error_that_says_its_length(
    command: str, at: str, tmp_path: Path
) -> None:
    """`--at 30` on a 6 s recording exited 0 silently; `--at -5` showed a 0 s window."""
    args = ["--from", RECORDING] if command == "snapshot" else [RECORDING]
    if command == "export":
        args += ["-o", str(tmp_path / "out.json")]
    done = lifescope(command, *args, f"--at={at}")
    assert done.returncode == 2, done.stdout[:200]
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"lifescope: --at {float(at):g} is outside {RECORDING}, which is 6.0 s long "
        "— pick 0 < T ≤ 6.0"
    ]
    assert not (tmp_path / "out.json").exists()


def test_at_inside_the_recording_is_taken() -> None:
    done = lifescope("snapshot", "--from", RECORDING, "--at", "6", "--seconds", "2")
    assert done.returncode == 0, done.stderr
    assert "window 2.0s" in done.stdout


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_a_reader_that_leaves_early_ends_it_quietly(json_flag: list[str]) -> None:
    """`snapshot … | head` ended in a BrokenPipeError traceback.

    The pipe's read end is closed before lifescope writes its first byte, so its first write
    meets EPIPE every time, as it would behind a `head` that has read enough."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [PYTHON, "-m", "lifescope", "snapshot", "--from", RECORDING, *json_flag],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("command", ["snapshot", "attach", "record", "export"])
def test_an_unknown_flag_gets_the_subcommands_usage(command: str, tmp_path: Path) -> None:
    done = lifescope(command, "--no-such-flag", "1", "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: lifescope {command} ")
    assert f"lifescope {command}: error: unrecognized arguments: --no-such-flag" in done.stderr


@pytest.mark.parametrize("command", ["snapshot", "attach", "record"])
def test_a_bad_pids_remedy_names_the_command_used(command: str, tmp_path: Path) -> None:
    """`snapshot abc` suggested `lifescope attach $(pgrep…)`."""
    output = ["-o", str(tmp_path / "out.lsr")] if command == "record" else []
    done = lifescope(command, "abc", *output)
    assert done.returncode == 2
    assert f"e.g. `lifescope {command} $(pgrep -f myserver)`" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_record_says_what_it_wrote(python_target, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`record` printed nothing when it succeeded: the user could not tell it had worked."""
    target = python_target("import time\nprint('READY', flush=True)\ntime.sleep(60)\n")
    out = tmp_path / "one.lsr"
    done = lifescope("record", str(target.pid), "-o", str(out), "--seconds", "1")
    assert done.returncode == 0, done.stderr
    said = done.stderr.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("lifescope: recorded "), said
    assert f"of pid {target.pid} to {out}" in said[0]
    assert out.stat().st_size > 0
