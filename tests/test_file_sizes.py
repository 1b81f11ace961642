"""A source file over ~600 lines says at its top why it is one file (issue 14): a new
maintainer should find a reason, not a pile."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "lifescope"
LIMIT = 600


def test_a_long_source_file_says_why_it_is_one_file() -> None:
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not re.search(r"^Why (this file is|one file of) ~\d+ lines", doc, re.M):
            unexplained.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
    assert not unexplained, unexplained
