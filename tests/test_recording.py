"""Record, replay and snapshot --from, on real recordings of a real server."""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from lifescope.analysis import report
from lifescope.demo.children import DemoServer, LoadGen
from lifescope.options import CollectorOptions
from lifescope.recording import RecordingError, load
from lifescope.replay import Player
from lifescope.session import CollectorProcess
from lifescope.timeline import Timeline
from lifescope.ui.app import LifescopeApp
from lifescope.ui.panes import Pane
from tests.conftest import PYTHON


def lifescope(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([PYTHON, "-m", "lifescope", *args], capture_output=True, timeout=120)


@pytest.fixture
def recording(loaded_demo: tuple[DemoServer, LoadGen], tmp_path: Path) -> Path:
    server, _ = loaded_demo
    path = tmp_path / "session.lsr"
    done = lifescope("record", str(server.pid), "-o", str(path), "--seconds", "4")
    assert done.returncode == 0, done.stderr
    return path


def test_recording_is_private_compressed_and_complete(recording: Path) -> None:
    assert stat.S_IMODE(os.stat(recording).st_mode) == 0o600
    assert recording.read_bytes()[:2] == b"\x1f\x8b"
    rec = load(str(recording))
    assert rec.problem is None
    assert 3.5 <= rec.end - rec.start <= 5.0
    kinds = {type(s).__name__ for s in rec.samples}
    assert {"Hello", "ThreadsSample", "StacksWindow", "GilRuns", "SocketsSample"} <= kinds


def test_snapshot_from_recording(recording: Path) -> None:
    done = lifescope("snapshot", "--from", str(recording), "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert snap["gil"]["source"] == "memory"
    assert any(t["name"] == "gil-hog" for t in snap["threads"])
    windowed = json.loads(
        lifescope(
            "snapshot", "--from", str(recording), "--at", "3", "--seconds", "1", "--json"
        ).stdout
    )
    assert 0.9 <= windowed["window_s"] <= 1.01


def test_replay_matches_the_live_session(
    loaded_demo: tuple[DemoServer, LoadGen], tmp_path: Path
) -> None:
    """What was shown live for a window is what the recording shows for the same window."""
    server, _ = loaded_demo
    path = tmp_path / "live.lsr"
    collector = CollectorProcess(server.pid, CollectorOptions(seconds=4, record=str(path)))
    live = Timeline()
    for sample in collector.samples():
        live.add(sample)
    collector.stop()
    end = live.last_t
    assert end is not None
    live_report = report.to_json(report.build(live.window(2.0, end=end)))
    player = Player(load(str(path)))
    player.seek(end)
    replayed = report.to_json(report.build(player.timeline.window(2.0, end=end)))
    assert replayed == live_report


def test_sigkilled_recorder_leaves_a_replayable_file(
    demo_server: DemoServer, tmp_path: Path
) -> None:
    path = tmp_path / "killed.lsr"
    proc = subprocess.Popen(
        [PYTHON, "-m", "lifescope", "record", str(demo_server.pid), "-o", str(path)]
    )
    try:
        time.sleep(3.5)
    finally:
        killed_at = time.monotonic()  # the samples' clock
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rec = load(str(path))
    assert rec.problem is not None  # no gzip trailer: cut short
    # Everything flushed before the kill: the writer flushes every 0.1 s, and the newest
    # samples (GIL batches, thread states) are at most ~0.1 s old when written. Not a span
    # from the recording's start: on a busy machine start-up alone took 1.6 of the 3.5 s.
    assert rec.end > rec.start, rec
    assert killed_at - rec.end <= 0.5, (killed_at, rec.end)
    done = lifescope("snapshot", "--from", str(path))
    assert done.returncode == 0
    note = done.stderr.decode().strip()
    assert note.startswith("lifescope: ") and "using everything before it" in note


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "not a lifescope recording"),
        (b"garbage that is not a stream\n", "not a lifescope recording"),
        (b'{"schema":"lifescope.stream/9","kinds":{}}\n', "upgrade lifescope"),
        (gzip.compress(b"\x00\x01\x02"), "not a lifescope recording"),
    ],
)
def test_bad_recordings_fail_with_one_line(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "bad.lsr"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=words):
        load(str(path))
    for command in (["snapshot", "--from", str(path)], ["replay", str(path)]):
        done = lifescope(*command)
        assert done.returncode == 1
        err = done.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and words in err


def test_corrupt_middle_replays_the_good_prefix(recording: Path, tmp_path: Path) -> None:
    lines = gzip.decompress(recording.read_bytes()).splitlines(keepends=True)
    cut = len(lines) // 2
    damaged = b"".join(lines[:cut]) + b'["ThreadsSample", {broken\n' + b"".join(lines[cut:])
    path = tmp_path / "damaged.lsr"
    path.write_bytes(damaged)
    rec = load(str(path))
    assert rec.problem is not None and f"offset {len(b''.join(lines[:cut]))}" in rec.problem
    assert len(rec.samples) == cut - 1  # every record before the damage (minus the header)


def test_a_compressed_recordings_damage_is_placed_in_the_decompressed_stream(
    recording: Path, tmp_path: Path
) -> None:
    """A recording is gzip: the offset of the damage counts the stream inside it, and the
    note says so and how to look there (an offset of 169296 in a 58 KB file puzzled a user)."""
    stream = gzip.decompress(recording.read_bytes())
    lines = stream.splitlines(keepends=True)
    cut = len(lines) // 2
    broken = b'["ThreadsSample", {broken\n'
    damaged = b"".join(lines[:cut]) + broken + b"".join(lines[cut:])
    path = tmp_path / "damaged.lsr"
    path.write_bytes(gzip.compress(damaged))
    rec = load(str(path))
    offset = len(b"".join(lines[:cut]))
    assert rec.problem is not None
    assert f"byte offset {offset} of the decompressed stream" in rec.problem, rec.problem
    assert f"tail -c +{offset + 1}`" in rec.problem
    assert damaged[offset:].startswith(broken)  # what that command shows first
    assert offset > path.stat().st_size  # an offset into the file would point past its end


async def test_replay_ui_plays_seeks_and_changes_speed(recording: Path) -> None:
    player = Player(load(str(recording)))
    app = LifescopeApp(player=player, title_hint="replay")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(1.5)
        assert all(p.query_one(DataTable).row_count for p in app.query(Pane))
        header = str(app.query_one("#header").render())
        assert "REPLAY" in header
        await pilot.press("p")
        assert not player.playing
        before = player.position
        await pilot.press("right")
        assert player.position == pytest.approx(min(player.end, before + 5), abs=1e-6)
        await pilot.press("left", "left")
        assert player.position < before
        await pilot.press("plus", "plus")
        assert player.speed == 4.0
        await pilot.press("minus")
        assert player.speed == 2.0
        await pilot.press("q")
