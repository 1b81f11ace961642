"""Exports to speedscope and Chrome trace (Perfetto), from a real recording of the demo server.

The structure each format requires is checked by validators written here from the published
formats (speedscope's `file-format-schema.json` and its spec's rules on event order and
balance; the Trace Event Format's required keys per phase), and the content is checked
against the samples it came from and against the snapshot of the same recording.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifescope import export
from lifescope.demo.children import start_demo_server, start_load
from lifescope.recording import Recording, load
from lifescope.samples import Hello, StacksWindow
from tests.conftest import PYTHON

SECONDS = "3"


def record_demo_session(path: Path) -> None:
    """Record the demo server (GIL hog on; load that includes loop-blocking requests).

    Both children are stopped by pid whatever happens.
    """
    server = start_demo_server(port=0, flags=["--gil-hog"])
    load_gen = None
    try:
        load_gen = start_load(
            server.url, rate=30, concurrency=6, duration=60, mix="fast=5,db=2,sleep=2,block=1"
        )
        done = subprocess.run(
            [PYTHON, "-m", "lifescope", "record", str(server.pid), "-o", str(path),
             "--seconds", SECONDS],
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        if load_gen is not None:
            load_gen.stop()
        server.stop()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    path = tmp_path_factory.mktemp("export") / "session.lsr"
    record_demo_session(path)
    rec = load(str(path))
    assert rec.problem is None
    yield rec


def _origin(rec: Recording) -> float:
    return min(rec.start, rec.hello.mono_at_start)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------- speedscope validation

SPEEDSCOPE_UNITS = {"none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"}


def validate_speedscope(doc: Any) -> None:
    """Structure from the published schema (FileFormat.File and its definitions), plus the
    spec's rules: events sorted by `at`, every close matching the open on top of the stack,
    and `at` within [startValue, endValue]."""
    assert isinstance(doc, dict)
    for key in ("$schema", "shared", "profiles"):  # FileFormat.File.required
        assert key in doc, key
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    if "name" in doc:
        assert isinstance(doc["name"], str)
    if "exporter" in doc:
        assert isinstance(doc["exporter"], str)
    if doc.get("activeProfileIndex") is not None:
        assert _is_number(doc["activeProfileIndex"])
        assert 0 <= doc["activeProfileIndex"] < len(doc["profiles"])
    shared = doc["shared"]
    assert isinstance(shared, dict) and isinstance(shared["frames"], list)
    frames = shared["frames"]
    for frame in frames:  # FileFormat.Frame
        assert isinstance(frame, dict) and isinstance(frame["name"], str)
        if "file" in frame:
            assert isinstance(frame["file"], str)
        for key in ("line", "col"):
            if key in frame:
                assert _is_number(frame[key])
    assert isinstance(doc["profiles"], list) and doc["profiles"]
    for profile in doc["profiles"]:
        # FileFormat.EventedProfile.required
        for key in ("endValue", "events", "name", "startValue", "type", "unit"):
            assert key in profile, key
        assert profile["type"] == "evented"
        assert isinstance(profile["name"], str)
        assert profile["unit"] in SPEEDSCOPE_UNITS
        assert _is_number(profile["startValue"]) and _is_number(profile["endValue"])
        assert profile["endValue"] >= profile["startValue"]
        open_stack: list[int] = []
        last_at = profile["startValue"]
        for event in profile["events"]:  # OpenFrameEvent | CloseFrameEvent
            assert set(event) >= {"type", "at", "frame"}
            assert event["type"] in ("O", "C")
            assert _is_number(event["at"]) and _is_number(event["frame"])
            assert 0 <= event["frame"] < len(frames)
            assert profile["startValue"] <= event["at"] <= profile["endValue"]
            assert event["at"] >= last_at, "events must be sorted by `at`"
            last_at = event["at"]
            if event["type"] == "O":
                open_stack.append(event["frame"])
            else:
                assert open_stack, "close without an open"
                assert open_stack.pop() == event["frame"], "close does not match the open"
        assert not open_stack, "frames left open at the end"


def _stack_at(profile: dict[str, Any], at: float) -> list[int]:
    stack: list[int] = []
    for event in profile["events"]:
        if event["at"] > at:
            break
        if event["type"] == "O":
            stack.append(event["frame"])
        else:
            stack.pop()
    return stack


def test_speedscope_file_is_valid_and_private(recording: Recording, tmp_path: Path) -> None:
    path = tmp_path / "session.speedscope.json"
    size = export.write(str(path), "speedscope", recording)
    assert size == path.stat().st_size > 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    validate_speedscope(doc)
    names = [p["name"] for p in doc["profiles"]]
    assert any(name.startswith("gil-hog (") for name in names)
    assert names[0].startswith("event-loop ("), "the event loop's profile opens first"


def test_speedscope_reproduces_every_stack_sample(recording: Recording) -> None:
    """Each span's stack is exactly what is open in its thread's profile during the span."""
    doc = export.to_speedscope(recording)
    frames = doc["shared"]["frames"]
    profiles = {
        p["name"].rsplit("(", 1)[-1].rstrip(")"): p
        for p in doc["profiles"]
        if not p["name"].startswith(("GIL held by ", "loop stalls: "))
    }
    origin = _origin(recording)
    checked = 0
    for window in (s for s in recording.samples if isinstance(s, StacksWindow)):
        for span in window.spans:
            if span.end - span.start < 1e-4:
                continue
            profile = profiles[str(span.tid)]
            mid = (span.start + span.end) / 2 - origin
            opened = [(frames[i]["name"], frames[i].get("file"), frames[i].get("line"))
                      for i in _stack_at(profile, mid)]  # fmt: skip
            expected = [(window.frames[i].name, window.frames[i].file, window.frames[i].line)
                        for i in reversed(span.stack)]  # fmt: skip
            assert opened == expected
            checked += 1
    assert checked > 50


def test_speedscope_markers_match_the_snapshot(recording: Recording) -> None:
    doc = export.to_speedscope(recording)
    snap = export.to_snapshot(recording)
    frames = doc["shared"]["frames"]
    by_name = {p["name"]: p for p in doc["profiles"]}
    hog = next(t for t in snap["threads"] if t["name"] == "gil-hog")
    gil = by_name[f"GIL held by gil-hog ({hog['tid']})"]
    assert {frames[e["frame"]]["name"] for e in gil["events"]} == {"GIL held"}
    held = sum(
        (c["at"] - o["at"]) for o, c in zip(gil["events"][::2], gil["events"][1::2], strict=True)
    )
    assert held > 0.5  # a GIL hog holds it most of a 3 s recording

    (loop,) = snap["event_loops"]
    stalls = by_name[f"loop stalls: event-loop ({loop['tid']})"]
    opened = [frames[e["frame"]]["name"] for e in stalls["events"] if e["type"] == "O"]
    assert opened == [f"stall: {s['frame']}" for s in loop["stalls"]]
    assert any("handle_block" in name for name in opened), "the /block route stalls the loop"


def test_speedscope_window_is_clipped(recording: Recording) -> None:
    start, end = recording.start + 1.0, recording.start + 2.0
    doc = export.to_speedscope(recording, start=start, end=end)
    validate_speedscope(doc)
    origin = _origin(recording)
    for profile in doc["profiles"]:
        assert profile["startValue"] == pytest.approx(start - origin, abs=1e-6)
        assert profile["endValue"] == pytest.approx(end - origin, abs=1e-6)


# ------------------------------------------------------------------- chrome trace validation

_REQUIRED = {
    "X": ("name", "ph", "pid", "tid", "ts", "dur"),
    "B": ("name", "ph", "pid", "tid", "ts"),
    "E": ("ph", "pid", "tid", "ts"),
    "i": ("name", "ph", "pid", "tid", "ts"),
    "I": ("name", "ph", "pid", "tid", "ts"),
    "C": ("name", "ph", "pid", "ts", "args"),
    "M": ("name", "ph", "pid", "args"),
}
_METADATA_ARGS = {
    "process_name": "name",
    "thread_name": "name",
    "process_sort_index": "sort_index",
    "thread_sort_index": "sort_index",
    "process_labels": "labels",
}


def validate_chrome_trace(doc: Any) -> None:
    """Trace Event Format, JSON object form: the keys each phase needs, sane numbers, names
    for every thread used, and X events on one track that nest (Perfetto rejects overlaps)."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    if "displayTimeUnit" in doc:
        assert doc["displayTimeUnit"] in ("ms", "ns")
    named: set[tuple[int, int]] = set()
    used: set[tuple[int, int]] = set()
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for event in doc["traceEvents"]:
        ph = event["ph"]
        assert ph in _REQUIRED, ph
        for key in _REQUIRED[ph]:
            assert key in event, (ph, key)
        assert isinstance(event["pid"], int)
        if "tid" in event:
            assert isinstance(event["tid"], int)
        if "ts" in event:
            assert _is_number(event["ts"]) and event["ts"] >= 0
        if "args" in event:
            assert isinstance(event["args"], dict)
        if ph == "M":
            assert event["name"] in _METADATA_ARGS, event["name"]
            assert _METADATA_ARGS[event["name"]] in event["args"]
            if event["name"] == "thread_name":
                assert isinstance(event["args"]["name"], str) and event["args"]["name"]
                named.add((event["pid"], event["tid"]))
            continue
        used.add((event["pid"], event["tid"]))
        if ph == "X":
            assert _is_number(event["dur"]) and event["dur"] >= 0
            track = (event["pid"], event["tid"])
            tracks.setdefault(track, []).append((event["ts"], event["ts"] + event["dur"]))
    assert used <= named, f"threads without a thread_name: {used - named}"
    for track, slices in tracks.items():
        open_ends: list[float] = []
        for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start + 1e-6:
                open_ends.pop()
            if open_ends:
                assert end <= open_ends[-1] + 1e-6, f"slices overlap on track {track}"
            open_ends.append(end)


def test_chrome_trace_is_valid(recording: Recording, tmp_path: Path) -> None:
    path = tmp_path / "session.trace.json"
    export.write(str(path), "chrome", recording)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(path.read_text())
    validate_chrome_trace(doc)
    hello = next(s for s in recording.samples if isinstance(s, Hello))
    assert doc["otherData"]["pid"] == hello.pid
    assert doc["otherData"]["wall_at_origin"] == pytest.approx(
        hello.wall_at_start + (_origin(recording) - hello.mono_at_start), abs=1e-5
    )


def test_chrome_trace_has_the_gil_hog_and_its_gil_and_the_stalls(recording: Recording) -> None:
    doc = export.to_chrome_trace(recording)
    snap = export.to_snapshot(recording)
    events = doc["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    hog = next(tid for tid, name in names.items() if name == "gil-hog")
    hog_slices = [e for e in events if e["ph"] == "X" and e["tid"] == hog]
    assert any(e["name"] == "gil_hog_spin" for e in hog_slices)
    assert all(e["args"]["file"].endswith(".py") for e in hog_slices if "args" in e)

    # GIL intervals: each thread's share of the held time is the snapshot's, over the same
    # (whole) recording.
    gil = [e for e in events if e.get("cat") == "gil"]
    assert len({e["tid"] for e in gil}) == 1 and gil[0]["tid"] >= export.MARKER_TID_BASE
    held: dict[int, float] = {}
    for e in gil:
        held[e["args"]["tid"]] = held.get(e["args"]["tid"], 0.0) + e["dur"]
    total = sum(held.values())
    snap_held = snap["gil"]["held_share"]
    for thread in snap["threads"]:
        share = held.get(thread["tid"], 0.0) / total
        assert share == pytest.approx(thread["gil_share"] / snap_held, abs=0.01)
    assert max(held, key=held.__getitem__) == hog

    (loop,) = snap["event_loops"]
    stalls = [e for e in events if e.get("cat") == "stall"]
    assert [e["args"]["frame"] for e in stalls] == [s["frame"] for s in loop["stalls"]]
    assert [e["args"]["duration_ms"] for e in stalls] == [s["duration_ms"] for s in loop["stalls"]]
    assert stalls and all(names[e["tid"]].startswith("loop stalls: event-loop") for e in stalls)


def test_chrome_slices_cover_the_stack_samples(recording: Recording) -> None:
    """Per thread, the outermost slices cover every sampled span: nothing observed is lost."""
    doc = export.to_chrome_trace(recording)
    origin = _origin(recording)
    slices: dict[int, list[tuple[float, float]]] = {}
    for e in doc["traceEvents"]:
        if e["ph"] == "X" and e.get("cat") == "stack":
            slices.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for window in (s for s in recording.samples if isinstance(s, StacksWindow)):
        for span in window.spans:
            if not span.stack or span.end - span.start < 1e-4:
                continue
            mid = ((span.start + span.end) / 2 - origin) * 1e6
            covering = [s for s in slices[span.tid] if s[0] <= mid <= s[1]]
            assert len(covering) == len(span.stack)


def test_snapshot_export_and_bad_format(recording: Recording, tmp_path: Path) -> None:
    path = tmp_path / "snap.json"
    export.write(str(path), "snapshot", recording)
    snap = json.loads(path.read_text())
    assert snap["schema"] == "lifescope.snapshot/1" and snap["gil"]["source"] == "memory"
    with pytest.raises(ValueError, match="unknown export format"):
        export.write(str(tmp_path / "x.json"), "svg", recording)
    assert not (tmp_path / "x.json").exists()


def test_exports_take_plain_sample_lists(recording: Recording) -> None:
    samples = list(recording.samples)
    assert export.to_speedscope(samples) == export.to_speedscope(recording)
    assert export.to_chrome_trace(iter(samples)) == export.to_chrome_trace(recording)


def test_short_command() -> None:
    assert export.short_command("/opt/venv/bin/python3 -m app --port 80") == (
        "python3 -m app --port 80"
    )
    long = export.short_command("/usr/bin/python " + "x" * 200, limit=20)
    assert len(long) == 20 and long.endswith("…")


def test_validators_reject_broken_files(recording: Recording) -> None:
    """The validators above are not vacuous: each rule fails on a file that breaks it."""
    good = export.to_speedscope(recording)
    thread = good["profiles"][0]

    def broken(change: Any) -> dict[str, Any]:
        doc = json.loads(json.dumps(good))
        change(doc)
        return doc

    cases = [
        lambda d: d.pop("$schema"),
        lambda d: d["profiles"][0].update(type="sampled"),
        lambda d: d["profiles"][0]["events"].pop(),  # a frame left open
        lambda d: d["profiles"][0]["events"].reverse(),  # unsorted, closes first
        lambda d: d["profiles"][0]["events"][0].update(at=thread["endValue"] + 1),
        lambda d: d["profiles"][0]["events"][0].update(frame=len(d["shared"]["frames"])),
    ]
    for change in cases:
        with pytest.raises(AssertionError):
            validate_speedscope(broken(change))

    trace = export.to_chrome_trace(recording)
    names = [e for e in trace["traceEvents"] if e.get("name") == "thread_name"]
    no_name = {**trace, "traceEvents": [e for e in trace["traceEvents"] if e is not names[-1]]}
    with pytest.raises(AssertionError, match="without a thread_name"):
        validate_chrome_trace(no_name)
    x = next(e for e in trace["traceEvents"] if e["ph"] == "X" and e["dur"] > 10)
    overlap = {**x, "ts": x["ts"] + x["dur"] / 2, "dur": x["dur"], "args": {}}
    with pytest.raises(AssertionError, match="overlap"):
        validate_chrome_trace({**trace, "traceEvents": [*trace["traceEvents"], overlap]})
    negative = {**x, "dur": -1}
    with pytest.raises(AssertionError):
        validate_chrome_trace({**trace, "traceEvents": [*trace["traceEvents"], negative]})


def _cli_has_export() -> bool:
    import lifescope.cli

    return '"export"' in Path(lifescope.cli.__file__).read_text()


@pytest.mark.skipif(not _cli_has_export(), reason="the CLI has no `export` command yet")
def test_cli_export(recording: Recording, tmp_path: Path) -> None:
    def lifescope(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([PYTHON, "-m", "lifescope", *args], capture_output=True, timeout=120)

    trace = tmp_path / "trace.json"
    done = lifescope("export", recording.path, "--format", "chrome", "-o", str(trace))
    assert done.returncode == 0, done.stderr
    validate_chrome_trace(json.loads(trace.read_text()))
    assert stat.S_IMODE(os.stat(trace).st_mode) == 0o600

    flame = tmp_path / "window.speedscope.json"
    done = lifescope("export", recording.path, "--at", "2", "--seconds", "1", "-o", str(flame))
    assert done.returncode == 0, done.stderr
    doc = json.loads(flame.read_text())
    validate_speedscope(doc)
    start = recording.start + 1 - _origin(recording)
    assert doc["profiles"][0]["startValue"] == pytest.approx(start, abs=1e-6)

    done = lifescope("export", recording.path, "--seconds", "0", "-o", str(flame))
    assert done.returncode == 2 and b"--seconds: must be positive" in done.stderr
