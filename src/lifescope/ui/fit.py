"""Lay text out for the width there is: whole parts or nothing, never a number cut in two.

Everything on screen is built from *parts* — "p99 481", "rss 31 MiB", "gil 825/s" — that are
read as a unit. A terminal too narrow for all of them must drop some (the least important
first) or move them to the next line; it must never show "p99 48" or "max" without its value,
which is what letting Textual crop a long line did at 80×24. Only a part marked `elide` (a
command line, a function name: words, not numbers) may be shortened, and then it ends in "…".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text

SEP = " · "


@dataclass(frozen=True, slots=True)
class Part:
    text: Text
    priority: int = 0
    """0 is kept first; higher numbers are dropped first when the line is too narrow."""
    elide: bool | str = False
    """Words that may be shortened with "…" rather than dropped (never a number): True or
    "end" shortens the end, "start" the start (a path, a URL: the end says the most)."""
    min_width: int = 12
    """An elided part narrower than this says too little: it is dropped instead."""
    sep: str | None = None
    """What goes before it on the same line (default `SEP`; "" glues it to the one before)."""
    newline: bool = False
    """Starts a line of its own (a second listener, a stall under the loop's numbers)."""


def part(text: str | Text, style: str = "", **kwargs: Any) -> Part:
    """A `Part` of plain words in one style (the keywords are `Part`'s)."""
    return Part(text if isinstance(text, Text) else Text(text, style=style), **kwargs)


def _sep(p: Part, sep: str) -> str:
    return sep if p.sep is None else p.sep


def line_width(parts: Sequence[Part], sep: str = SEP) -> int:
    return sum(p.text.cell_len for p in parts) + sum(len(_sep(p, sep)) for p in parts[1:])


def fit_line(parts: Sequence[Part], width: int, sep: str = SEP) -> Text:
    """One line of `parts` in `width` cells: the least important dropped until the rest fit,
    an elidable one shortened before it is dropped. Order on screen stays as given."""
    kept = list(parts)
    while kept and line_width(kept, sep) > width:
        over = line_width(kept, sep) - width
        worst = max(kept, key=lambda p: (p.priority, kept.index(p)))
        if worst.elide and worst.text.cell_len - over >= worst.min_width:
            short = _crop(worst.text, worst.text.cell_len - over, worst.elide)
            kept[kept.index(worst)] = replace(worst, text=short, elide=False)
        else:
            kept.remove(worst)
    return _join(kept, sep)


def pack(parts: Sequence[Part], width: int, max_lines: int | None = None, sep: str = SEP) -> Text:
    """`parts` flowed onto lines of `width` cells, a part never split across two lines.

    Parts are placed in the order given; a part that does not fit on the current line starts
    the next one. With `max_lines`, the least important parts are dropped until what is left
    fits in that many lines. A part wider than a whole line is elided if it may be, else
    dropped.
    """
    kept: list[Part] = []
    for p in parts:
        fitted = p if p.text.cell_len <= width else _shorten(p, width)
        if fitted is not None:
            kept.append(fitted)
    while True:
        lines = _flow(kept, width, sep)
        if max_lines is None or len(lines) <= max_lines or not kept:
            break
        kept.remove(max(kept, key=lambda p: (p.priority, kept.index(p))))
    out = Text()
    for i, line in enumerate(lines):
        if i:
            out.append("\n")
        out.append_text(_join(line, sep))
    return out


def wrap_words(text: str, width: int, max_lines: int, style: str = "", indent: int = 0) -> Text:
    """A sentence word-wrapped into at most `max_lines` lines of `width` cells. Words are
    never cut; if the sentence needs more lines, the last shown ends with "…" after a whole
    word. Continuation lines are indented by `indent` cells."""
    words = text.split()
    lines: list[str] = []
    current = ""
    for word in words:
        room = width - (indent if lines else 0)
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= room or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1].split()
        room = width - (indent if max_lines > 1 else 0)
        while last and len(" ".join(last)) + 1 > room:
            last.pop()
        lines = [*lines[: max_lines - 1], " ".join(last) + "…"]
    out = Text()
    for i, line in enumerate(lines):
        if i:
            out.append("\n" + " " * indent)
        out.append(line, style=style)
    return out


def _flow(parts: Sequence[Part], width: int, sep: str) -> list[list[Part]]:
    lines: list[list[Part]] = []
    current: list[Part] = []
    used = 0
    for p in parts:
        gap = len(_sep(p, sep)) if current else 0
        if current and (p.newline or used + gap + p.text.cell_len > width):
            lines.append(current)
            current, used, gap = [], 0, 0
        current.append(p)
        used += gap + p.text.cell_len
    if current:
        lines.append(current)
    return lines


def _join(parts: Sequence[Part], sep: str) -> Text:
    out = Text()
    for i, p in enumerate(parts):
        if i:
            out.append(_sep(p, sep), style="dim")
        out.append_text(p.text)
    return out


def _shorten(p: Part, width: int) -> Part | None:
    if not p.elide or width < p.min_width:
        return None
    return replace(p, text=_crop(p.text, width, p.elide), elide=False)


def _crop(text: Text, width: int, end: bool | str = "end") -> Text:
    return crop(text, width, "start" if end == "start" else "end")


def crop(text: Text, width: int, end: str = "end") -> Text:
    """`text` in `width` cells with "…" where it was shortened ("end" or "start")."""
    if text.cell_len <= width:
        return text
    if width <= 1:
        return Text("…", style="dim")
    if end == "start":
        plain = text.plain
        keep = plain[len(plain) - (width - 1) :]
        out = Text("…", style="dim")
        out.append(keep, style=text.style)
        return out
    out = text.copy()
    out.truncate(width - 1)
    out.append("…", style="dim")
    return out
