"""Layer rules: data, one TOML file per server or framework, extendable by the user.

Two tables. `[[boundaries]]` are the frames a server or framework passes every request through
(http.server's `handle_one_request`, Django's `_get_response`): being inside one makes a stack
a request, and says which layer the code inside is in. `[[rules]]` recognise what a frame
does wherever it is (a DB driver is L4, `json.dumps` L5, `time.sleep` a wait that takes the
layer of whoever sleeps, the ASGI lifespan task no request at all).

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


NONE = "none"
"""A rule layer: a stack or task matching it serves no request (the ASGI lifespan task, a
request handed to a worker thread, which is counted where it runs)."""
INHERIT = "inherit"
"""A rule layer: a wait (sleep, lock, queue) that takes the layer of the code that waits."""


@dataclass(frozen=True, slots=True)
class Rule:
    layer: str
    """L0..L6, `inherit` or `none` — for a boundary, the layer of the server's or framework's
    own frames inside it."""
    kind: str
    source: str
    """`file.toml#N`: where the rule came from, shown as evidence."""
    file: str | None = None
    function: re.Pattern[str] | None = None
    code: re.Pattern[str] | None = None
    boundary: bool = False
    """A `[[boundaries]]` entry: a frame a server or framework passes every request through.
    Being inside one is what makes a stack a request; inside it, frames are in `layer` and
    the application's own code in `app`, until a boundary further in says otherwise."""
    app: str | None = None
    framework: bool = False
    """A framework's entry (Django, Flask, Starlette): application code *outside* it that
    calls into it is middleware (a WSGI/ASGI wrapper)."""


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
    for table, boundary in (("rules", False), ("boundaries", True)):
        for index, raw in enumerate(data.get(table, []), 1):
            rules.append(_rule(path, table, index, raw, boundary))
    return rules


def _rule(path: Path, table: str, index: int, raw: dict[str, object], boundary: bool) -> Rule:
    where = f"{path.name}#{index}" if not boundary else f"{path.name}#b{index}"
    allowed = LAYERS if boundary else (*LAYERS, INHERIT, NONE)
    layer, app = raw.get("layer"), raw.get("app")
    if layer not in allowed:
        names = "L0..L6" if boundary else "L0..L6, inherit or none"
        raise RuleError(f"{path}: {table} {index}: layer must be {names}, got {layer!r}")
    if app is not None and app not in LAYERS:
        raise RuleError(f"{path}: {table} {index}: app must be L0..L6, got {app!r}")
    if not any(k in raw for k in ("file", "function", "code")):
        raise RuleError(f"{path}: {table} {index}: needs at least one of file, function, code")
    try:
        function = re.compile(str(raw["function"])) if "function" in raw else None
        code = re.compile(str(raw["code"])) if "code" in raw else None
    except re.error as exc:
        raise RuleError(f"{path}: {table} {index}: bad regular expression: {exc}") from exc
    file = raw.get("file")
    return Rule(
        str(layer),
        str(raw.get("kind", "")),
        where,
        None if file is None else str(file),
        function,
        code,
        boundary=boundary,
        app=None if app is None else str(app),
        framework=bool(raw.get("framework", False)),
    )


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
