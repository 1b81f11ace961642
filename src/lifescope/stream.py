"""The sample stream: how the collector talks to the UI, and what a recording is.

Format (`lifescope.stream/1`), one JSON document per line (UTF-8, `\\n`-terminated):

* line 1, the header: `{"schema": "lifescope.stream/1", "kinds": {KIND: [FIELD, ...], ...}}`
  naming, for every record kind and nested type, its fields in order;
* every further line: `[KIND, value1, value2, ...]`, values in the header's field order;
  nested samples are arrays in their own kind's order, tuples are arrays, absent is `null`.

Why this shape: positional arrays keep records about 3× smaller than objects, while the
header keeps them self-describing — a decoder maps the writer's field names onto its own, so
a newer lifescope reads an older stream (missing fields take their defaults) and an older one
skips fields it does not know. Lines are independent, so a stream cut anywhere (a killed
collector, a truncated recording) decodes up to the last complete line, and the error names
the byte offset where it stopped.

Kinds are added without a new version, because an older reader skips a kind its header
names but it does not know. Added since the first `/1` streams: `LinkGap` (a remote
session's link was down between two times; written by the UI side of `attach ssh://...`
into its local recording).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from lifescope import samples

SCHEMA = "lifescope.stream/1"


def _nested(kinds: Iterable[type]) -> tuple[type, ...]:
    """The dataclasses samples are built of (`ThreadStat` in `ThreadsSample`, ...), found
    through the names in their fields' annotations, innermost first, so that a new nested
    type needs no list of its own. Read as text, not with `typing.get_type_hints`: the
    collector writes this header on a host's 3.8, where `int | None` does not evaluate."""
    found: dict[type, None] = {}

    def visit(cls: type) -> None:
        for field in dataclasses.fields(cls):
            for name in re.findall(r"[A-Za-z_]\w*", str(field.type)):
                inner = getattr(samples, name, None)
                if (
                    isinstance(inner, type)
                    and dataclasses.is_dataclass(inner)
                    and inner not in found
                    and inner not in kinds
                ):
                    visit(inner)
                    found[inner] = None

    for cls in kinds:
        visit(cls)
    return tuple(found)


_NESTED = _nested(samples.SAMPLE_TYPES)
_KINDS: dict[str, type] = {cls.__name__: cls for cls in (*samples.SAMPLE_TYPES, *_NESTED)}


class StreamError(Exception):
    """A stream that cannot be read past `offset` (bytes from the start)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte offset {offset}")
        self.offset = offset


def header_line() -> bytes:
    kinds = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in _KINDS.items()}
    return _dump({"schema": SCHEMA, "kinds": kinds})


def _dump(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


_SCALARS = frozenset({str, int, float, bool, type(None)})
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """A field-order tuple getter per dataclass: `dataclasses.fields` on every value made
    encoding a 10k-socket sample cost ~80 ms."""
    getter = _GETTERS.get(cls)
    if getter is None:
        names = [f.name for f in dataclasses.fields(cls)]
        many = operator.attrgetter(*names)
        getter = many if len(names) > 1 else (lambda value: (many(value),))
        _GETTERS[cls] = getter
    return getter


def _plain(value: object) -> object:
    cls = type(value)
    if cls in _SCALARS:
        return value
    if cls is tuple or cls is list:
        return [_plain(v) for v in value]  # type: ignore[attr-defined]
    if dataclasses.is_dataclass(cls):
        return [_plain(v) for v in _getter(cls)(value)]
    return value


def encode(sample: samples.Sample) -> bytes:
    """One record line. Floats keep microsecond precision; more would only cost bytes."""
    values = [_plain(v) for v in _getter(type(sample))(sample)]
    return _dump([type(sample).__name__, *(_round(v) for v in values)])


def _round(value: object) -> object:
    return round(value, 6) if isinstance(value, float) else value


Converter = Callable[[Any], Any]


class Decoder:
    """Turns record lines back into samples, using the field names the writer declared."""

    def __init__(self, header: dict[str, Any]) -> None:
        schema = header.get("schema")
        if not isinstance(schema, str) or not schema.startswith("lifescope.stream/"):
            raise ValueError(f"not a lifescope stream (schema {schema!r})")
        if schema != SCHEMA:
            raise ValueError(
                f"stream version {schema!r} is newer than this lifescope reads ({SCHEMA}); "
                "upgrade lifescope"
            )
        self._writer_fields: dict[str, list[str]] = header["kinds"]
        self._builders: dict[str, Converter] = {}

    def _builder(self, kind: str) -> Converter:
        builder = self._builders.get(kind)
        if builder is None:
            builder = self._make_builder(kind)
            self._builders[kind] = builder
        return builder

    def _make_builder(self, kind: str) -> Converter:
        cls = _KINDS.get(kind)
        if cls is None or kind not in self._writer_fields:
            return lambda values: None  # a kind from a newer writer: skip it
        hints = typing.get_type_hints(cls)
        ours = {f.name for f in dataclasses.fields(cls)}
        plan = [
            (i, name, self._converter(hints[name]))
            for i, name in enumerate(self._writer_fields[kind])
            if name in ours
        ]

        if list(self._writer_fields[kind]) == [f.name for f in dataclasses.fields(cls)]:
            # The same layout as ours (a stream from this version): positional, and values
            # that need no conversion are passed as they are. ~2× faster on 10k sockets.
            convs = [conv for _, _, conv in plan]
            if all(conv is _identity for conv in convs):

                def build_same(values: list[Any]) -> Any:
                    return cls(*values)

                return build_same

            def build_positional(values: list[Any]) -> Any:
                return cls(*[conv(v) for conv, v in zip(convs, values, strict=False)])

            return build_positional

        def build(values: list[Any]) -> Any:
            return cls(**{name: conv(values[i]) for i, name, conv in plan if i < len(values)})

        return build

    def _converter(self, hint: Any) -> Converter:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            conv = self._converter(inner[0]) if len(inner) == 1 else _identity
            if conv is _identity:
                return _identity
            return lambda v: None if v is None else conv(v)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                item = self._converter(args[0])
                return lambda v: tuple(item(x) for x in v)
            convs = [self._converter(a) for a in args]
            return lambda v: tuple(c(x) for c, x in zip(convs, v, strict=False))
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kind = hint.__name__
            resolved: list[Converter] = []

            def nested(v: Any) -> Any:
                if not resolved:  # built lazily: a type may nest itself
                    resolved.append(self._builder(kind))
                return resolved[0](v)

            return nested
        return _identity

    def decode(self, line: bytes) -> samples.Sample | None:
        record = json.loads(line)
        if not isinstance(record, list) or not record or not isinstance(record[0], str):
            raise ValueError("record is not [kind, ...]")
        return self._builder(record[0])(record[1:])


def _identity(value: Any) -> Any:
    return value


def read(source: IO[bytes]) -> Iterator[samples.Sample]:
    """Yield every sample of a stream; raise StreamError where it stops making sense.

    Everything before a bad line has been yielded already, so a caller that catches the
    error keeps the good prefix — this is what makes a recording cut by SIGKILL replayable.
    """
    offset = 0
    first = source.readline()
    if not first:
        raise StreamError("empty stream (no header)", 0)
    try:
        decoder = Decoder(json.loads(first))
    except (ValueError, KeyError, TypeError) as exc:
        raise StreamError(f"bad header: {exc}", 0) from exc
    offset += len(first)
    for line in source:
        if not line.endswith(b"\n"):
            raise StreamError("truncated record", offset)
        try:
            sample = decoder.decode(line)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise StreamError(f"corrupt record ({exc})", offset) from exc
        offset += len(line)
        if sample is not None:
            yield sample
