"""Let the collector run on a host's CPython 3.8 or 3.9, which lifescope's UI does not support.

Why a shim rather than rewriting the collector in 3.8 Python: the collector's code (probes,
samples, the stream writer) uses five things newer than 3.8, none of which changes what it
does — ``dataclass(slots=True)`` (rebuilt as 3.10 does it), ``zip(strict=...)`` (a check only),
``functools.cache``, ``importlib.resources.files`` (on files the bundle has extracted), and
subscripting ``collections.abc`` types at import time (annotations only). Filling those in,
in the remote collector's own process only and only on an old interpreter, keeps one source
for the collector; a test runs the bundled collector under CPython 3.8 against a real target,
so a sixth newer feature fails there, not on a user's host. Everything else the collector
needs stayed within 3.8 (`str.removesuffix` was replaced at its call sites).

Runs before lifescope is imported: stdlib only, 3.8 syntax.
"""

import builtins
import collections.abc
import dataclasses
import functools
import importlib.resources
import pathlib
import sys

NEEDED = sys.version_info < (3, 10)


def _add_slots(cls):
    """What 3.10's ``dataclass(slots=True)`` does: the same class rebuilt with ``__slots__``.
    Kept, not dropped, because the netlink reader builds rows through the slot descriptors."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    body = dict(cls.__dict__)
    body["__slots__"] = names
    for name in (*names, "__dict__", "__weakref__"):
        body.pop(name, None)  # defaults live in __init__; a class attribute would clash
    rebuilt = type(cls)(cls.__name__, cls.__bases__, body)
    rebuilt.__qualname__ = cls.__qualname__
    return rebuilt


def install() -> None:
    """Idempotent; does nothing on 3.10+."""
    if not NEEDED or getattr(builtins, "_lifescope_compat", False):
        return
    builtins._lifescope_compat = True  # type: ignore[attr-defined]

    original_dataclass = dataclasses.dataclass

    def dataclass(cls=None, **kwargs):
        slots = kwargs.pop("slots", False)

        def wrap(cls):
            made = original_dataclass(cls, **kwargs)
            return _add_slots(made) if slots else made

        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = dataclass

    original_zip = builtins.zip

    def zip_(*iterables, strict=False):
        return original_zip(*iterables)

    builtins.zip = zip_  # type: ignore[misc, assignment]  # typeshed has zip as a class; replaced on 3.8-3.9 only

    if not hasattr(functools, "cache"):
        functools.cache = functools.lru_cache(maxsize=None)

    if not hasattr(importlib.resources, "files"):

        def files(package):
            name = package if isinstance(package, str) else package.__name__
            module = sys.modules.get(name) or __import__(name, fromlist=["_"])
            return pathlib.Path(module.__file__).parent

        importlib.resources.files = files

    # `Emit = Callable[[Sample], None]` at module level: 3.9 made these subscriptable.
    for name in ("Callable", "Iterable", "Iterator", "Sequence", "Mapping", "MutableMapping",
                 "Generator", "Awaitable", "Coroutine", "AsyncIterator", "Set", "MutableSet",
                 "MutableSequence", "Collection", "Container", "Hashable", "Sized", "Reversible",
                 "KeysView", "ItemsView", "ValuesView", "MappingView", "AsyncIterable",
                 "AsyncGenerator"):  # fmt: skip
        cls = getattr(collections.abc, name, None)
        if cls is not None and "__class_getitem__" not in vars(cls):
            cls.__class_getitem__ = classmethod(lambda cls, item: cls)
