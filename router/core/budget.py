"""Cloud spend per budget account, held in memory: reserve on admit, settle on end.

Theory of operation
-------------------
The ledger is the request path's whole view of spend: memory only, no I/O, no
clock (times are arguments), no threads. Per (account, period) a *book* knows
its committed spend (bills + settled requests, merged as `router.core.spend`
describes), its own in-flight holds, and — for a shared store — its *lease*:
the headroom this process holds in the store, and the settled holds it has not
flushed to the store yet (the store still counts those inside the lease).

A cloud-bound request is admitted only if

    committed + reserved + amount <= hard_fraction × limit     (the ceiling)

and, with a lease, only while the lease is in date and

    own holds + unflushed holds + amount <= lease

Check and hold are one step under the ledger's guard, so concurrent requests
cannot jointly overshoot (the check-then-spend race of naive budget gateways).
Every admitted estimate is backed: by the ledger's own ceiling when the ledger
is authoritative (`memory`, `sqlite:`), by headroom the shared store already
granted to this process otherwise (`redis://`), so a fleet never overshoots
either, whatever the store's state. A request whose ceiling fits but whose
lease is short is *throttled* rather than refused for the limit: its shortfall
is recorded as the book's `need`, for the keeper to top up.

Settling updates memory at once (the hold goes, the cost is committed at the
request's admission time) and, when the ledger journals, appends the
settlement to the outbox; bills go there too, and so do holds when there is no
lease (a durable store writes one per admitted request, so a crash loses none;
a lease already backs them). The store's keeper (`router.stores.keeper`, a
thread outside the core) drains the outbox into the store in order and
acknowledges with `flushed`; the store's state comes back through `restore`
(at start), `sync` (a lease granted or returned) and `seen` (a read). Nothing
here ever touches a store. The keeper and the request path share the ledger
through `guard`, a lock held only for these memory updates, never across I/O.

With a shared store the fleet's committed spend is the store's, as of the
last sync, plus this process's settlements not flushed yet. The soft fraction
is advisory: above it the mode ladder prefers edge or split (see
`router.core.plan`). Periods roll over in UTC by the policy's period; a
reservation taken in one period settles into that same period.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from router.core.journal import Billed, Entry, Held, LeaseView, Settled, Standing
from router.core.policy import BudgetConfig
from router.core.spend import (
    EPS,
    Account,
    BudgetState,
    MemoryBudgetStore,
    Reservation,
    account_of,
    period_end,
    period_key,
)

__all__ = [
    "HARD", "THROTTLED", "Account", "Billed", "BudgetLedger", "BudgetState", "Entry", "Held",
    "LeaseView", "MemoryBudgetStore", "Reservation", "Settled", "Standing", "account_of",
    "period_end", "period_key",
]

HARD = "hard budget reached"  # the ceiling is reached: 429 until the period rolls over
THROTTLED = "budget lease short"  # the fleet has headroom, this process's lease does not


def _down(x: float, by: float) -> float:
    """x − by, where a float crumb left of a sum that is gone counts as nothing."""
    left = x - by
    return left if left > EPS else 0.0


@dataclass
class _Book:
    acct: Account = field(default_factory=Account)
    holds: int = 0
    ceiling: float = math.inf
    admitted_usd: float = 0.0
    fleet_committed: float = 0.0
    lease: float = 0.0
    lease_until: float = -math.inf
    unflushed_hold: float = 0.0
    unflushed_usd: float = 0.0
    need: float = 0.0

    @property
    def idle(self) -> bool:
        return self.holds <= 0 and self.unflushed_hold <= 0 and self.unflushed_usd <= 0 \
            and self.lease <= 0


class BudgetLedger:
    """Spend per budget account, checked against the limits of the policy in force.

    The ledger holds no policy: every call names the `BudgetConfig` of the
    snapshot the request was planned under, so a reload changes limits in one
    place. `leased`: admission also needs a lease (a shared store); `journal`:
    holds, settlements and bills go to the outbox for a store's keeper.
    """

    def __init__(self, *, leased: bool = False, journal: bool = False,
                 guard: AbstractContextManager[object] | None = None) -> None:
        """An empty ledger; `guard` (a lock) when a keeper thread shares it."""
        self.leased = leased
        self.journal = journal
        self.guard: AbstractContextManager[object] = guard if guard is not None \
            else nullcontext()
        self._books: dict[tuple[str, str], _Book] = {}
        self._outbox: deque[Entry] = deque()
        self._ids = itertools.count(1)
        self._seqs = itertools.count(1)

    @property
    def accounts(self) -> list[tuple[str, str]]:
        """Every (account, period) the ledger keeps a book for."""
        with self.guard:
            return list(self._books)

    @staticmethod
    def limit(budgets: BudgetConfig, account: str) -> float | None:
        """Limit in force for `account` (None: unlimited)."""
        budget = budgets.tenant(account)
        return None if budget is None else budget.limit_usd

    @classmethod
    def ceiling(cls, budgets: BudgetConfig, account: str) -> float:
        """Spend at which `account`'s cloud stops (inf: unlimited)."""
        limit = cls.limit(budgets, account)
        return math.inf if limit is None else limit * budgets.fractions(account)[1]

    def _book(self, account: str, period: str) -> _Book:
        book = self._books.get((account, period))
        if book is None:
            book = self._books[(account, period)] = _Book()
        return book

    def _used(self, book: _Book) -> tuple[float, float]:
        """(committed, reserved) of a book, as admission counts them."""
        if self.leased:
            return book.fleet_committed + book.unflushed_usd, book.acct.reserved
        return book.acct.committed, book.acct.reserved

    def _lease_left(self, book: _Book, now: float) -> float:
        lease = book.lease if now < book.lease_until else 0.0  # past its TTL: not ours
        return lease - book.acct.reserved - book.unflushed_hold

    def _refusal(self, book: _Book, amount: float, ceiling: float, now: float) -> str | None:
        committed, reserved = self._used(book)
        if committed + reserved + amount > ceiling + EPS:
            return HARD
        if self.leased and ceiling < math.inf and amount > self._lease_left(book, now) + EPS:
            return THROTTLED
        return None

    def state(self, budgets: BudgetConfig, account: str, now: float) -> BudgetState:
        """Where `account` stands now (memory only)."""
        period = period_key(now, budgets.period)
        soft, hard = budgets.fractions(account)
        with self.guard:
            book = self._book(account, period)
            committed, reserved = self._used(book)
        return BudgetState(account, period, self.limit(budgets, account), committed, reserved,
                           soft, hard)

    def hold(self, budgets: BudgetConfig, account: str, amount: float, now: float
             ) -> Reservation | str:
        """Hold `amount` of `account`'s headroom, or say why not (`HARD`, `THROTTLED`)."""
        period = period_key(now, budgets.period)
        ceiling = self.ceiling(budgets, account)
        with self.guard:
            book = self._books.get((account, period))
            if book is None:
                self._prune(account, period)
                book = self._books[(account, period)] = _Book()
            book.ceiling = ceiling
            why = self._refusal(book, amount, ceiling, now)
            if why is not None:
                if why == THROTTLED:
                    in_use = book.acct.reserved + book.unflushed_hold
                    book.need = max(book.need, in_use + amount)
                return why
            book.acct.reserved += amount
            book.holds += 1
            book.admitted_usd += amount
            res = Reservation(account, period, amount, next(self._ids), now,
                              leased=self.leased and ceiling < math.inf)
            if self.journal and not self.leased:  # a lease already backs it in the store
                self._outbox.append(Held(res))
            return res

    def reserve(self, budgets: BudgetConfig, account: str, amount: float, now: float
                ) -> Reservation | None:
        """Hold `amount` of `account`'s hard headroom, or None."""
        held = self.hold(budgets, account, amount, now)
        return None if isinstance(held, str) else held

    def check(self, budgets: BudgetConfig, account: str, amount: float, now: float
              ) -> str | None:
        """Why `hold` would refuse `amount` now, or None; holds nothing (explain)."""
        period = period_key(now, budgets.period)
        with self.guard:
            book = self._books.get((account, period)) or _Book()
            return self._refusal(book, amount, self.ceiling(budgets, account), now)

    def available(self, budgets: BudgetConfig, account: str, now: float) -> float:
        """Headroom admission can use now without asking the store (inf: unlimited)."""
        period = period_key(now, budgets.period)
        ceiling = self.ceiling(budgets, account)
        with self.guard:
            book = self._book(account, period)
            committed, reserved = self._used(book)
            room = ceiling - committed - reserved
            if self.leased and ceiling < math.inf:
                room = min(room, self._lease_left(book, now))
        return max(0.0, room)

    def settle(self, reservation: Reservation, actual: float | None = None) -> None:
        """Commit a finished request's cost (its estimate unless told otherwise)."""
        res = reservation
        cost = res.amount if actual is None else actual
        with self.guard:
            book = self._book(res.tenant, res.period)
            book.holds -= 1
            book.acct.reserved = 0.0 if book.holds <= 0 else \
                max(0.0, book.acct.reserved - res.amount)  # no float drift past the last hold
            book.holds = max(0, book.holds)
            if self.leased:
                book.unflushed_usd += cost
                if res.leased:
                    book.unflushed_hold += res.amount
            else:
                book.acct.add(res.at, cost)
            if self.journal:
                self._outbox.append(Settled(res, cost, next(self._seqs)))

    def apply_billing(self, budgets: BudgetConfig, account: str, usd: float,
                      as_of: float) -> None:
        """Record a bill of `usd` as of `as_of` in the period containing `as_of`."""
        self.bill(account, period_key(as_of, budgets.period), usd, as_of)

    def bill(self, account: str, period: str, usd: float, as_of: float | None) -> None:
        """Record a bill for one (account, period) (as_of None: as of now)."""
        with self.guard:
            if not self.leased:  # a shared store merges bills itself; the next sync shows it
                self._book(account, period).acct.bill(usd, as_of)
            if self.journal:
                self._outbox.append(Billed(account, period, usd, as_of))

    @staticmethod
    def retry_after(budgets: BudgetConfig, now: float) -> int:
        """Seconds until the period rolls over (for 429 retry-after)."""
        return max(1, int(period_end(now, budgets.period) - now + 0.999))

    def _prune(self, account: str, period: str) -> None:
        """Forget `account`'s idle books of periods before `period` (memory stays bounded)."""
        old = [k for k, b in self._books.items()
               if k[0] == account and k[1] < period and b.idle]
        for key in old:
            del self._books[key]

    # The keeper's side: called from its thread, memory only, under the guard.

    def drain(self) -> list[Entry]:
        """Take every outbox entry, oldest first."""
        with self.guard:
            out = list(self._outbox)
            self._outbox.clear()
            return out

    def backlog(self) -> int:
        """Entries waiting in the outbox."""
        return len(self._outbox)

    def flushed(self, entries: list[Entry]) -> None:
        """The store applied `entries`: a shared store's lease and committed now count them."""
        if not self.leased:
            return
        sums: dict[tuple[str, str], list[float]] = {}  # summed first: the lock is per book
        for entry in entries:
            if isinstance(entry, Settled):
                res = entry.reservation
                usd, held = sums.setdefault((res.tenant, res.period), [0.0, 0.0])
                sums[(res.tenant, res.period)] = [usd + entry.actual,
                                                  held + (res.amount if res.leased else 0.0)]
        with self.guard:
            for key, (usd, held) in sums.items():
                book = self._books.get(key)
                if book is None:
                    continue
                book.unflushed_usd = _down(book.unflushed_usd, usd)
                book.fleet_committed += usd
                book.unflushed_hold = _down(book.unflushed_hold, held)
                book.lease = _down(book.lease, held)

    def restore(self, account: str, period: str, acct: Account) -> None:
        """Load one durable account at start (committed spend and bill; no holds)."""
        copy = acct.copy()
        copy.reserved = 0.0
        with self.guard:
            self._book(account, period).acct = copy

    def leases(self) -> list[LeaseView]:
        """Every book as the keeper sees it."""
        with self.guard:
            return [LeaseView(a, p, b.ceiling, b.acct.reserved + b.unflushed_hold, b.lease,
                              b.lease_until, b.need, b.admitted_usd)
                    for (a, p), b in self._books.items()]

    def sync(self, account: str, period: str, standing: Standing, need_met: float = 0.0
             ) -> None:
        """A shared store granted or returned a lease; `need_met`: the shortfall it was asked."""
        with self.guard:
            book = self._book(account, period)
            book.fleet_committed = standing.committed
            book.lease, book.lease_until = standing.lease, standing.lease_until
            if book.need <= need_met + EPS:
                book.need = 0.0

    def seen(self, account: str, period: str, committed: float) -> None:
        """A shared store's committed spend for one book, read without touching the lease."""
        with self.guard:
            self._book(account, period).fleet_committed = committed

    def surrender(self, account: str, period: str) -> float:
        """Stop admitting on a book's lease (it is about to go back); what is in use of it."""
        with self.guard:
            book = self._book(account, period)
            book.lease_until = -math.inf
            return book.acct.reserved + book.unflushed_hold
