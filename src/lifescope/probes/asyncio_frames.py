"""What an asyncio await chain's frames mean, and their source lines: pure functions.

Split from the task reader (issue 14): nothing here reads memory.  Each CPython version's
line table is decoded here (``co_lnotab`` 3.8-3.9, ``co_linetable`` 3.10, the PEP 657 location
table 3.11+), and the frames that say what a chain waits for (``asyncio.sleep``,
``Event.wait``...) or which tasks it waits on (``gather``, ``wait``, ``TaskGroup``) are named.
"""

from __future__ import annotations

# Why by frame: the awaited object is a bare Future in all these cases; the frame that created
# it says what it stands for.
_AWAIT_BY_FRAME: dict[tuple[str, str], str] = {
    ("asyncio/tasks.py", "sleep"): "sleep",
    ("asyncio/tasks.py", "__sleep0"): "sleep",
    ("asyncio/tasks.py", "_wait"): "wait",
    ("asyncio/tasks.py", "wait_for"): "wait_for",
    ("asyncio/locks.py", "Event.wait"): "event",
    ("asyncio/locks.py", "Lock.acquire"): "lock",
    ("asyncio/locks.py", "Condition.wait"): "condition",
    ("asyncio/locks.py", "Condition.wait_for"): "condition",
    ("asyncio/locks.py", "Semaphore.acquire"): "semaphore",
    ("asyncio/locks.py", "BoundedSemaphore.acquire"): "semaphore",
    ("asyncio/locks.py", "Barrier.wait"): "barrier",
    ("asyncio/locks.py", "Barrier._block"): "barrier",
    ("asyncio/locks.py", "Barrier._wait"): "barrier",
    ("asyncio/queues.py", "Queue.get"): "queue",
    ("asyncio/queues.py", "Queue.put"): "queue",
    ("asyncio/queues.py", "Queue.join"): "queue",
    ("asyncio/streams.py", "StreamReader._wait_for_data"): "read",
    ("asyncio/streams.py", "StreamReader.read"): "read",
    ("asyncio/streams.py", "StreamReader.readline"): "read",
    ("asyncio/streams.py", "StreamReader.readuntil"): "read",
    ("asyncio/streams.py", "StreamReader.readexactly"): "read",
    ("asyncio/streams.py", "StreamWriter.drain"): "write",
    ("asyncio/streams.py", "FlowControlMixin._drain_helper"): "write",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_recv"): "read",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_recv_into"): "read",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_accept"): "accept",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_sendall"): "write",
    ("asyncio/selector_events.py", "BaseSelectorEventLoop.sock_connect"): "connect",
    ("asyncio/base_events.py", "Server.serve_forever"): "serve",
    ("asyncio/base_events.py", "BaseEventLoop.sock_connect"): "connect",
}
# Labels whose frame awaits a future it created itself (never a task the caller passed in):
# for these the awaited future's type adds nothing, and reading it is skipped — a quarter of
# the reads of a pass over thousands of parked sleeps or lock waits.
_PLAIN_FUTURE_LABELS = frozenset(
    {
        "sleep",
        "event",
        "lock",
        "condition",
        "semaphore",
        "barrier",
        "queue",
        "read",
        "write",
        "accept",
        "connect",
        "serve",
    }
)


# Frames that wait for *several* tasks, and where those tasks are: the first local of the frame
# (``fs`` of ``asyncio.wait``, ``self`` of ``TaskGroup.__aexit__``, the wrapped task of 3.8-3.11
# ``wait_for``).  A ``gather`` is found from the awaited ``_GatheringFuture`` instead.
_CHILDREN_BY_FRAME: dict[tuple[str, str], str] = {
    ("asyncio/tasks.py", "_wait"): "wait",
    ("asyncio/tasks.py", "wait_for"): "wait_for",
    ("asyncio/taskgroups.py", "TaskGroup.__aexit__"): "taskgroup",
    ("asyncio/taskgroups.py", "TaskGroup._aexit"): "taskgroup",  # 3.14: __aexit__ awaits it
}


def line_from_lnotab(table: bytes, firstlineno: int, addr: int) -> int:
    """3.8-3.9 ``co_lnotab``: (byte-offset increment, signed line increment) pairs; ``addr``
    is a byte offset into ``co_code``."""
    line = firstlineno
    at = 0
    for i in range(0, len(table) - 1, 2):
        at += table[i]
        if at > addr:
            break
        delta = table[i + 1]
        line += delta - 256 if delta >= 128 else delta
    return line


def line_from_linetable310(table: bytes, firstlineno: int, addr: int) -> int | None:
    """3.10 ``co_linetable``: (byte-length, signed line delta) pairs, -128 meaning "no line";
    ``addr`` is a byte offset (``f_lasti * 2``)."""
    line = firstlineno
    start = 0
    for i in range(0, len(table) - 1, 2):
        end = start + table[i]
        delta = table[i + 1]
        entry: int | None
        if delta == 128:  # -128 as an unsigned byte
            entry = None
        else:
            line += delta - 256 if delta > 128 else delta
            entry = line
        if start <= addr < end:
            return entry
        start = end
    return None


def _varint(table: bytes, i: int) -> tuple[int, int]:
    read = table[i]
    i += 1
    value = read & 63
    shift = 0
    while read & 64:
        read = table[i]
        i += 1
        shift += 6
        value |= (read & 63) << shift
    return value, i


def _svarint(table: bytes, i: int) -> tuple[int, int]:
    value, i = _varint(table, i)
    return (-(value >> 1) if value & 1 else value >> 1), i


def line_from_locations(table: bytes, firstlineno: int, index: int) -> int | None:
    """3.11+ location table (PEP 657, ``Objects/locations.md``); ``index`` counts code units.

    Each entry starts with a byte ``1CCCCLLL``: code C and length L+1 code units.  Code 15 has
    no location, 14 is the long form (signed line delta, end line, columns as varints), 13 has
    a line delta but no columns, 10-12 are one-line forms with delta C-10, 0-9 short forms on
    the same line.
    """
    line = firstlineno
    at = 0
    i = 0
    n = len(table)
    try:
        while i < n:
            first = table[i]
            i += 1
            if not first & 0x80:
                return None  # not an entry start: corrupt or torn
            code = (first >> 3) & 15
            length = (first & 7) + 1
            entry: int | None
            if code == 15:
                entry = None
            elif code == 14:
                delta, i = _svarint(table, i)
                line += delta
                entry = line
                for _ in range(3):
                    _, i = _varint(table, i)
            elif code == 13:
                delta, i = _svarint(table, i)
                line += delta
                entry = line
            elif code >= 10:
                line += code - 10
                entry = line
                i += 2
            else:
                entry = line
                i += 1
            if at <= index < at + length:
                return entry
            at += length
    except IndexError:
        return None
    return None


def _lookup_by_frame(table: dict[tuple[str, str], str], file: str, qualname: str) -> str | None:
    file = file.replace("\\", "/")
    for (suffix, name), label in table.items():
        if qualname == name and file.endswith(suffix):
            return label
    return None


def awaiting_from_frame(file: str, qualname: str) -> str | None:
    """What an await chain waits on, judged by its innermost frame (None if not a known one)."""
    return _lookup_by_frame(_AWAIT_BY_FRAME, file, qualname)
