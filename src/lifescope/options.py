"""The collector's options, declared once.

`record` runs the collector in-process; `attach` and `snapshot` start it as a child. The first
version defined `--http-lines` and `--full-rate` three times, turned parsed arguments back
into argv twice and parsed them again in the collector, with a different default and help on
the way. Here each option is one entry of `_ARGUMENTS`: a subcommand adds the ones it takes
(`add_arguments`), reads them back (`from_namespace`), and a child collector gets them as argv
(`argv`) — the only place options become text.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lifescope.samples import PROBES

PROMETHEUS_WINDOW_S = 10.0
RECORD_STACKS_RUN = 5.0
"""py-spy run length for `record -o FILE`: a fifth of the py-spy starts, stacks 5 s late."""


@dataclass(frozen=True, slots=True)
class CollectorOptions:
    probes: tuple[str, ...] = PROBES
    seconds: float | None = None
    output: str | None = None
    """Where the stream goes: a file (a recording), ``-`` or None for standard output."""
    record: str | None = None
    """A recording kept beside the stream (`attach --record`)."""
    record_fd: int | None = None
    """The same, as a file the UI opened and passed down (`privsep`: a root collector never
    opens a path the unprivileged UI names)."""
    force: bool = False
    http_lines: bool = False
    full_rate: bool = False
    lean: bool = False
    """For a thin link (`attach ssh://`): every clock-driven probe at a quarter of its rate."""
    keep_command_line: bool = False
    prometheus: str | None = None
    prometheus_allow_remote: bool = False
    prometheus_window: float = PROMETHEUS_WINDOW_S
    stacks_run: float = 1.0
    """Seconds each py-spy process records (after the first, always 1 s). The stream always
    gets 1-second stacks windows; a longer run is split, so fewer py-spy starts (each one
    re-attaches and re-reads symbols, ~15 ms of CPU) cost only latency: `record` to a file,
    which nobody watches live, uses `RECORD_STACKS_RUN`."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
        """Add the named options (`CollectorOptions` field names) to a subcommand."""
        for name in names:
            flags, kwargs = _ARGUMENTS[name]
            parser.add_argument(*flags, dest=name, **kwargs)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, **overrides: Any) -> CollectorOptions:
        """The options a parsed command line holds; fields it did not take keep defaults."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = getattr(args, field.name, None)
            if value is not None and value is not False:
                values[field.name] = value
        if isinstance(values.get("probes"), str):
            values["probes"] = tuple(n for n in values["probes"].split(",") if n)
        values.update(overrides)
        return cls(**values)

    def argv(self) -> list[str]:
        """The command-line form, for a collector started as another process."""
        out: list[str] = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default:
                continue
            flag = _ARGUMENTS[field.name][0][-1]
            if value is True:
                out.append(flag)
            elif field.name == "probes":
                out += [flag, ",".join(value)]
            else:
                out += [flag, str(value)]
        return out

    def unknown_probes(self) -> list[str]:
        return sorted(set(self.probes) - set(PROBES))


DEFAULTS = CollectorOptions()


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive, e.g. 3")
    return value


_ARGUMENTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "probes": (
        ("--probes",),
        {
            "default": None,
            "metavar": "NAMES",
            "help": f"comma-separated probes ({','.join(PROBES)})",
        },
    ),
    "seconds": (
        ("--seconds",),
        {"type": _seconds, "default": None, "help": "stop after N seconds"},
    ),
    "output": (
        ("-o", "--output"),
        {"metavar": "FILE", "default": None, "help": "write to FILE (created 0600; - for stdout)"},
    ),
    "record": (
        ("--record",),
        {"metavar": "FILE", "default": None, "help": "also record the session to FILE (0600)"},
    ),
    "record_fd": (("--record-fd",), {"type": int, "default": None, "help": argparse.SUPPRESS}),
    "stacks_run": (
        ("--stacks-run",),
        {"type": _seconds, "default": None, "metavar": "SECONDS", "help": argparse.SUPPRESS},
    ),
    "force": (
        ("--force",),
        {
            "action": "store_true",
            "help": "replace an existing regular file (never a link or device)",
        },
    ),
    "http_lines": (
        ("--http-lines",),
        {
            "action": "store_true",
            "help": "keep HTTP/1.x request/status lines from packets (opt-in)",
        },
    ),
    "full_rate": (
        ("--full-rate",),
        {
            "action": "store_true",
            "help": "never slow sampling down, even while the machine is saturated",
        },
    ),
    "lean": (
        ("--lean",),
        {
            "action": "store_true",
            "help": "for a thin link: sample at a quarter of the rates (about a quarter of the "
            "stream's bytes) and, over ssh://, compress the channel",
        },
    ),
    "keep_command_line": (
        ("--keep-command-line",),
        {
            "action": "store_true",
            "help": "keep the target's command line verbatim (default: passwords, tokens and URL "
            "credentials in it are redacted)",
        },
    ),
    "prometheus": (
        ("--prometheus",),
        {
            "metavar": "HOST:PORT",
            "default": None,
            "help": "serve the headline numbers as Prometheus metrics on HOST:PORT (loopback only "
            "unless --prometheus-allow-remote; PORT alone means 127.0.0.1:PORT)",
        },
    ),
    "prometheus_allow_remote": (
        ("--prometheus-allow-remote",),
        {"action": "store_true", "help": "allow --prometheus on a non-loopback address"},
    ),
    "prometheus_window": (
        ("--prometheus-window",),
        {
            "type": _seconds,
            "default": None,
            "metavar": "SECONDS",
            "help": f"window each scrape reports on (default {PROMETHEUS_WINDOW_S:g})",
        },
    ),
}
