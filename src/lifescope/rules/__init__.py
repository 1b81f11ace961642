"""Layer rules: data, one TOML file per framework, extendable by the user.

Loaded from this package, then `~/.config/lifescope/rules/*.toml`, then any `--rules` paths;
later files' rules are tried first, so a user can override a built-in. A file with a syntax
or schema error is reported by name and line and skipped — the built-in rules still work.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

LAYERS = ("L0", "L1", "L2", "L3", "L4", "L5", "L6")
USER_DIR = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "lifescope" / "rules"


@dataclass(frozen=True, slots=True)
class Rule:
    layer: str
    """L0..L6, or "inherit": a wait that takes the layer of the code awaiting it."""
    kind: str
    source: str
    """`file.toml#N`: where the rule came from, shown as evidence."""
    file: str | None = None
    function: re.Pattern[str] | None = None
    code: re.Pattern[str] | None = None


class RuleError(Exception):
    """A rule file that cannot be used; the message names the file and line."""


def _parse(path: Path) -> list[Rule]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise RuleError(f"{path}: cannot read ({exc.strerror})") from exc
    rules = []
    for index, raw in enumerate(data.get("rules", []), 1):
        where = f"{path.name}#{index}"
        layer = raw.get("layer")
        if layer not in (*LAYERS, "inherit"):
            raise RuleError(f"{path}: rule {index}: layer must be L0..L6 or inherit, got {layer!r}")
        if not any(k in raw for k in ("file", "function", "code")):
            raise RuleError(f"{path}: rule {index}: needs at least one of file, function, code")
        try:
            function = re.compile(raw["function"]) if "function" in raw else None
            code = re.compile(raw["code"]) if "code" in raw else None
        except re.error as exc:
            raise RuleError(f"{path}: rule {index}: bad regular expression: {exc}") from exc
        rules.append(Rule(layer, str(raw.get("kind", "")), where, raw.get("file"), function, code))
    return rules


def builtin_files() -> list[Path]:
    return sorted(Path(__file__).parent.glob("*.toml"))


def load(extra: list[str] | None = None, user_dir: Path | None = USER_DIR) -> tuple[
    tuple[Rule, ...], tuple[str, ...]
]:  # fmt: skip
    """(rules, problems). Later sources first, so user rules override built-ins."""
    files = builtin_files()
    if user_dir is not None and user_dir.is_dir():
        files += sorted(user_dir.glob("*.toml"))
    for item in extra or []:
        path = Path(item)
        files += sorted(path.glob("*.toml")) if path.is_dir() else [path]
    rules: list[Rule] = []
    problems: list[str] = []
    for path in reversed(files):
        try:
            rules += _parse(path)
        except RuleError as exc:
            problems.append(str(exc))
    # Within the built-ins, framework rules come before the generic library rules.
    rules.sort(key=lambda r: r.source.startswith("libraries.toml"))
    return tuple(rules), tuple(problems)
