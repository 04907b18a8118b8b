"""`serve --workers N`: every worker knows what each Envoy ACKed, whichever worker its ADS
stream lives on.

Theory of operation
-------------------
Envoy keeps its one ADS stream on one worker, but spreads its ext_proc streams over
all of them. Each worker writes the versions its own ADS streams ACKed to a
host-local SQLite file the parent creates (`router.server.fleet`), a row per
(worker, node, stream), and reads the other workers' rows into its `AckBook`
(`AckBook.others`), both in a worker thread every `TICK` seconds and at once
after an ACK of its own: the request path only reads the book.

A worker's rows count while its heartbeat is younger than `TTL`; a worker that
died leaves rows that count a little longer, which only holds the view back
(a stale row names what Envoy held, and a node's view is what all its streams
hold). The file is fresh at every start of `serve --workers N`, so a router
restarted never trusts a stream of the router before it: an Envoy with no row
anywhere holds nothing this router published, and is refused 503 xds-pending
until its ADS stream ACKs, as with one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable

from router.xds.acks import AckBook, Held

OPEN_WAIT_S = 10.0  # how long opening the file waits for the other workers opening it

log = logging.getLogger("hybrid_router.xds")

TICK = 0.1  # seconds between exchanges
TTL = 3.0  # a worker whose heartbeat is older no longer counts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS acks (worker INTEGER, node TEXT, stream INTEGER, cds TEXT,
                                 eds TEXT, PRIMARY KEY (worker, node, stream));
CREATE TABLE IF NOT EXISTS beats (worker INTEGER PRIMARY KEY, at REAL);
"""


class SharedAcks:
    """One worker's side of the host-local ACK file."""

    def __init__(self, path: str, worker: int, *, ttl: float = TTL) -> None:
        """Open (creating) the file at `path` as worker `worker`."""
        self.path, self.worker, self.ttl = path, worker, ttl
        # the workers open the file at once: the schema waits out the others', an exchange
        # only a second
        self._db = sqlite3.connect(path, timeout=OPEN_WAIT_S, isolation_level=None,
                                   check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout = 1000")
        self._lock = threading.Lock()  # an exchange cancelled on the loop runs on in its thread

    def exchange(self, mine: Iterable[Held]) -> list[Held]:
        """Write this worker's rows and heartbeat; the live other workers' rows."""
        with self._lock:
            return self._exchange(list(mine))

    def _exchange(self, mine: list[Held]) -> list[Held]:
        now = time.time()
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute("DELETE FROM acks WHERE worker = ?", (self.worker,))
            cur.executemany("INSERT INTO acks VALUES (?, ?, ?, ?, ?)",
                            [(self.worker, *row) for row in mine])
            cur.execute("INSERT OR REPLACE INTO beats VALUES (?, ?)", (self.worker, now))
            rows = cur.execute(
                "SELECT a.worker * 1000000000 + a.stream, a.node, a.cds, a.eds FROM acks a "
                "JOIN beats b ON a.worker = b.worker WHERE a.worker != ? AND b.at > ?",
                (self.worker, now - self.ttl)).fetchall()
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return [Held(node, stream, cds, eds) for stream, node, cds, eds in rows]

    def close(self) -> None:
        """Drop this worker's rows (its streams end with it) and close the file."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("DELETE FROM acks WHERE worker = ?", (self.worker,))
            self._db.close()


def share_acks(path: str | None, book: AckBook, worker: int) -> list[asyncio.Task[None]]:
    """With `path` (`serve --acks-file`), the task that shares `book` with the other
    workers as worker `worker`; none without."""
    if not path:
        return []
    return [asyncio.create_task(keep_shared(book, SharedAcks(path, worker)))]


async def keep_shared(book: AckBook, shared: SharedAcks) -> None:
    """Exchange `book`'s own streams for the other workers' until cancelled, then leave."""
    try:
        while True:
            try:
                others = await asyncio.to_thread(shared.exchange, book.mine())
            except sqlite3.Error as exc:  # the previous rows stand; the next tick retries
                log.warning("ACK file %s: %s", shared.path, exc)
            else:
                book.others(others)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(book.changed.wait(), TICK)
            book.changed.clear()
    finally:
        shared.close()
