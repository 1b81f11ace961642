"""The pure parts of `ssh://`: the target spec, the command lines, lean rates, and a link gap
in the timeline and in a recording (old readers skip the new kind)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess

import pytest

from lifescope import stream
from lifescope.probes.budget import LEAN_SCALE, SHED_SCALE, Budget
from lifescope.recording import load
from lifescope.remote import spec, transport
from lifescope.samples import CollectorCost, Hello, LinkGap
from lifescope.timeline import Timeline


@pytest.mark.parametrize(
    ("text", "host", "user", "port", "pid"),
    [
        ("ssh://web1/1234", "web1", None, None, 1234),
        ("ssh://deploy@web1:2222/99", "web1", "deploy", 2222, 99),
        ("ssh://me@[::1]:22/7", "::1", "me", 22, 7),
        ("ssh://a%40b@host/5", "host", "a@b", None, 5),
    ],
)
def test_spec_parses(text: str, host: str, user: str | None, port: int | None, pid: int) -> None:
    target = spec.parse(text)
    assert (target.host, target.user, target.port, target.pid) == (host, user, port, pid)
    assert spec.parse(str(target)) == target


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ssh://web1", "names no process id"),
        ("ssh://web1/abc", "names no process id"),
        ("ssh://web1/0", "names no process id"),
        ("ssh://u:pw@web1/1", "password"),
        ("ssh://web1:99999/1", "bad port"),
        ("http://web1/1", "not ssh://"),
        ("ssh://web1/1?x=1", "query"),
    ],
)
def test_spec_refuses_with_the_fix(text: str, says: str) -> None:
    with pytest.raises(spec.SpecError, match=says):
        spec.parse(text)


def test_ssh_command_line_never_prompts_and_detects_a_dead_link() -> None:
    target = spec.parse("ssh://deploy@web1:2222/1")
    argv = transport.ssh_argv(target, "CMD", lean=True)
    joined = " ".join(argv)
    for option in ("BatchMode=yes", "ServerAliveInterval=5", "Compression=yes", "-T", "-p 2222"):
        assert option in joined
    assert argv[-2:] == ["deploy@web1", "CMD"]
    assert "Compression" not in " ".join(transport.ssh_argv(target, "CMD"))


def test_remote_command_is_one_posix_shell_line() -> None:
    """The line survives the login shell: run by sh, the script picks the newest Python 3.8+
    on the PATH and hands it its arguments (``exec`` shown as ``echo`` here)."""
    line = transport.remote_command(5, ["0.1.0", "1", "--probes", "a,b"], sudo=False)
    shown = line.replace("exec ", "echo ", 1)
    done = subprocess.run(
        ["/bin/sh", "-c", shown], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    first = done.stdout.splitlines()[0]
    assert first.startswith("python3") and first.endswith(" 5 0.1.0 1 --probes a,b")
    assert transport.remote_command(5, [], sudo=True).startswith("sudo -n -- /bin/sh -c ")


def test_lean_budget_stays_at_a_quarter_and_never_sheds_below() -> None:
    idle = [0]

    def read() -> tuple[int, int]:
        idle[0] += 1000
        return idle[0], idle[0]  # the machine entirely idle

    budget = Budget(pid=None, read=read, ceiling=LEAN_SCALE)
    assert budget.scale == LEAN_SCALE
    for second in range(10):
        budget.update(float(second))
    assert budget.scale == LEAN_SCALE == SHED_SCALE


def _hello(t: float) -> Hello:
    return Hello(stream.SCHEMA, 1, 1, "x", "3.11.2", "/usr/bin/python3", t, 1e9 + t, 2, 100)


def test_timeline_marks_the_gap_and_keeps_what_it_had() -> None:
    timeline = Timeline()
    timeline.add(_hello(10.0))
    timeline.add(CollectorCost(11.0, 0.1, 1, (), ()))
    timeline.add(LinkGap(11.0, 11.0, 1e9, "ssh exit 255", ongoing=True))
    assert timeline.link_down is not None and len(timeline.buffer(CollectorCost)) == 1
    timeline.add(_hello(20.0))
    timeline.add(LinkGap(20.0, 11.0, 1e9, "ssh exit 255"))
    timeline.add(CollectorCost(21.0, 0.2, 1, (), ()))
    assert timeline.link_down is None
    window = timeline.window()
    assert [(g.start, g.t) for g in window.gaps] == [(11.0, 20.0)]
    assert len(window.costs) == 2


def test_a_recorded_gap_replays_and_an_older_reader_skips_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gap = LinkGap(20.0, 11.0, 1e9, "ssh exit 255")
    body = stream.header_line() + stream.encode(_hello(10.0)) + stream.encode(gap)
    path = tmp_path / "gap.lsr"
    path.write_bytes(gzip.compress(body))
    assert load(str(path)).samples[-1] == gap
    # An older lifescope's header lacks LinkGap: its reader skips the record.
    header = json.loads(body.split(b"\n", 1)[0])
    del header["kinds"]["LinkGap"]
    old = json.dumps(header).encode() + b"\n" + stream.encode(_hello(10.0)) + stream.encode(gap)
    assert [type(s).__name__ for s in stream.read(io.BytesIO(old))] == ["Hello"]
