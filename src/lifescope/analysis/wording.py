"""How a share and a stall's GIL are said, once for the text report, the narration and the UI.

Percentages were formatted four ways (and the GIL word map twice); the precisions differ on
purpose — a whole percent for shares of the window, a tenth where lifescope's own cost is
often below one percent — so each caller says how many decimals it shows, not how to format.
"""

from __future__ import annotations


def percent(share: float | None, decimals: int = 0, *, width: int = 0, unit: str = "%") -> str:
    """A share in 0..1 as a percentage; None (not measured) as "—", never as 0.

    `width` pads the number for a column; `unit` is "" for a big-digit display."""
    if share is None:
        return "—"
    return f"{share * 100:{width or ''}.{decimals}f}{unit}"


GIL_WORDS: dict[bool | None, str] = {True: "GIL held", False: "GIL free", None: "GIL ?"}
"""Whether a loop stall held the GIL: held, free, or not known."""


def in_prose(share: float | None) -> str:
    """A share in the narration's sentences, which set the sign apart as the essay does."""
    return percent(share, unit=" %")
