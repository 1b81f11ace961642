"""The demo's live toggles: what each one is, its bounds, and the stage's number keys.

One table for three readers. The demo server and the load generator validate control requests
against it (so the bounds live in one place and a toggle can never be talked into an unbounded
sleep, allocation or connection count); the UI maps number keys to it and shows its one-line
descriptions, written in the essay's words because they are read aloud to an audience.

Control protocol (the same on the server and on the load generator, loopback only)::

    GET  /_lifescope/toggles                 -> {"toggles": {name: value}, "status": {...}}
    POST /_lifescope/toggles/NAME?on=1       -> the toggle's default on-value
    POST /_lifescope/toggles/NAME?on=0       -> off (value 0)
    POST /_lifescope/toggles/NAME?value=N    -> exactly N (within the toggle's bounds)

Every value is a number and 0 means off. The server listens on its own port; the load
generator prints ``READY <control-port>`` as its first line and listens on 127.0.0.1 there.

Pure and stdlib-only, and importable on Python 3.8 (the demo server imports it and may run
under any CPython lifescope can attach to): no 3.10-only syntax at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    Action = tuple[str, str, float]
    """(target, name, value): one control request."""

CONTROL_PATH = "/_lifescope/toggles"
"""GET here for the state; POST to ``CONTROL_PATH + "/" + name`` to change one toggle."""

SERVER = "server"
LOAD = "load"

BLOCK_LOOP_SLEEP_S = 0.3
"""How long each blocking call sleeps on the event loop: long enough to be a visible stall
(asyncio's own slow-callback limit is 0.1 s) and short enough that the server keeps answering."""


@dataclass(frozen=True)
class ToggleSpec:
    """One live toggle: its bounds, its default on-value and what its number means."""

    target: str
    """``"server"`` or ``"load"``: which process owns it."""
    name: str
    on_value: float
    """What ``?on=1`` sets: a value that makes the effect obvious on a projector without
    drowning everything else (``block_loop`` 40 at the demo's 40 req/s is one 300 ms stall a
    second; 10 would block the loop for longer than a second every second)."""
    maximum: float
    unit: str
    integer: bool = True
    help: str = ""

    def parse(self, on: str | None, value: str | None) -> float:
        """The new value from a request's ``on``/``value`` parameters; ValueError says why not.

        ``value`` wins when both are given. Integers stay integers (``"200"`` and ``"200.0"``
        both mean 200 ms) so the state JSON reads cleanly.
        """
        if value is not None:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{self.name}: value must be a number, not {value!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"{self.name}: value must be finite")
            if self.integer and not number.is_integer():
                raise ValueError(f"{self.name}: value must be a whole number of {self.unit}")
            if not 0 <= number <= self.maximum:
                raise ValueError(f"{self.name}: value must be in [0, {self.maximum:g}] {self.unit}")
            return float(int(number)) if self.integer else number
        if on is not None:
            word = on.strip().lower()
            if word in ("1", "true", "on", "yes"):
                return self.on_value
            if word in ("0", "false", "off", "no"):
                return 0.0
            raise ValueError(f"{self.name}: on must be 1 or 0, not {on!r}")
        raise ValueError(f"{self.name}: give on=1|0 or value=N ({self.unit})")

    def render(self, value: float) -> object:
        """The value as it appears in the state JSON: an int for integer toggles."""
        return int(value) if self.integer else round(value, 3)


_SPECS = (
    ToggleSpec(SERVER, "slow_middleware", 200, 60_000, "ms",
               help="every request awaits this long in a middleware before its handler"),
    ToggleSpec(SERVER, "slow_db", 500, 60_000, "ms",
               help="each /db query keeps the database busy this long, in an executor thread"),
    ToggleSpec(SERVER, "big_json", 10_000, 100_000, "items",
               help="every /fast response serializes a list of this many objects"),
    ToggleSpec(SERVER, "block_loop", 40, 10_000, "requests",
               help=f"every Nth request calls time.sleep({BLOCK_LOOP_SLEEP_S:g}) on the loop"),
    ToggleSpec(SERVER, "gil_hog", 1, 1, "on/off",
               help="a background thread spins pure-Python CPU work, holding the GIL"),
    ToggleSpec(SERVER, "accept_stall", 30, 600, "s", integer=False,
               help="stop calling accept() for this long; reads back the seconds left"),
    ToggleSpec(LOAD, "slow_readers", 8, 64, "clients",
               help="clients that read their responses a few bytes every 100 ms"),
    ToggleSpec(LOAD, "flood", 300, 1_000, "connections",
               help="idle keep-alive connections opened and held"),
    ToggleSpec(LOAD, "churn", 30, 200, "connections/s",
               help="new connections a second, one request each, then closed"),
)  # fmt: skip

SERVER_TOGGLES: dict[str, ToggleSpec] = {s.name: s for s in _SPECS if s.target == SERVER}
LOAD_MODES: dict[str, ToggleSpec] = {s.name: s for s in _SPECS if s.target == LOAD}


def spec(target: str, name: str) -> ToggleSpec:
    """The spec of one toggle; KeyError names the ones that exist."""
    table = SERVER_TOGGLES if target == SERVER else LOAD_MODES
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"no {target} toggle {name!r}; known: {', '.join(table)}") from None


# ------------------------------------------------------------------------------------ the stage


@dataclass(frozen=True)
class StageKey:
    """One number key of ``lifescope demo``: which toggle it flips and what to tell the room."""

    key: str
    target: str
    name: str
    on_value: float
    description: str
    """One line for the overlay and the help screen, in the essay's words."""
    also: tuple[Action, ...] = ()
    """Companion actions switched on and off with this key. The accept stall needs clients
    that open *new* connections (the load generator's pool reuses its keep-alive ones, which
    an accept stall never touches), so its key also turns on connection churn."""
    rules: tuple[str, ...] = ()
    """The narration rules that show this pathology (``analysis.narration.PRIORITY``): the
    stage's one-line overlay asks for them first once the key is on."""
    culprit: str = ""
    """The function or thread the pathology runs in, as narration names it: with the demo's
    default mix the loop already stalls in ``handle_bigjson``, and switching on the blocking
    call must name ``blocking_call``, not the stall that was there before."""

    def actions(self, on: bool) -> list[Action]:
        """The control requests to send when the key turns the toggle on (or off)."""
        main = (self.target, self.name, self.on_value if on else 0.0)
        companions = [(t, n, v if on else 0.0) for t, n, v in self.also]
        return [main, *companions]


STAGE_KEYS: tuple[StageKey, ...] = (
    StageKey("1", SERVER, "slow_middleware", 200,
             "slow middleware — every request waits 200 ms in layer 3",
             rules=("middleware",)),
    StageKey("2", SERVER, "slow_db", 500,
             "slow database — each query takes 500 ms in an executor thread (layer 4)",
             rules=("executors",), culprit="run_report_query"),
    StageKey("3", SERVER, "big_json", 10_000,
             "large serialization — every /fast response is 1.4 MB of JSON, "
             "built on the event loop (layer 5)",
             rules=("loop-stall", "loop-busy"), culprit="handle_fast"),
    StageKey("4", SERVER, "block_loop", 40,
             "blocking call — every 40th request sleeps 300 ms on the event loop: "
             "every other request waits",
             rules=("loop-stall",), culprit="blocking_call"),
    StageKey("5", SERVER, "gil_hog", 1,
             "GIL hog — a CPU-bound thread keeps the GIL: the others queue for it",
             rules=("gil",), culprit="gil-hog"),
    StageKey("6", SERVER, "accept_stall", 30,
             "accept stall — the server stops calling accept() for 30 s: new connections "
             "wait in the kernel's accept queue (layer 1)",
             also=((LOAD, "churn", 30),), rules=("accept-queue",)),
    StageKey("7", LOAD, "slow_readers", 8,
             "slow clients — 8 clients read a few bytes every 100 ms: responses sit in "
             "the kernel's send buffer (layer 5)",
             rules=("send-queue",)),
    StageKey("8", LOAD, "flood", 300,
             "connection flood — 300 idle keep-alive connections, each holding a file "
             "descriptor (layer 6)",
             rules=("keepalive",)),
)  # fmt: skip

KEYMAP: dict[str, StageKey] = {k.key: k for k in STAGE_KEYS}


def key_for(name: str) -> StageKey | None:
    """The stage key that flips toggle ``name``, if any."""
    for key in STAGE_KEYS:
        if key.name == name:
            return key
    return None


def is_on(value: object) -> bool:
    """A toggle is on when its value is a non-zero number (or True)."""
    return bool(value) and value != 0


def key_states(server: Mapping[str, object], load: Mapping[str, object]) -> dict[str, bool]:
    """Which stage keys are on now, from the two processes' ``toggles()`` dictionaries."""
    states = {}
    for key in STAGE_KEYS:
        source = server if key.target == SERVER else load
        states[key.key] = is_on(source.get(key.name, 0))
    return states
