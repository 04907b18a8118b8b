"""Spend of one budget account in one period: the billing merge, and budget periods.

Theory of operation
-------------------
An account's *committed* spend is what requests that ended cost, plus what the
billing feed reported. The feed's bill lags: it is "usd as of T", covering the
requests the router admitted up to T. `Account.bill(usd, as_of=T)` records it, and

    committed = billed + Σ(router-settled cost of requests admitted after T)

so the router neither counts a billed request twice (its own settlement is
dropped once a bill as of a later time covers it) nor forgets the requests the
bill has not caught up with yet. Rules every store implements alike:

- A settled request counts at its admission time, `Reservation.at` (requests
  last far less than the billing lag, and settling needs no clock). A bill as
  of T covers every settlement with at <= T, including ones settled after the
  bill arrived.
- A bill with an older as_of than the one in force is ignored (out of order);
  an equal as_of replaces the amount (a correction).
- `as_of=None` means "as of now": the bill covers everything the router has
  settled so far, and only later-admitted requests count on top.
- Before any bill, committed is the router's own settled spend.
- The feed's `spend` is the bill for the period containing its `generated_at`,
  which is its as_of (see `router.feed.refresh`).

A durable store keeps (billed, billed_as_of) per (account, period) and the
settlements (at, usd) not yet covered; committed is billed plus their sum.
Settlements are filed under the next whole second, ceil(at), so an account
holds one entry per second: a bill as of a fractional time may then count up
to a second of spend twice, never forget any.

`MemoryBudgetStore` is that model with atomic check-and-hold, in one process;
the SQLite store (`router.stores.sqlite`) makes it durable.
"""

from __future__ import annotations

import calendar
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from router.core.policy import BudgetConfig

EPS = 1e-12  # float slack on limit checks: a sum of holds may drift by a few ulps


@dataclass(frozen=True, slots=True)
class Reservation:
    """Headroom held by one in-flight request."""

    tenant: str
    period: str
    amount: float
    rid: int = 0
    at: float = 0.0  # admission time; decides which bill covers it
    leased: bool = False  # held inside a shared store's lease (`router.core.budget`)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A tenant's standing in the current period."""

    tenant: str
    period: str
    limit_usd: float | None  # None: no budget, unlimited
    committed_usd: float
    reserved_usd: float
    soft_fraction: float
    hard_fraction: float

    @property
    def used_usd(self) -> float:
        """Committed plus reserved."""
        return self.committed_usd + self.reserved_usd

    @property
    def hard_usd(self) -> float:
        """Spend at which cloud stops."""
        return math.inf if self.limit_usd is None else self.limit_usd * self.hard_fraction

    @property
    def soft_usd(self) -> float:
        """Spend above which cheaper modes are preferred."""
        return math.inf if self.limit_usd is None else self.limit_usd * self.soft_fraction

    @property
    def over_soft(self) -> bool:
        """Whether spend is at or past the soft limit."""
        return self.used_usd >= self.soft_usd

    def fits(self, amount: float) -> bool:
        """Whether `amount` more would stay within the hard limit."""
        return self.used_usd + amount <= self.hard_usd + EPS


@dataclass
class Account:
    """Committed spend of one (account, period): the bill plus what it does not cover."""

    billed: float = 0.0
    billed_as_of: float = -math.inf
    reserved: float = 0.0
    settled: float = 0.0  # everything the router settled this period (for reports)
    unbilled: list[tuple[float, float]] = field(default_factory=list)  # (second, usd)
    unbilled_usd: float = 0.0

    @property
    def committed(self) -> float:
        """The bill plus router settlements it does not cover."""
        return self.billed + self.unbilled_usd

    def copy(self) -> Account:
        """An independent copy (a store rolls back to it when a write fails)."""
        return Account(self.billed, self.billed_as_of, self.reserved, self.settled,
                       list(self.unbilled), self.unbilled_usd)

    def add(self, at: float, usd: float) -> bool:
        """Settle `usd` admitted at `at`; False when a bill already covers it."""
        self.settled += usd
        if at <= self.billed_as_of:
            return False
        self.unbilled_usd += usd
        second = float(math.ceil(at))  # one entry per second keeps memory bounded
        if self.unbilled and self.unbilled[-1][0] == second:
            self.unbilled[-1] = (second, self.unbilled[-1][1] + usd)
        else:
            self.unbilled.append((second, usd))
        return True

    def bill(self, usd: float, as_of: float | None) -> bool:
        """Record a bill as of `as_of` (None: as of now); False when it is out of order."""
        if as_of is None:
            as_of = max([self.billed_as_of, *(at for at, _ in self.unbilled)])
        if as_of < self.billed_as_of:
            return False  # an older bill than the one in force: out of order
        self.billed, self.billed_as_of = usd, as_of
        self.unbilled = [(at, amt) for at, amt in self.unbilled if at > as_of]
        self.unbilled_usd = math.fsum(amt for _, amt in self.unbilled)
        return True


@dataclass
class MemoryBudgetStore:
    """Spend per (tenant, period) with atomic check-and-hold, in one process."""

    accounts: dict[tuple[str, str], Account] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _acct(self, tenant: str, period: str) -> Account:
        acct = self.accounts.get((tenant, period))
        if acct is None:
            acct = self.accounts[(tenant, period)] = Account()
        return acct

    def committed(self, tenant: str, period: str) -> float:
        """Committed spend: the bill plus router settlements it does not cover."""
        return self._acct(tenant, period).committed

    def reserved(self, tenant: str, period: str) -> float:
        """Spend held by in-flight requests."""
        return self._acct(tenant, period).reserved

    def reserve(self, tenant: str, period: str, amount: float, ceiling: float
                ) -> Reservation | None:
        """Hold `amount` if committed + reserved + amount <= ceiling, else None."""
        acct = self._acct(tenant, period)
        if acct.committed + acct.reserved + amount > ceiling + EPS:
            return None
        acct.reserved += amount
        return Reservation(tenant, period, amount, next(self._ids))

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Release the hold and commit `actual` at the reservation's admission time."""
        acct = self._acct(reservation.tenant, reservation.period)
        acct.reserved = max(0.0, acct.reserved - reservation.amount)
        acct.add(reservation.at, actual)

    def apply_billing(self, tenant: str, period: str, usd: float,
                      as_of: float | None = None) -> None:
        """Record a bill as of `as_of`; settlements it covers stop counting on top."""
        self._acct(tenant, period).bill(usd, as_of)

    def close(self) -> None:
        """Nothing to release."""


_last_key: dict[str, tuple[float, float, str]] = {}  # period -> (start, end, key) last asked


def period_key(now: float, period: str) -> str:
    """The UTC period containing `now`, e.g. '2026-11' for a month.

    Asked on every cloud decision with a `now` that rarely leaves the period, so the
    last answer per period kind is kept, valid from the `now` it was computed for to the
    period's end (a memo: same input, same answer; an earlier `now` is computed afresh).
    """
    last = _last_key.get(period)
    if last is not None and last[0] <= now < last[1]:
        return last[2]
    key = _period_key(now, period)
    _last_key[period] = (now, period_end(now, period), key)  # valid from `now` to the end
    return key


def _period_key(now: float, period: str) -> str:
    t = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        return t.strftime("%Y-%m-%dT%H")
    if period == "day":
        return t.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    return t.strftime("%Y-%m")


def period_end(now: float, period: str) -> float:
    """Epoch seconds at which the period containing `now` ends."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        return (start + timedelta(hours=1)).timestamp()
    if period == "day":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return (start + timedelta(days=1)).timestamp()
    if period == "week":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
        return (start + timedelta(days=7)).timestamp()
    days = calendar.monthrange(t.year, t.month)[1]
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=days)).timestamp()


def account_of(budgets: BudgetConfig, tenant: str) -> str | None:
    """The budget account `tenant` spends from, or None when it must be refused (403).

    A tenant the policy names has its own account; so does the policy's default
    tenant. Any other tenant shares the one default account
    (`unknown_tenant: default`) — so inventing tenant names buys no extra budget
    and creates no accounts — or is refused (`unknown_tenant: refuse`).
    """
    if tenant == budgets.default_tenant or budgets.tenant(tenant) is not None:
        return tenant
    return None if budgets.unknown_tenant == "refuse" else budgets.default_tenant
