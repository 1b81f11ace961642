"""One table of sample kinds (`samples.KINDS`) drives the timeline, the window, the report's
probe list and `--probes`: these check that what cannot be derived from it — `Window`'s typed
fields — agrees with it, and that the stream knows every kind."""

from __future__ import annotations

import dataclasses
import typing

from lifescope import options, stream
from lifescope.analysis import report
from lifescope.samples import KINDS, PROBES, SAMPLE_TYPES
from lifescope.timeline import Timeline, Window


def test_window_has_a_field_of_each_kind() -> None:
    hints = typing.get_type_hints(Window)
    for kind in KINDS:
        assert hints[kind.field] == tuple[kind.cls, ...], kind


def test_every_kind_is_a_sample_and_buffered_once() -> None:
    assert {k.cls for k in KINDS} <= set(SAMPLE_TYPES)
    assert len({k.cls for k in KINDS}) == len({k.field for k in KINDS}) == len(KINDS)
    assert Timeline().window().threads == ()


def test_probe_names_come_from_the_table() -> None:
    assert options.PROBES == report.PROBE_ORDER == PROBES
    assert PROBES == ("gil", "threads", "stacks", "dump", "sockets", "packets", "tasks", "workers")


def test_the_stream_knows_every_kind_and_what_it_is_made_of() -> None:
    known = set(stream._KINDS.values())
    for cls in SAMPLE_TYPES:
        assert cls in known
        for field in dataclasses.fields(cls):
            for inner in typing.get_args(typing.get_type_hints(cls)[field.name]):
                if dataclasses.is_dataclass(inner):
                    assert inner in known, (cls, field.name)
