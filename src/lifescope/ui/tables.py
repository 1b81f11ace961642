"""Update a DataTable in place, by row key, so a repaint costs what changed.

Rebuilding a table every tick re-lays out every row and loses the cursor and the scroll
position; here rows keep their keys (thread id, socket inode) and only changed cells are set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from textual.cache import LRUCache
from textual.widgets import DataTable

Cell = str | Text

CELL_CACHE = 1_000
"""Rendered cells a live table keeps. Textual's DataTable keeps 10,000 — right for a static
table, but ours change every half second, so each new value is a new entry until all
10,000 are full: left alone, `lifescope demo` grew ~12 MiB a minute for the first minutes
(tracemalloc: DataTable._cell_render_cache). Our tables show at most 50 rows."""


class LiveTable(DataTable):  # type: ignore[type-arg]
    """A DataTable whose cells change at every refresh: a small render cache."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Textual has no public knob for this cache; replacing it keeps the same type.
        self._cell_render_cache = LRUCache(CELL_CACHE)


def ensure_columns(table: DataTable, columns: Sequence[tuple[str, str, int | None]]) -> None:
    """Add (key, label, width) columns once; Textual's on_mount may run more than once."""
    if table.columns:
        return
    for key, label, width in columns:
        table.add_column(label, key=key, width=width)


def sync_rows(table: DataTable, rows: Mapping[str, Sequence[Cell]]) -> None:
    """Make `table` show exactly `rows` (key → cells in column order).

    New rows are appended; callers that want an order call `table.sort` afterwards, which
    moves rows without rebuilding them.
    """
    column_keys = list(table.columns)
    for row_key in list(table.rows):
        if row_key.value not in rows:
            table.remove_row(row_key)
    existing = {key.value for key in table.rows}
    for key, cells in rows.items():
        if key in existing:
            current = table.get_row(key)
            for column, old, new in zip(column_keys, current, cells, strict=False):
                if old != new:
                    table.update_cell(key, column, new)
        else:
            table.add_row(*cells, key=key)


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
    text.append(f" {share * 100:3.0f}%", style="bold")
    return text


def pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.0f}%"
