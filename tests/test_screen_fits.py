"""What the screen promises, read off a real terminal: `lifescope demo` in tmux at 80×24 (the
README's "everything fits 80×24, so it works over SSH") and at 140×40.

Nothing is cut: no number or word runs into a pane's border or off the screen's edge, the
header names the demo's URL whole, the GIL line keeps its `max`, the stage line all eight keys,
the `»` sentence whole words. A key pressed on stage is named on the `»` line within seconds.
The help window's lines are never wrapped.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from lifescope.ui.screens import HELP, WINDOW_S
from tests.conftest import PYTHON, wait_for
from tests.screen import Tmux, needs_tmux

BORDERS = set("│╭╮╰╯─")
CUT = re.compile(r"[\w%/.:)(+-]")
"""A character that, right against a pane's border, means a value ran into it."""


def _panes(lines: list[str]) -> list[str]:
    """The rows of the four panes (between the two header rows and the » line)."""
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("»"))
    return lines[2:end]


def _narration(lines: list[str]) -> tuple[str, str]:
    """The » sentence (its lines joined) and the stage legend."""
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("»"))
    legend = next(i for i in range(start, len(lines)) if "[1]" in lines[i])
    sentence = " ".join(line.strip() for line in lines[start:legend])
    return sentence.removeprefix("» ").strip(), lines[legend]


def _ready(tmux: Tmux) -> bool:
    lines = tmux.lines()
    text = "\n".join(lines)
    return (
        "● live" in text
        and any("max" in line and "p99" in line for line in lines)
        and any(re.search(r"event-loop .*\d+%", line) for line in lines)  # the tables
        and "»" in text
        and "[8]" in text
    )


def _assert_nothing_cut(lines: list[str], cols: int) -> None:
    for row, line in enumerate(_panes(lines)):
        for i, char in enumerate(line):
            if char in "│╮╯" and i > 0 and line[i - 1] not in BORDERS:
                assert not CUT.match(line[i - 1]), f"row {row + 2} runs into a border:\n{line}"
    # The cost line ends with a whole part: a rate, a count, a size or the shedding note.
    assert re.search(r"(\d/s|errors \d+|\d MiB|saturated\)|mode\))\s*$", lines[1]), lines[1]


def _assert_promises(lines: list[str], cols: int) -> None:
    header = lines[0]
    assert re.search(r"demo server on http://127\.0\.0\.1:\d+\s*$", header), header
    assert re.search(r"cost: cpu [\d.]+% of a core", lines[1]), lines[1]
    gil = next(line for line in lines if "p99" in line)
    assert re.search(r"max \d", "".join(lines)), gil
    # The connections table's essential columns are whole: its queues once ran off the edge
    # and showed "rq" with no numbers under it.
    head = next(i for i, line in enumerate(lines) if "peer" in line and "phase" in line)
    assert "rq/sq" in lines[head], lines[head]
    assert re.search(r"\d+/\d+", lines[head + 1].split("││")[0]), lines[head + 1]
    sentence, legend = _narration(lines)
    assert all(f"[{n}]" in legend for n in range(1, 9)), legend
    assert sentence.endswith((".", "…")), f"the » sentence is cut: {sentence!r}"
    _assert_nothing_cut(lines, cols)


@needs_tmux
@pytest.mark.parametrize("size", [(80, 24), (140, 40)], ids=["80x24", "140x40"])
def test_the_demo_fits_its_terminal(size: tuple[int, int]) -> None:
    cols, rows = size
    tmux = Tmux(f"lifescope-fit-{os.getpid()}-{cols}", cols, rows)
    tmux.start(f"exec {PYTHON} -m lifescope demo --rate 20")
    try:
        assert tmux.size() == (cols, rows)
        try:
            wait_for(lambda: _ready(tmux), timeout=90, step=0.5)
        except AssertionError:
            raise AssertionError("the demo's screen never filled:\n" + tmux.screen()) from None
        time.sleep(WINDOW_S / 4)  # a few refreshes with the window filling
        _assert_promises(tmux.lines(), cols)

        tmux.keys("5")  # the GIL hog, on stage
        started = time.monotonic()
        wait_for(
            lambda: re.search(r"GIL hog|gil-hog", _narration(tmux.lines())[0]), timeout=10
        )
        print(f"{cols}x{rows}: the » line named the GIL hog {time.monotonic() - started:.1f} s "
              "after the key")  # fmt: skip
        _assert_promises(tmux.lines(), cols)
        tmux.keys("5")

        tmux.keys("?")
        wait_for(lambda: "[b]" not in tmux.screen() and "Keys" in tmux.screen(), timeout=10)
        screen = tmux.screen()
        shown = 0
        for line in _help_lines():  # a line on screen is there whole, never wrapped
            text = line.strip()
            if len(text) > 30 and text[:30] in screen:
                assert text in screen, f"help line wrapped:\n{text}\n{screen}"
                shown += 1
        assert shown >= min(20, rows - 8), screen
        tmux.keys("q")
        wait_for(lambda: "» " in tmux.screen(), timeout=10)
        tmux.keys("q")
        wait_for(lambda: "● live" not in tmux.screen(), timeout=20)
    finally:
        tmux.kill()


def _help_lines() -> list[str]:
    text = HELP.format(window=WINDOW_S)
    return [re.sub(r"\[/?b\]", "", line) for line in text.splitlines()]


def test_help_lines_fit_the_help_window() -> None:
    """72 columns: the window is 78 wide, less its border, padding and scrollbar."""
    assert max(len(line) for line in _help_lines()) <= 72
    assert any(line.lstrip().startswith("i ") for line in _help_lines()), "`i` is in the help"
