"""A durable budget store for one router process: SQLite in WAL mode.

Theory of operation
-------------------
The in-memory accounts of `MemoryBudgetStore` stay the source of every answer
(reads never touch the disk); this class only makes committed spend durable.
Reservations are in-flight holds and live in memory only: a restart drops
them, which is right, since the requests holding them died with the process.

Every settlement is written before `settle` returns, as one transaction that
adds the cost to the (tenant, period, second) row it is filed under (the same
per-second filing as the memory store) and to the period's settled total.
A bill rewrites its account row and deletes the settlement rows it covers.
On open the accounts are rebuilt from those rows, so after a restart
`committed` is exactly what it was before.

Durability: WAL with `synchronous=NORMAL` keeps every committed transaction
through a process crash or kill (the restart case); pass `synchronous="FULL"`
(or `sqlite:PATH?synchronous=FULL`) to also survive power loss, at the cost of
an fsync per settlement. A file belongs to one router process at a time; a
fleet shares spend through `router.stores.redis`.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
from pathlib import Path

from router.core.budget import MemoryBudgetStore, Reservation, _Account

SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    tenant TEXT NOT NULL, period TEXT NOT NULL,
    billed REAL NOT NULL DEFAULT 0, billed_as_of REAL, settled REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, period));
CREATE TABLE IF NOT EXISTS unbilled (
    tenant TEXT NOT NULL, period TEXT NOT NULL, second REAL NOT NULL, usd REAL NOT NULL,
    PRIMARY KEY (tenant, period, second));
"""


class BudgetStoreError(RuntimeError):
    """A budget store could not be opened or written."""


class SqliteBudgetStore(MemoryBudgetStore):
    """Committed spend in a SQLite file; reservations in memory; thread-safe."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        """Open (creating it and its directory if needed) the store at `path`."""
        super().__init__()
        text = str(path)
        if "?" in text:
            text, _, query = text.partition("?")
            for part in query.split("&"):
                name, _, value = part.partition("=")
                if name != "synchronous":
                    raise BudgetStoreError(f"sqlite:{path}: unknown option {name!r}")
                synchronous = value
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise BudgetStoreError(f"sqlite:{path}: synchronous must be NORMAL, FULL or EXTRA")
        self.path = Path(text)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(SCHEMA)
            self._load()
        except (OSError, sqlite3.Error) as exc:
            raise BudgetStoreError(
                f"cannot open budget store sqlite:{self.path}: {exc}") from exc

    def _load(self) -> None:
        """Rebuild the in-memory accounts from the file."""
        for tenant, period, billed, as_of, settled in self._db.execute(
                "SELECT tenant, period, billed, billed_as_of, settled FROM account"):
            acct = self._acct(tenant, period)
            acct.billed = billed
            acct.billed_as_of = -math.inf if as_of is None else as_of
            acct.settled = settled
        for tenant, period, second, usd in self._db.execute(
                "SELECT tenant, period, second, usd FROM unbilled ORDER BY second"):
            acct = self._acct(tenant, period)
            acct.unbilled.append((second, usd))
        for acct in self.accounts.values():
            acct.unbilled_usd = math.fsum(usd for _, usd in acct.unbilled)

    def committed(self, tenant: str, period: str) -> float:
        """Committed spend: the bill plus router settlements it does not cover."""
        with self._lock:
            return super().committed(tenant, period)

    def reserved(self, tenant: str, period: str) -> float:
        """Spend held by in-flight requests of this process."""
        with self._lock:
            return super().reserved(tenant, period)

    def reserve(self, tenant: str, period: str, amount: float, ceiling: float
                ) -> Reservation | None:
        """Hold `amount` if it fits under `ceiling` (atomic across threads)."""
        with self._lock:
            return super().reserve(tenant, period, amount, ceiling)

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Release the hold and durably commit `actual` before returning."""
        with self._lock:
            acct = self._acct(reservation.tenant, reservation.period)
            covered = reservation.at <= acct.billed_as_of
            self._write(self._settle_sql(reservation, actual, covered))
            super().settle(reservation, actual)

    def apply_billing(self, tenant: str, period: str, usd: float,
                      as_of: float | None = None) -> None:
        """Record a bill durably; the settlement rows it covers are dropped."""
        with self._lock:
            acct = self._acct(tenant, period)
            MemoryBudgetStore.apply_billing(self, tenant, period, usd, as_of)
            as_of_row = None if acct.billed_as_of == -math.inf else acct.billed_as_of
            self._write([
                ("INSERT INTO account (tenant, period, billed, billed_as_of) VALUES (?,?,?,?) "
                 "ON CONFLICT DO UPDATE SET billed=excluded.billed, "
                 "billed_as_of=excluded.billed_as_of", (tenant, period, acct.billed, as_of_row)),
                ("DELETE FROM unbilled WHERE tenant=? AND period=? AND second<=?",
                 (tenant, period, -1e308 if as_of_row is None else as_of_row)),
            ])

    @staticmethod
    def _settle_sql(reservation: Reservation, actual: float, covered: bool
                    ) -> list[tuple[str, tuple[object, ...]]]:
        key = (reservation.tenant, reservation.period)
        out: list[tuple[str, tuple[object, ...]]] = [
            ("INSERT INTO account (tenant, period, settled) VALUES (?,?,?) "
             "ON CONFLICT DO UPDATE SET settled=settled+excluded.settled", (*key, actual)),
        ]
        if not covered:
            out.append(("INSERT INTO unbilled (tenant, period, second, usd) VALUES (?,?,?,?) "
                        "ON CONFLICT DO UPDATE SET usd=usd+excluded.usd",
                        (*key, float(math.ceil(reservation.at)), actual)))
        return out

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        """Run `statements` as one transaction; the memory state follows only on success."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BudgetStoreError(f"cannot write budget store sqlite:{self.path}: {exc}"
                                   ) from exc

    def _persist(self, tenant: str, period: str, acct: _Account) -> None:
        """Writes happen in `settle`/`apply_billing`, before memory changes."""

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with self._lock:
            # a failed checkpoint loses nothing: the WAL is replayed on the next open
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
