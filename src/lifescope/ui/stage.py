"""`lifescope demo`'s stage: number keys flip the demo's pathologies, and the `»` line follows.

The audience watches the line under the panes. When a key switches a pathology on, that line
must name it within a few seconds — not whatever was loudest before (with the demo's default
mix the loop already stalls in `handle_bigjson`). So the stage remembers which keys are on,
newest first, and hands narration a `Focus` for each; until the numbers show the newest one
(a window of samples takes a few seconds to fill), the line says what was switched on, marked
as not measured yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from rich.text import Text

from lifescope.analysis.narration import Focus, Sentence, Severity
from lifescope.demo.children import control_request, toggle_values
from lifescope.demo.toggles import KEYMAP, LOAD, SERVER, STAGE_KEYS, StageKey, key_states

PENDING_S = 20.0
"""How long the line names a key switched on whose effect is not in the numbers yet. The
slowest (a slow database under the default load) shows within ~10 s; after this the line
goes back to what the numbers say, and the legend still shows the key as on."""

LABELS = {
    "slow_middleware": ("middleware", "middleware"),
    "slow_db": ("slow db", "slow db"),
    "big_json": ("big json", "json"),
    "block_loop": ("block loop", "block"),
    "gil_hog": ("gil hog", "gil"),
    "accept_stall": ("accept stall", "accept"),
    "slow_readers": ("slow clients", "clients"),
    "flood": ("flood", "flood"),
}
"""Each key's name in the legend: wide, and short enough for all eight in 78 columns."""


class Toggler(Protocol):
    def set_toggle(self, name: str, value: bool | float) -> object: ...
    def toggles(self) -> dict[str, float]: ...


class LoadToggler(Protocol):
    def set_mode(self, name: str, value: bool | float) -> object: ...
    def toggles(self) -> dict[str, float]: ...


class Stage:
    """The demo's children (or their control endpoints) and which stage keys are on."""

    def __init__(
        self,
        server: Toggler,
        load: LoadToggler,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.load = load
        self.clock = clock
        self.on: set[str] = set()
        self.switched_on: dict[str, float] = {}
        """Key -> when it was switched on (monotonic), for the keys on now."""
        self.seen: set[str] = set()
        """Keys whose effect narration has found since they were switched on."""

    def sync(self) -> None:
        """Read which keys are on from the children themselves (blocking HTTP; a second
        browser visitor of `demo --web` joins a stage the first one already changed)."""
        states = key_states(self.server.toggles(), self.load.toggles())
        for key, on in states.items():
            if on and key not in self.on:
                self.on.add(key)
                self.switched_on[key] = float("-inf")  # on before we came: not news
                self.seen.add(key)
            elif not on:
                self.on.discard(key)
                self.switched_on.pop(key, None)

    def press(self, key: str) -> str:
        """Flip a stage key; blocking HTTP to the loopback control ports (run off the UI)."""
        spec = KEYMAP[key]
        turn_on = key not in self.on
        for target, name, value in spec.actions(turn_on):
            if target == SERVER:
                self.server.set_toggle(name, value)
            elif target == LOAD:
                self.load.set_mode(name, value)
        if turn_on:
            self.on.add(key)
            self.switched_on[key] = self.clock()
            self.seen.discard(key)
        else:
            self.on.discard(key)
            self.switched_on.pop(key, None)
        return ("ON  " if turn_on else "OFF ") + spec.description

    def newest(self) -> StageKey | None:
        """The key switched on last, if any is on."""
        if not self.switched_on:
            return None
        key = max(self.switched_on, key=lambda k: self.switched_on[k])
        return KEYMAP[key]

    def focus(self) -> tuple[Focus, ...]:
        """Narration's focus: every key on, the newest first."""
        keys = sorted(self.switched_on, key=lambda k: -self.switched_on[k])
        return tuple(
            Focus(KEYMAP[k].rules, KEYMAP[k].culprit or None) for k in keys if KEYMAP[k].rules
        )

    def headline(self, sentence: Sentence) -> Sentence:
        """The sentence for the `»` line: narration's, unless the newest key's effect is not
        in the numbers yet — then what was switched on, for up to `PENDING_S`."""
        newest = self.newest()
        if newest is None:
            return sentence
        if sentence.rule in newest.rules:
            self.seen.add(newest.key)
        if newest.key in self.seen or sentence.rule == "gone":
            return sentence
        if self.clock() - self.switched_on[newest.key] > PENDING_S:
            return sentence
        name = newest.description.split(" — ", 1)[0]
        return Sentence(
            f"{name[:1].upper()}{name[1:]} switched on: watching for it in the numbers…",
            Severity.INFO,
            "stage",
        )

    def legend(self, width: int) -> Text:
        """The eight keys and which are on (reversed), in the longest form that fits."""
        for prefix, index in (("stage ", 0), ("stage ", 1), ("", 1)):
            text = Text(prefix, style="bold")
            for spec in STAGE_KEYS:
                on = spec.key in self.on
                label = LABELS.get(spec.name, (spec.name, spec.name))[index]
                text.append(f"[{spec.key}]", style="bold reverse" if on else "bold")
                text.append(f"{label} ", style="bold yellow" if on else "dim")
            text.rstrip()
            if text.cell_len <= width:
                return text
        return text


class Endpoint:
    """One demo child reached only through its loopback control URL: what a `demo --web`
    visitor's process holds (the children themselves belong to the `demo` process)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def toggles(self) -> dict[str, float]:
        return toggle_values(control_request(self.url))

    def set_toggle(self, name: str, value: bool | float) -> dict[str, float]:
        return toggle_values(control_request(self.url, name, value))

    set_mode = set_toggle
