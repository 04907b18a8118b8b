"""Cloud spend per tenant and period: reserve on admit, settle on end.

Theory of operation
-------------------
Each (tenant, period) has *committed* spend (requests that ended, plus what
the billing feed reported) and *reserved* spend (estimates of requests still
in flight). A cloud-bound request is admitted only if

    committed + reserved + estimate <= hard_fraction × limit

and the check and the reservation are one atomic step of the store. When the
request ends its reservation is settled: reserved goes down by the estimate,
committed up by the actual cost. Because every admitted request already holds
its share of the headroom, any number of concurrent requests cannot jointly
overshoot the hard limit (the check-then-spend race of naive budget gateways).

The soft fraction is advisory: above it the mode ladder prefers edge or split
(see `router.core.plan`). Periods roll over in UTC by the policy's period;
a reservation taken in one period settles into that same period.

Billing merge: the feed reports the billing system's view of spend, which
lags: a bill is "usd as of T", covering the requests the router admitted up to
T. `apply_billing(tenant, period, usd, as_of=T)` records it, and

    committed = billed + Σ(router-settled cost of requests admitted after T)

so the router neither counts a billed request twice (its own settlement is
dropped once a bill as of a later time covers it) nor forgets the requests
the bill has not caught up with yet. Rules every store implements alike:

- A settled request counts at its admission time, `Reservation.at` (set by
  `BudgetLedger.reserve` from its `now`; requests last far less than the
  billing lag, and `finish` needs no clock). A bill as of T covers every
  settlement with at <= T, including ones settled after the bill arrived.
- A bill with an older as_of than the one in force is ignored (out of
  order); an equal as_of replaces the amount (a correction).
- `as_of=None` means "as of now": the bill covers everything the router has
  settled so far, and only later-admitted requests count on top.
- Before any bill, committed is the router's own settled spend.
- The feed's `spend` is the bill for the period containing its
  `generated_at`, which is its as_of (see `router.feed.refresh`).

A durable store keeps (billed, billed_as_of) per (tenant, period) and the
settlements (at, usd) not yet covered; committed is billed plus their sum.
The memory store files a settlement under the next whole second, ceil(at),
so it holds one entry per second: a bill as of a fractional time may then
count up to a second of spend twice, never forget any.
"""

from __future__ import annotations

import calendar
import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from router.core.model import BudgetConfig


@dataclass(frozen=True, slots=True)
class Reservation:
    """Headroom held by one in-flight request."""

    tenant: str
    period: str
    amount: float
    rid: int = 0
    at: float = 0.0  # admission time; decides which bill covers it


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
        return float("inf") if self.limit_usd is None else self.limit_usd * self.hard_fraction

    @property
    def soft_usd(self) -> float:
        """Spend above which cheaper modes are preferred."""
        return float("inf") if self.limit_usd is None else self.limit_usd * self.soft_fraction

    @property
    def over_soft(self) -> bool:
        """Whether spend is at or past the soft limit."""
        return self.used_usd >= self.soft_usd

    def fits(self, amount: float) -> bool:
        """Whether `amount` more would stay within the hard limit."""
        return self.used_usd + amount <= self.hard_usd + 1e-12


class BudgetStore(Protocol):
    """Where spend lives; `reserve` must be atomic check-and-hold."""

    def committed(self, tenant: str, period: str) -> float:
        """Committed spend."""
        ...

    def reserved(self, tenant: str, period: str) -> float:
        """Spend held by in-flight requests."""
        ...

    def reserve(self, tenant: str, period: str, amount: float, ceiling: float
                ) -> Reservation | None:
        """Hold `amount` if committed + reserved + amount <= ceiling, else None."""
        ...

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Release the hold and commit `actual`."""
        ...

    def apply_billing(self, tenant: str, period: str, usd: float,
                      as_of: float | None = None) -> None:
        """Record the billing system's (lagged) spend as of `as_of` (see module docstring)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


@dataclass
class _Account:
    billed: float = 0.0
    billed_as_of: float = -math.inf
    reserved: float = 0.0
    settled: float = 0.0  # everything the router settled this period (for reports)
    unbilled: list[tuple[float, float]] = field(default_factory=list)  # (at, usd), at > as_of
    unbilled_usd: float = 0.0

    @property
    def committed(self) -> float:
        return self.billed + self.unbilled_usd

    def add(self, at: float, usd: float) -> None:
        self.settled += usd
        if at > self.billed_as_of:
            self.unbilled_usd += usd
            second = float(math.ceil(at))  # one entry per second keeps memory bounded
            if self.unbilled and self.unbilled[-1][0] == second:
                self.unbilled[-1] = (second, self.unbilled[-1][1] + usd)
            else:
                self.unbilled.append((second, usd))

    def bill(self, usd: float, as_of: float | None) -> None:
        if as_of is None:
            as_of = max([self.billed_as_of, *(at for at, _ in self.unbilled)])
        if as_of < self.billed_as_of:
            return  # an older bill than the one in force: out of order
        self.billed, self.billed_as_of = usd, as_of
        self.unbilled = [(at, amt) for at, amt in self.unbilled if at > as_of]
        self.unbilled_usd = math.fsum(amt for _, amt in self.unbilled)


@dataclass
class MemoryBudgetStore:
    """In-process store; the base of the SQLite store and the simulator's."""

    accounts: dict[tuple[str, str], _Account] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _acct(self, tenant: str, period: str) -> _Account:
        acct = self.accounts.get((tenant, period))
        if acct is None:
            acct = self.accounts[(tenant, period)] = _Account()
        return acct

    def committed(self, tenant: str, period: str) -> float:
        """Committed spend: the bill plus router settlements it does not cover."""
        return self._acct(tenant, period).committed

    def reserved(self, tenant: str, period: str) -> float:
        """Spend held by in-flight requests."""
        return self._acct(tenant, period).reserved

    def reserve(self, tenant: str, period: str, amount: float, ceiling: float
                ) -> Reservation | None:
        """Hold `amount` if it fits under `ceiling`."""
        acct = self._acct(tenant, period)
        if acct.committed + acct.reserved + amount > ceiling + 1e-12:
            return None
        acct.reserved += amount
        return Reservation(tenant, period, amount, next(self._ids))

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Release the hold and commit `actual` at the reservation's admission time."""
        acct = self._acct(reservation.tenant, reservation.period)
        acct.reserved = max(0.0, acct.reserved - reservation.amount)
        acct.add(reservation.at, actual)
        self._persist(reservation.tenant, reservation.period, acct)

    def apply_billing(self, tenant: str, period: str, usd: float,
                      as_of: float | None = None) -> None:
        """Record a bill as of `as_of`; settlements it covers stop counting on top."""
        acct = self._acct(tenant, period)
        acct.bill(usd, as_of)
        self._persist(tenant, period, acct)

    def _persist(self, tenant: str, period: str, acct: _Account) -> None:
        """Hook for durable stores."""

    def close(self) -> None:
        """Nothing to release."""


def period_key(now: float, period: str) -> str:
    """The UTC period containing `now`, e.g. '2026-11' for a month."""
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


class BudgetLedger:
    """Spend per budget account, checked against the limits of the policy in force.

    The ledger holds no policy: every call names the `BudgetConfig` of the
    snapshot the request was planned under, so a reload changes limits in one place.
    """

    def __init__(self, store: BudgetStore) -> None:
        """Keep spend in `store`."""
        self.store = store

    @staticmethod
    def limit(budgets: BudgetConfig, account: str) -> float | None:
        """Limit in force for `account` (None: unlimited)."""
        budget = budgets.tenant(account)
        return None if budget is None else budget.limit_usd

    def state(self, budgets: BudgetConfig, account: str, now: float) -> BudgetState:
        """Where `account` stands now."""
        period = period_key(now, budgets.period)
        soft, hard = budgets.fractions(account)
        return BudgetState(account, period, self.limit(budgets, account),
                           self.store.committed(account, period),
                           self.store.reserved(account, period), soft, hard)

    def reserve(self, budgets: BudgetConfig, account: str, amount: float, now: float
                ) -> Reservation | None:
        """Atomically hold `amount` of `account`'s hard headroom."""
        period = period_key(now, budgets.period)
        limit = self.limit(budgets, account)
        _, hard = budgets.fractions(account)
        ceiling = float("inf") if limit is None else limit * hard
        held = self.store.reserve(account, period, amount, ceiling)
        return None if held is None else dataclasses.replace(held, at=now)

    def settle(self, reservation: Reservation, actual: float | None = None) -> None:
        """Commit a finished request's cost (its estimate unless told otherwise)."""
        self.store.settle(reservation, reservation.amount if actual is None else actual)

    def apply_billing(self, budgets: BudgetConfig, account: str, usd: float,
                      as_of: float) -> None:
        """Record a bill of `usd` as of `as_of` in the period containing `as_of`."""
        self.store.apply_billing(account, period_key(as_of, budgets.period), usd, as_of)

    @staticmethod
    def retry_after(budgets: BudgetConfig, now: float) -> int:
        """Seconds until the period rolls over (for 429 retry-after)."""
        return max(1, int(period_end(now, budgets.period) - now + 0.999))
