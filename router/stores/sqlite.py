"""A durable budget store for one router process: SQLite in WAL mode.

Theory of operation
-------------------
The ledger (`router.core.budget`) is authoritative and answers every request
from memory; the keeper's thread (`router.stores.keeper`) writes what it
journals here, in order, one transaction per group (group commit):

- a *hold* row for each admitted cloud request (its estimate and admission time);
- each settlement: its hold row goes, and the actual cost is added to the
  (tenant, period, second) row it is filed under and to the period's settled
  total, in the same transaction;
- each bill: its account row is rewritten and the rows it covers deleted.

On open the accounts are rebuilt from those rows, and hold rows left by a
process that died without settling them (kill -9, power loss) are settled at
their estimate, once: an admitted request most likely ran, so its spend must
not vanish. So a SIGTERM loses nothing (the keeper flushes at exit), and a
kill -9 loses only what was admitted within the last flush interval (the
keeper's `tick`, 0.05 s) and not written yet; anything admitted before counts,
at its actual cost if its settlement was written, else at its estimate.

Durability: WAL with `synchronous=NORMAL` keeps every committed transaction
through a process crash or kill; `sqlite:PATH?synchronous=FULL` also survives
power loss, at the cost of an fsync per group.

A file deleted or replaced under a running router is found at its next write
or keeper round and written again from memory (`sqlite_file`); nothing the
process held is lost, and the loss is logged and counted.

One writer per file: the store holds an exclusive `flock` on PATH.lock while it
is open, so a second router on the same file fails to start (an error naming
the file and the holder's pid) rather than both spending one limit. A fleet
shares spend through `router.stores.redis`. The synchronous methods inherited
from `MemoryBudgetStore` keep their meaning for tools and tests; holds taken
with `reserve` live in memory only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from router.core.budget import (
    Account,
    Billed,
    BudgetLedger,
    Entry,
    Held,
    MemoryBudgetStore,
    Reservation,
    Settled,
)
from router.stores import sqlite_file
from router.stores.keeper import BudgetStoreError, StoreDown, StoreLost

__all__ = ["BudgetStoreError", "SqliteBudgetStore"]
log = logging.getLogger(__name__)
SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    tenant TEXT NOT NULL, period TEXT NOT NULL,
    billed REAL NOT NULL DEFAULT 0, billed_as_of REAL, settled REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, period));
CREATE TABLE IF NOT EXISTS unbilled (
    tenant TEXT NOT NULL, period TEXT NOT NULL, second REAL NOT NULL, usd REAL NOT NULL,
    PRIMARY KEY (tenant, period, second));
CREATE TABLE IF NOT EXISTS hold (
    tenant TEXT NOT NULL, period TEXT NOT NULL, rid INTEGER NOT NULL, at REAL NOT NULL,
    usd REAL NOT NULL, PRIMARY KEY (tenant, period, rid));
"""
Stmt = tuple[str, tuple[object, ...]]
Key = tuple[str, str, int]


def _key(res: Reservation) -> Key:
    return res.tenant, res.period, res.rid


class SqliteBudgetStore(MemoryBudgetStore):
    """Committed spend and admitted holds in a SQLite file; see the module docstring."""

    kind = "sqlite"
    leased = False

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL",
                 busy_timeout: float = 0.5) -> None:
        """Open (creating it and its directory if needed) and lock the store at `path`."""
        super().__init__()
        self.path, self._sync = sqlite_file.spec(path, synchronous)
        self._busy = busy_timeout
        self._lock = threading.RLock()
        self.recovered: list[Reservation] = []  # holds of a dead process, counted at open
        self._held: dict[Key, Reservation] = {}  # hold rows written, not yet settled
        self._fd = -1
        self._db: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None  # the file's (device, inode) once open
        try:
            self._connect()
            self._load()
            self._recover()
        except (OSError, sqlite3.Error, BudgetStoreError) as exc:
            self._release()
            if isinstance(exc, BudgetStoreError) and not isinstance(exc, StoreDown):
                raise
            raise BudgetStoreError(
                f"cannot open budget store sqlite:{self.path}: {exc}") from exc

    def _connect(self) -> None:
        """Lock and open the file at the path (creating it), and stamp a new epoch in it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = sqlite_file.lock(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False,
                                   isolation_level=None, timeout=self._busy)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={self._sync}")
        self._db.executescript(SCHEMA)
        self._ident = sqlite_file.identity(self.path)

    def _intact(self) -> None:
        """StoreLost when the file at the path is no longer the one this store opened."""
        why = sqlite_file.loss(self.path, self._ident)
        if why is not None:
            raise StoreLost(f"budget store sqlite:{self.path} lost its state: {why}")

    def _load(self) -> None:
        """Rebuild the in-memory accounts from the file."""
        assert self._db is not None
        for tenant, period, billed, as_of, settled in self._db.execute(
                "SELECT tenant, period, billed, billed_as_of, settled FROM account"):
            acct = self._acct(tenant, period)
            acct.billed = billed
            acct.billed_as_of = -math.inf if as_of is None else as_of
            acct.settled = settled
        for tenant, period, second, usd in self._db.execute(
                "SELECT tenant, period, second, usd FROM unbilled ORDER BY second"):
            self._acct(tenant, period).unbilled.append((second, usd))
        for acct in self.accounts.values():
            acct.unbilled_usd = math.fsum(usd for _, usd in acct.unbilled)

    def _recover(self) -> None:
        """Settle, at their estimate, the holds a process left when it died."""
        assert self._db is not None
        rows = list(self._db.execute("SELECT tenant, period, rid, at, usd FROM hold"))
        if not rows:
            return
        held = [Reservation(t, p, usd, rid, at) for t, p, rid, at, usd in rows]
        self._commit(self._apply([Settled(r, r.amount) for r in held], {}))
        self.recovered = held
        log.warning("budget store sqlite:%s: %d requests admitted by a process that stopped "
                    "before settling them counted at their estimate (%.6f USD)", self.path,
                    len(held), sum(r.amount for r in held))

    def open(self, ledger: BudgetLedger) -> None:
        """Hand every account's committed spend and bill to the ledger."""
        with self._lock:
            for (tenant, period), acct in self.accounts.items():
                ledger.restore(tenant, period, acct)

    def write(self, entries: list[Entry]) -> None:
        """One transaction for `entries`, in order; memory follows only if it commits."""
        with self._lock:
            self._intact()
            saved: dict[tuple[str, str], Account | None] = {}
            statements = self._apply(entries, saved)
            try:
                self._commit(statements)
            except StoreDown:
                for key, old in saved.items():
                    if old is None:
                        self.accounts.pop(key, None)
                    else:
                        self.accounts[key] = old
                raise
            for entry in entries:  # what a rebuild must write again
                if isinstance(entry, Held):
                    self._held[_key(entry.reservation)] = entry.reservation
                elif isinstance(entry, Settled):
                    self._held.pop(_key(entry.reservation), None)

    def _touch(self, saved: dict[tuple[str, str], Account | None], tenant: str,
               period: str) -> Account:
        key = (tenant, period)
        if key not in saved:
            old = self.accounts.get(key)
            saved[key] = None if old is None else old.copy()
        return self._acct(tenant, period)

    def _apply(self, entries: list[Entry], saved: dict[tuple[str, str], Account | None]
               ) -> list[Stmt]:
        """Apply `entries` to memory (saving what they change) and say how to write them."""
        ended = {_key(e.reservation) for e in entries if isinstance(e, Settled)}
        skipped: set[Key] = set()
        out: list[Stmt] = []
        for entry in entries:
            if isinstance(entry, Held):
                res = entry.reservation
                if _key(res) in ended:  # admitted and ended within one group: no row at all
                    skipped.add(_key(res))
                    continue
                out.append(("INSERT OR REPLACE INTO hold (tenant, period, rid, at, usd) "
                            "VALUES (?,?,?,?,?)", (*_key(res), res.at, res.amount)))
            elif isinstance(entry, Settled):
                res = entry.reservation
                covered = not self._touch(saved, res.tenant, res.period).add(res.at,
                                                                             entry.actual)
                if _key(res) not in skipped:
                    out.append(("DELETE FROM hold WHERE tenant=? AND period=? AND rid=?",
                                _key(res)))
                out += self._settle_sql(res, entry.actual, covered)
            else:
                acct = self._touch(saved, entry.account, entry.period)
                if acct.bill(entry.usd, entry.as_of):
                    out += self._bill_sql(entry.account, entry.period, acct)
        return out

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Release the hold and durably commit `actual` before returning."""
        with self._lock:
            acct = self._acct(reservation.tenant, reservation.period)
            acct.reserved = max(0.0, acct.reserved - reservation.amount)
            self.write([Settled(reservation, actual)])

    def apply_billing(self, tenant: str, period: str, usd: float,
                      as_of: float | None = None) -> None:
        """Record a bill durably; the settlement rows it covers are dropped."""
        self.write([Billed(tenant, period, usd, as_of)])

    def committed(self, tenant: str, period: str) -> float:
        """Committed spend: the bill plus router settlements it does not cover."""
        with self._lock:
            return super().committed(tenant, period)

    def reserved(self, tenant: str, period: str) -> float:
        """Spend held in memory by `reserve` (not by the ledger's holds)."""
        with self._lock:
            return super().reserved(tenant, period)

    def reserve(self, tenant: str, period: str, amount: float, ceiling: float
                ) -> Reservation | None:
        """Hold `amount` if it fits under `ceiling` (atomic across threads)."""
        with self._lock:
            return super().reserve(tenant, period, amount, ceiling)

    @staticmethod
    def _settle_sql(res: Reservation, actual: float, covered: bool) -> list[Stmt]:
        key = (res.tenant, res.period)
        out: list[Stmt] = [
            ("INSERT INTO account (tenant, period, settled) VALUES (?,?,?) "
             "ON CONFLICT DO UPDATE SET settled=settled+excluded.settled", (*key, actual)),
        ]
        if not covered:
            out.append(("INSERT INTO unbilled (tenant, period, second, usd) VALUES (?,?,?,?) "
                        "ON CONFLICT DO UPDATE SET usd=usd+excluded.usd",
                        (*key, float(math.ceil(res.at)), actual)))
        return out

    @staticmethod
    def _bill_sql(tenant: str, period: str, acct: Account) -> list[Stmt]:
        as_of = None if acct.billed_as_of == -math.inf else acct.billed_as_of
        return [
            ("INSERT INTO account (tenant, period, billed, billed_as_of) VALUES (?,?,?,?) "
             "ON CONFLICT DO UPDATE SET billed=excluded.billed, "
             "billed_as_of=excluded.billed_as_of", (tenant, period, acct.billed, as_of)),
            ("DELETE FROM unbilled WHERE tenant=? AND period=? AND second<=?",
             (tenant, period, -1e308 if as_of is None else as_of)),
        ]

    def _commit(self, statements: list[Stmt]) -> None:
        """Run `statements` as one transaction (StoreDown if it does not commit)."""
        if not statements:
            return
        assert self._db is not None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreDown(f"cannot write budget store sqlite:{self.path}: {exc}") from exc

    def exchange(self, entries: list[Entry], ledger: BudgetLedger, mono: float,
                 written: Callable[[list[Entry]], None]) -> bool:
        """Write `entries` (one transaction), then check the file is still this store's
        (the ledger is authoritative: nothing else to keep); True."""
        if entries:
            self.write(entries)
            written(entries)
        with self._lock:
            self._intact()
        return True

    def release(self, ledger: BudgetLedger) -> None:
        """Nothing held elsewhere."""

    def rebuild(self, ledger: BudgetLedger) -> str:
        """Open the file now at the path and write every account and hold held in memory."""
        with self._lock:
            self._release()  # the old file: its connection, its lock
            try:
                self._connect()
                self._commit(sqlite_file.rows(self.accounts, self._held.values()))
            except (OSError, sqlite3.Error, BudgetStoreError) as exc:
                self._release()
                raise StoreDown(f"cannot rebuild budget store sqlite:{self.path}: {exc}") \
                    from exc
            usd = math.fsum(a.committed for a in self.accounts.values())
            return (f"rebuilt sqlite:{self.path} from this process's memory: "
                    f"{len(self.accounts)} accounts ({usd:.6f} USD committed in all) and "
                    f"{len(self._held)} holds in flight")

    def _release(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def close(self) -> None:
        """Checkpoint the WAL, close the file and drop the lock."""
        with self._lock:
            # a failed checkpoint loses nothing: the WAL is replayed on the next open
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._release()
