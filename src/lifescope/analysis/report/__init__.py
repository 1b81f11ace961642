"""A report: the numbers every pane and `snapshot` show, from one window of samples.

One job per module — `views` (the dataclasses, which are the `lifescope.snapshot/1` schema),
`build` (window → report), `json` (the snapshot document, derived from the views), `text`
(plain lines). The names importers use are re-exported here.
"""

from lifescope.analysis.report.build import (
    PROBE_ORDER,
    build,
    builtin_rules,
    no_gil_reason,
    thread_stack,
)
from lifescope.analysis.report.json import SNAPSHOT_SCHEMA, to_json
from lifescope.analysis.report.text import TEXT_IN_FLIGHT, TEXT_STALLS, shedding_note, to_text
from lifescope.analysis.report.views import (
    READING_S,
    STATE_CHARS,
    ConnectionsView,
    ConnectionView,
    CostView,
    GilView,
    InFlightView,
    LayersView,
    ListenView,
    LoopView,
    ProbeView,
    Report,
    SocketRef,
    StallView,
    ThreadView,
    reading,
)

__all__ = [
    "PROBE_ORDER",
    "READING_S",
    "SNAPSHOT_SCHEMA",
    "STATE_CHARS",
    "TEXT_IN_FLIGHT",
    "TEXT_STALLS",
    "ConnectionView",
    "ConnectionsView",
    "CostView",
    "GilView",
    "InFlightView",
    "LayersView",
    "ListenView",
    "LoopView",
    "ProbeView",
    "Report",
    "SocketRef",
    "StallView",
    "ThreadView",
    "build",
    "builtin_rules",
    "no_gil_reason",
    "reading",
    "shedding_note",
    "thread_stack",
    "to_json",
    "to_text",
]
