"""What every scenario app shares, so one truth means the same work on every server.

Each app answers the same paths; what a path does is its truth:

* ``/ping``: nothing (readiness, and the one request an idle keep-alive client makes);
* ``/sleep``: the handler waits ``WAIT_S`` (L4);
* ``/db``: the handler runs a real, slow sqlite query (~0.3 s, L4; sqlite releases the GIL);
  ``/db-long`` (http.server only) the same for ~4 s: a connection silent for that long is
  still a request being served, not an idle keep-alive;
* ``/mw-*``: a middleware waits ``WAIT_S``, the handler does nothing (L3);
* ``/big``: a large JSON document serialised by the framework (L5);
* ``/stream``: an ``BODY_BYTES`` body for clients that read it slowly (L5);
* ``/block`` (asyncio servers): ``time.sleep(STALL_S)`` inside an ``async def`` — one
  ~300 ms event-loop stall per request.

The apps are started from this folder (it is on ``PYTHONPATH``), never imported by the tests.
"""

from __future__ import annotations

import sqlite3
import threading

WAIT_S = 0.3
STALL_S = 0.3
BODY_BYTES = 16 * 2**20
BODY = b"x" * BODY_BYTES
BIG = [
    {"id": i, "name": f"item {i}", "tags": ["a", "b", "c"], "score": i * 0.5} for i in range(60000)
]

_local = threading.local()
QUERY = "select count(*) from t a, t b where a.x < ? and b.x < ? and a.x % 7 = b.x % 5"
ROWS = 300
"""The join scans the 20,000-row table once per row below the bound (~80 ns a row here):
ROWS ~0.3 s, LONG_ROWS ~4 s."""
LONG_ROWS = 4000


def _connection() -> sqlite3.Connection:
    """One in-memory database per thread (sqlite connections are not shared across threads)."""
    db = getattr(_local, "db", None)
    if db is None:
        db = sqlite3.connect(":memory:")
        db.execute("create table t(x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(20000)])
        _local.db = db
    return db


def slow_query(bound: int = ROWS) -> int:
    """Sqlite work, all of it inside the driver (which releases the GIL)."""
    found = _connection().execute(QUERY, (bound, bound)).fetchall()
    return int(found[0][0])
