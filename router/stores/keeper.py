"""The budget keeper: one worker thread that owns every call to the budget store.

Theory of operation
-------------------
The request path admits and settles against the ledger in memory
(`router.core.budget`) and never calls a store. The keeper does, on its own
thread, one *round* every `tick` seconds (and at once when a request waits for
a lease), each one exchange with the store (`Backend.exchange`; with Redis one
round trip, nothing at all when there is nothing to write or ask):

1. flush: take the ledger's outbox and write it to the store in order, as one
   group (a transaction, a pipeline). A failed write leaves the group at the
   head of the keeper's queue, to be retried whole, first, after `retry`
   seconds; every store applies a replayed group idempotently, so a write
   whose reply was lost counts nothing twice. Only a successful write is
   acknowledged to the ledger (`flushed`);
2. maintain: a shared store grows, renews or returns each book's lease and
   reads the fleet's standing (`router.stores.leases`), after the flush in
   the same exchange; an authoritative one has nothing to do.

Rounds are also held to `rate` a second (`router.stores.pace`), so a request
that waits for a lease usually gets a round at once, and requests waiting
without pause cannot make more: one router's load on the store has a bound
whatever the request rate. A request that asked while a round ran, when the
next round must wait for a token, plans again on what that round got rather
than outwait its 50 ms (a cold router's first burst took three rounds).

A store can also answer and have forgotten what it held (flushed, restarted
empty, its file deleted): it then raises `StoreLost`. The keeper logs it as an
error, counts it (`on_lost`: `router_store_lost_total`) and, before anything
else, has the store rebuild the period's spend from what this process proved
it spent (`Backend.rebuild`); until that succeeds nothing is written and, with
a shared store, cloud spend stays within the lease already held. The period
never starts over.

The ledger is shared under a lock held only while memory changes, never across
I/O. So a store that is slow, down or blackholed delays only this thread:
edge traffic never waits, cloud traffic spends what its lease already holds
and is throttled past it, and its settlements queue in order until the store
answers again. `close` flushes what is queued (a few tries), gives leases
back, and logs what it could not write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from router.core.budget import BudgetLedger, Entry, Settled
from router.stores.pace import Pace

log = logging.getLogger(__name__)
BATCH = 5000  # entries per write: bounds one transaction or pipeline


class BudgetStoreError(RuntimeError):
    """A budget store could not be opened, locked, trusted or written."""


class StoreDown(BudgetStoreError):
    """The store did not take a write or answer a call; the keeper retries later."""


class StoreLost(StoreDown):
    """The store answers but lost the spend it held; the keeper has it rebuilt."""


class Backend(Protocol):
    """What the keeper needs of a store (SQLite, Redis)."""

    kind: str  # the `store` label of router_store_errors_total
    leased: bool  # admission needs a lease from this store

    def open(self, ledger: BudgetLedger) -> None:
        """Load durable state into `ledger`; raise BudgetStoreError if the store is unusable."""
        ...

    def write(self, entries: list[Entry]) -> None:
        """Apply `entries` in order, idempotently; raise StoreDown if not all applied."""
        ...

    def exchange(self, entries: list[Entry], ledger: BudgetLedger, mono: float,
                 written: Callable[[list[Entry]], None]) -> bool:
        """Write `entries` (then `written(entries)`), then keep leases and standings current;
        whether the store was called. Raise StoreDown when it does not answer."""
        ...

    def release(self, ledger: BudgetLedger) -> None:
        """Give back what this process holds in the store (at exit)."""
        ...

    def rebuild(self, ledger: BudgetLedger) -> str:
        """After StoreLost: write back what this process proves was spent; what it did."""
        ...

    def close(self) -> None:
        """Release connections, files and locks."""
        ...


def _resolve(fut: asyncio.Future[bool], ok: bool) -> None:
    if not fut.done():
        fut.set_result(ok)


class BudgetKeeper:
    """Owns a ledger and the store behind it; see the module docstring."""

    def __init__(self, backend: Backend | None, *, tick: float = 0.05, retry: float = 0.5,
                 rate: float = math.inf, burst: float = 2.0,
                 on_error: Callable[[], None] | None = None,
                 on_lost: Callable[[], None] | None = None) -> None:
        """Keep `backend` (None: memory, nothing to keep) in step with a fresh ledger."""
        self.backend = backend
        self.kind = backend.kind if backend is not None else "memory"
        self.tick, self.retry = tick, retry
        self.pace = Pace(tick, rate, burst, time.monotonic())
        self.on_error, self.on_lost = on_error, on_lost
        self.lost = 0  # times the store was found to have forgotten
        self._rebuild = False
        self.ledger = BudgetLedger(leased=backend is not None and backend.leased,
                                   journal=backend is not None, guard=threading.Lock())
        self.errors = 0
        self._queue: list[Entry] = []  # taken from the ledger, not yet written
        self._cv = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._urgent = self._stop = self._busy = self._closed = False
        self._round = 0
        self._down_until = -math.inf
        self._healthy = True
        self._thread: threading.Thread | None = None

    def start(self) -> BudgetKeeper:
        """Load the store's state into the ledger (before serving), then start the thread."""
        if self.backend is not None:
            self.backend.open(self.ledger)
            self._thread = threading.Thread(target=self._run, name="budget-keeper",
                                            daemon=True)
            self._thread.start()
        return self

    @property
    def down(self) -> bool:
        """True while the store failed its last call and the retry time has not come."""
        return time.monotonic() < self._down_until

    @property
    def degraded(self) -> bool:
        """True while the store is down or spend is waiting to be written."""
        return self.down or bool(self._queue) or self.ledger.backlog() > 0

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and \
                        (wait := self.pace.wait(time.monotonic(), self._urgent)) > 0:
                    self._cv.wait(wait)
                if self._stop:
                    waiters, self._waiters = self._waiters, []
                    self._wake(waiters, False)
                    return
                self.pace.begin(time.monotonic())
                self._urgent, self._busy = False, True
                waiters, self._waiters = self._waiters, []
            ok = self._cycle()
            with self._cv:
                self._round += 1
                self._busy = False
                if self._waiters and self.pace.wait(time.monotonic(), True) > 0:
                    # asked while this round ran, and the next one must wait for a token
                    # (longer than a request waits): plan again on the lease it just got
                    waiters += self._waiters
                    self._waiters = []
                self._cv.notify_all()
            self._wake(waiters, ok)

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]],
              ok: bool) -> None:
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's loop has closed
                loop.call_soon_threadsafe(_resolve, fut, ok)

    def _cycle(self) -> bool:
        """Flush, then maintain; False when the store is down (no call made or one failed)."""
        backend = self.backend
        assert backend is not None
        if self.down:
            return False
        try:
            self._rebuilt(backend)
            self._queue.extend(self.ledger.drain())
            while len(self._queue) > BATCH:  # a backlog: all but the last group alone
                self._write(backend)
            called = backend.exchange(list(self._queue), self.ledger, time.monotonic(),
                                      self._written)
        except Exception as exc:  # whatever the store does, keep the thread
            self._failed(exc)
            return False
        if not called:  # nothing to write or ask: the round is free
            with self._cv:
                self.pace.refund()
        if not self._healthy:
            self._healthy = True
            log.warning("budget store (%s) answers again; queued spend flushed", self.kind)
        return True

    def _rebuilt(self, backend: Backend) -> None:
        """Have a store that forgot rebuilt before anything is written to it again."""
        if self._rebuild:
            log.warning("budget store (%s): %s", self.kind, backend.rebuild(self.ledger))
            self._rebuild = False

    def _flush(self, backend: Backend) -> None:
        self._queue.extend(self.ledger.drain())
        while self._queue:
            self._write(backend)

    def _write(self, backend: Backend) -> None:
        group = self._queue[:BATCH]
        backend.write(group)
        self._written(group)

    def _written(self, group: list[Entry]) -> None:
        """The store applied `group`, the head of the queue."""
        del self._queue[:len(group)]
        self.ledger.flushed(group)

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.on_error is not None:
            self.on_error()
        self._down_until = time.monotonic() + self.retry
        if isinstance(exc, StoreLost):
            self._lose(exc)
        elif self._healthy:
            self._healthy = False
            if isinstance(exc, StoreDown):
                log.warning("%s; admitting within leases, spend queued (%d entries)", exc,
                            len(self._queue))
            else:
                log.error("budget store (%s) failed: %r; retrying", self.kind, exc,
                          exc_info=exc)

    def _lose(self, exc: StoreLost) -> None:
        """The store forgot: say so every time, count it, rebuild before writing again."""
        self.lost += 1
        self._healthy = False
        if self.on_lost is not None:
            self.on_lost()
        self._rebuild = True
        leased = self.backend is not None and self.backend.leased
        then = ("admitting cloud spend only within the lease this router holds until the "
                "period's spend is rebuilt from the routers' journals") if leased else \
            "admission goes on from this router's memory, which is whole; writing it back"
        log.error("%s; %s (%d updates queued)", exc, then, len(self._queue))

    async def wait_topup(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) for the keeper's next round with the store.

        True when that round reached the store (a lease may have grown: plan again);
        False at once for a store that grants no leases or is down, or on timeout.
        """
        if self.backend is None or not self.backend.leased or self.down \
                or self._thread is None:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        with self._cv:
            self._waiters.append((loop, fut))
            self._urgent = True
            self._cv.notify_all()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False

    def wait_round(self, timeout: float) -> bool:
        """Block (a test or tool thread, never the event loop) until a full round ran."""
        deadline = time.monotonic() + timeout
        with self._cv:
            target = self._round + (2 if self._busy else 1)
            self._urgent = True
            self._cv.notify_all()
            while self._round < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cv.wait(left)
        return not self.down

    def close(self, tries: int = 3) -> list[Entry]:
        """Stop the thread, flush (`tries` attempts) and give leases back; what was lost."""
        backend = self.backend
        if backend is None or self._closed:
            return []
        self._closed = True
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        for attempt in range(tries):
            try:
                self._rebuilt(backend)
                self._flush(backend)
                backend.release(self.ledger)
                break
            except Exception as exc:
                self._failed(exc)
                if attempt + 1 < tries:
                    time.sleep(self.retry)
        lost = self._queue + self.ledger.drain()
        if lost:
            usd = sum(e.actual for e in lost if isinstance(e, Settled))
            log.error("budget store (%s): %d updates (%.6f USD settled) could not be written "
                      "at exit and are lost", self.kind, len(lost), usd)
        backend.close()
        return lost
