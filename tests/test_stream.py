"""The sample stream: round trips, evolution, and cuts at any byte."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifescope import stream
from lifescope.samples import (
    Frame,
    Hello,
    ProbeStatus,
    Socket,
    SocketsSample,
    StackSpan,
    StacksWindow,
    ThreadsSample,
    ThreadStat,
)

SAMPLES: list[object] = [
    Hello(
        "lifescope.stream/1",
        42,
        1234,
        "python server.py",
        "3.11.7",
        "/usr/bin/python3.11",
        10.0,
        1700000000.0,
        99,
        100,
        "0.1.0",
    ),
    ProbeStatus(10.5, "stacks", "denied", "py-spy may not read pid 42", "run as root"),
    ThreadsSample(
        10.6,
        (ThreadStat(42, "python", "S", 12, 232, 3), ThreadStat(43, "wörker ✓", "R", 99, -1, None)),
    ),
    StacksWindow(
        11.0,
        10.0,
        (Frame("handle", "/srv/app.py", 3), Frame("<module>", "", 0)),
        (StackSpan(42, 10.0, 10.5, (0, 1)),),
        ((42, "MainThread"),),
        100,
        0,
        100.0,
    ),
    SocketsSample(
        11.1,
        (Socket(7, "ESTABLISHED", "127.0.0.1:8080", "127.0.0.1:5000", 0, 10, 1234, 50, 0, 3),),
        12,
        1024,
        3,
        3,
    ),
]


def encoded(samples: list[object]) -> bytes:
    return stream.header_line() + b"".join(stream.encode(s) for s in samples)


def test_round_trip_keeps_every_field_and_type() -> None:
    decoded = list(stream.read(io.BytesIO(encoded(SAMPLES))))
    assert decoded == SAMPLES
    assert isinstance(decoded[3].frames[0], Frame)
    assert isinstance(decoded[2].threads, tuple)


def test_records_are_compact() -> None:
    line = stream.encode(SAMPLES[2])
    as_objects = json.dumps(
        {
            "threads": [
                {
                    "tid": 42,
                    "name": "python",
                    "state": "S",
                    "cpu_ticks": 12,
                    "syscall": 232,
                    "arg0": 3,
                }
            ]
        }
    )
    assert len(line) < len(as_objects)


def test_old_reader_skips_unknown_kinds_and_fields() -> None:
    header = json.loads(stream.header_line())
    header["kinds"]["ProbeStatus"].append("added_later")
    header["kinds"]["FutureThing"] = ["t", "x"]
    data = json.dumps(header).encode() + b"\n"
    data += b'["FutureThing",1.0,2]\n'
    data += b'["ProbeStatus",1.0,"gil","ok",null,null,"extra"]\n'
    assert list(stream.read(io.BytesIO(data))) == [ProbeStatus(1.0, "gil", "ok", None, None)]


def test_missing_trailing_fields_take_defaults() -> None:
    header = json.loads(stream.header_line())
    header["kinds"]["ProbeStatus"] = ["t", "probe", "status"]
    data = json.dumps(header).encode() + b'\n["ProbeStatus",1.0,"gil","ok"]\n'
    assert list(stream.read(io.BytesIO(data))) == [ProbeStatus(1.0, "gil", "ok")]


def test_newer_schema_is_refused_with_the_fix() -> None:
    data = b'{"schema":"lifescope.stream/9","kinds":{}}\n'
    with pytest.raises(stream.StreamError, match="upgrade lifescope"):
        list(stream.read(io.BytesIO(data)))


def test_not_a_stream() -> None:
    with pytest.raises(stream.StreamError, match="offset 0"):
        list(stream.read(io.BytesIO(b"hello world\n")))
    with pytest.raises(stream.StreamError, match="empty"):
        list(stream.read(io.BytesIO(b"")))


@given(st.integers(min_value=0))
def test_a_cut_anywhere_keeps_every_complete_record(cut: int) -> None:
    data = encoded(SAMPLES)
    cut = cut % (len(data) + 1)
    source = io.BytesIO(data[:cut])
    got: list[object] = []
    try:
        for sample in stream.read(source):
            got.append(sample)
    except stream.StreamError as exc:
        assert 0 <= exc.offset <= cut
    complete_lines = data[:cut].count(b"\n") - 1  # minus the header
    assert got == SAMPLES[: max(0, complete_lines)]


def test_corrupt_record_names_its_offset() -> None:
    good = encoded(SAMPLES[:2])
    data = good + b'["ThreadsSample", {not json\n' + stream.encode(SAMPLES[2])
    got = []
    with pytest.raises(stream.StreamError) as info:
        for sample in stream.read(io.BytesIO(data)):
            got.append(sample)
    assert info.value.offset == len(good)
    assert got == SAMPLES[:2]
