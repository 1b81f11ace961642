"""Tables that update in place by row key, keep the caller's order, and fit their width.

Rebuilding a table every tick re-lays out every row and loses the cursor and the scroll
position; here rows keep their keys (thread id, socket 4-tuple) and only changed cells are
set. The order is the caller's: a row whose rank changed is moved (a table that only ever
appended new rows left the GIL hog, which appeared late, under idle threads).

Width is decided here, per table: each column is as wide as its widest value so far (so
columns do not jitter), and when they do not all fit, whole columns are left out, least
important first — a number is never cut (at 80 columns Textual cropped the rtt and the
share percentages at the pane's edge). Only columns of words (`elide`) are shortened, with
"…".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.widget import Widget
from textual.widgets import DataTable

from lifescope.analysis.wording import percent
from lifescope.ui.fit import crop

Cell = str | Text

CELL_CACHE = 1_000
"""Rendered cells a live table keeps. Textual's DataTable keeps 10,000 — right for a static
table, but ours change every half second, so each new value is a new entry until all
10,000 are full: left alone, `lifescope demo` grew ~12 MiB a minute for the first minutes
(tracemalloc: DataTable._cell_render_cache). Our tables show at most 50 rows."""

PADDING = 2
"""DataTable's cell padding: one cell either side of every column."""
SCROLLBAR = 1
"""Room kept for the vertical scrollbar (`scrollbar-size-vertical: 1` in the stylesheet)."""
REMEASURE_EVERY = 60
"""Columns only grow between refreshes, so they do not jitter; every this many refreshes
(30 s) they are measured afresh."""


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    priority: int = 0
    """0 is always shown; higher numbers are left out first when the table is too narrow."""
    elide: str = ""
    """"end" or "start": words (names, frames, addresses as a whole) may be shortened with
    "…" at that end to `max_width`; "" (numbers, states) never."""
    max_width: int | None = None
    """Values wider than this are elided (with `elide`); the column never grows past it."""
    flex: bool = False
    """Takes the width left over (up to its widest value), after the other columns."""
    right: bool = False
    """Numbers: aligned right, so digits line up."""


class LiveTable(DataTable):
    """A DataTable whose cells change at every refresh: a small render cache."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Textual has no public knob for this cache; replacing it keeps the same type.
        self._cell_render_cache = LRUCache(CELL_CACHE)


class FittedTable(LiveTable):
    """A `LiveTable` shown through a column plan: `show(rows)` picks the columns that fit."""

    def __init__(self, columns: Sequence[Column], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = tuple(columns)
        self._widest: dict[str, int] = {c.key: len(c.label) for c in columns}
        self._layout: tuple[tuple[str, int], ...] = ()
        self._rows: dict[str, dict[str, Cell]] = {}
        self._shows = 0

    def show(self, rows: Mapping[str, Mapping[str, Cell]]) -> None:
        """Show exactly `rows` (key → {column key: cell}), in this order."""
        self._rows = {key: dict(cells) for key, cells in rows.items()}
        self._shows += 1
        now = self._measure()
        if self._shows % REMEASURE_EVERY == 0 or not self._fits(self._widest):
            # A long value gone for a while gives back its room — at once when the columns
            # that must show would not fit otherwise (a phase "accept-queue" seen at attach
            # narrowed every address for the next 30 s).
            self._widest = now
        else:
            self._widest = {k: max(w, now[k]) for k, w in self._widest.items()}
        self._apply()

    def _measure(self) -> dict[str, int]:
        """Each column's width for the rows shown now: its widest value or its label."""
        widths = {c.key: len(c.label) for c in self.plan}
        for cells in self._rows.values():
            for column in self.plan:
                width = _width(cells.get(column.key, ""))
                if column.max_width is not None:
                    width = min(width, column.max_width)
                widths[column.key] = max(widths[column.key], width)
        return widths

    def _fits(self, widths: Mapping[str, int]) -> bool:
        """The columns that must show fit at these widths, without narrowing any."""
        essential = [c for c in self.plan if c.priority == 0 and not c.flex]
        return sum(widths[c.key] + PADDING for c in essential) <= self.available()

    @property
    def shown_columns(self) -> tuple[str, ...]:
        """The keys of the columns on screen now."""
        return tuple(key for key, _ in self._layout)

    def available(self) -> int:
        width = self.size.width
        if width <= 0:  # before the first layout
            parent = self.parent
            width = parent.size.width if isinstance(parent, Widget) else 0
            width = width or self.app.size.width // 2
        return max(0, width - SCROLLBAR)

    def on_resize(self, event: events.Resize) -> None:
        if self._rows:
            self._widest = {c.key: len(c.label) for c in self.plan}
            self.show(self._rows)

    def _apply(self) -> None:
        layout = plan_columns(self.plan, self._widest, self.available())
        if layout != self._layout:
            cursor = self._cursor_key()
            self.clear(columns=True)
            by_key = {c.key: c for c in self.plan}
            for key, width in layout:
                label = by_key[key].label
                header = label.rjust(width) if by_key[key].right else label
                self.add_column(header, key=key, width=width)
            self._layout = layout
            self._restore(cursor)
        columns = {c.key: c for c in self.plan}
        rows = {
            key: [_fit(cells.get(k, ""), columns[k], w) for k, w in layout]
            for key, cells in self._rows.items()
        }
        sync_rows(self, rows)

    def _cursor_key(self) -> str | None:
        if not self.show_cursor or not self.row_count:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:
            return None

    def _restore(self, key: str | None) -> None:
        if key is not None and key in self._rows:
            self.call_after_refresh(self._move_to, key)

    def _move_to(self, key: str) -> None:
        if key in {k.value for k in self.rows}:
            self.move_cursor(row=self.get_row_index(key))


FLEX_MIN = 8
"""A flexible column (evidence, a frame) narrower than this says too little to be shown."""


def plan_columns(
    plan: Sequence[Column], widest: Mapping[str, int], available: int
) -> tuple[tuple[str, int], ...]:
    """The (key, width) of the columns to show, in plan order: priority 0 first, the others
    by priority while they fit; the flexible one gets what is left, up to its widest value.

    Priority 0 must fit too: when it does not, its columns of words are narrowed (down to
    `FLEX_MIN`) and, if that is not enough, its last columns left out whole — a column that
    ran past the pane's edge showed "rq" for "rq/sq" and none of its numbers."""
    width = dict(widest)

    def need(column: Column) -> int:
        w = width[column.key]
        if column.flex:
            w = min(w, max(len(column.label), FLEX_MIN))
        return w + PADDING

    essential = [c for c in plan if c.priority == 0]
    over = sum(need(c) for c in essential) - available
    for column in essential:  # narrow the words first
        if over <= 0:
            break
        if column.elide and not column.flex:
            floor = max(len(column.label), FLEX_MIN)
            give = min(over, max(0, width[column.key] - floor))
            width[column.key] -= give
            over -= give
    while over > 0 and essential:  # then leave out the last ones whole
        over -= need(essential.pop())
    chosen = {c.key for c in essential}
    used = sum(need(c) for c in essential)
    for column in sorted(plan, key=lambda c: c.priority):
        if column.priority and used + need(column) <= available:
            chosen.add(column.key)
            used += need(column)
    fixed = sum(width[c.key] + PADDING for c in plan if c.key in chosen and not c.flex)
    flexible = [c for c in plan if c.key in chosen and c.flex]
    spare = available - fixed - PADDING * len(flexible)
    out = []
    for column in plan:
        if column.key in chosen:
            w = width[column.key]
            if column.flex:
                w = max(len(column.label), min(w, spare))
            out.append((column.key, w))
    return tuple(out)


def sync_rows(table: DataTable, rows: Mapping[str, Sequence[Cell]]) -> None:
    """Make `table` show exactly `rows` (key → cells in column order), in that order.

    Rows that stay are updated cell by cell; when the order changed, the rows are laid out
    again in the new order (at most 50 rows) and the cursor stays on the row it was on.
    """
    column_keys = list(table.columns)
    for row_key in list(table.rows):
        if row_key.value not in rows:
            table.remove_row(row_key)
    existing = [key.value for key in table.rows]
    wanted = [key for key in rows if key in set(existing)]
    if existing != wanted:  # a rank changed: rebuild in the new order
        cursor = None
        if table.show_cursor and table.row_count:
            cursor = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        table.clear()
        for key, cells in rows.items():
            table.add_row(*cells, key=key)
        if cursor is not None and cursor in rows:
            table.move_cursor(row=list(rows).index(cursor))
        return
    present = set(existing)
    for key, cells in rows.items():
        if key in present:
            current = table.get_row(key)
            for column, old, new in zip(column_keys, current, cells, strict=False):
                if old != new:
                    table.update_cell(key, column, new)
        else:
            table.add_row(*cells, key=key)


def _width(value: Cell) -> int:
    return value.cell_len if isinstance(value, Text) else len(value)


def _fit(value: Cell, column: Column, width: int) -> Cell:
    """A cell in its column: words elided to the width, numbers aligned right."""
    if _width(value) > width and column.elide:
        value = crop(value if isinstance(value, Text) else Text(value), width, column.elide)
    if column.right and _width(value) < width:  # padded, not justified: the SVG export
        pad = " " * (width - _width(value))  # of a justified cell lost the alignment
        if isinstance(value, Text):
            return Text(pad) + value
        return pad + value
    return value


def ensure_columns(table: DataTable, columns: Sequence[tuple[str, str, int | None]]) -> None:
    """Add (key, label, width) columns once; Textual's on_mount may run more than once."""
    if table.columns:
        return
    for key, label, width in columns:
        table.add_column(label, key=key, width=width)


def bar(share: float | None, width: int = 10) -> Text:
    """A share as a horizontal bar with its percentage: `███▌      35%`."""
    if share is None:
        return Text("—".rjust(width + 5), style="dim")
    share = max(0.0, min(1.0, share))
    eighths = round(share * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    body = ("█" * full + partial).ljust(width)
    style = "red" if share >= 0.8 else ("yellow" if share >= 0.5 else "green")
    text = Text(body, style=style)
    text.append(" " + percent(share, width=3), style="bold")
    return text
