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
(see `router.core.decide`). Periods roll over in UTC by the policy's period;
a reservation taken in one period settles into that same period.

Billing merge: the feed reports the billing system's view of spend, which lags.
`apply_billing(tenant, period, usd, as_of)` records it; committed spend is
max(billing, router-settled spend). Settled spend is kept per period, so the
router never forgets its own spend nor counts both the bill and its own
estimates of the same requests twice (max, not sum; see docs/operations.md).
"""

from __future__ import annotations

import calendar
import itertools
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

    def apply_billing(self, tenant: str, period: str, usd: float) -> None:
        """Record the billing system's (lagged) view of committed spend."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


@dataclass
class _Account:
    settled: float = 0.0
    billed: float = 0.0
    reserved: float = 0.0

    @property
    def committed(self) -> float:
        return max(self.settled, self.billed)


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
        """Committed spend."""
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
        """Release the hold and commit `actual`."""
        acct = self._acct(reservation.tenant, reservation.period)
        acct.reserved = max(0.0, acct.reserved - reservation.amount)
        acct.settled += actual
        self._persist(reservation.tenant, reservation.period, acct)

    def apply_billing(self, tenant: str, period: str, usd: float) -> None:
        """Record the billing view; committed is the max of billed and settled."""
        acct = self._acct(tenant, period)
        acct.billed = usd
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


class BudgetLedger:
    """The policy's limits applied to a store: what the mode ladder asks."""

    def __init__(self, config: BudgetConfig, store: BudgetStore) -> None:
        """Bind limits to a store."""
        self.config = config
        self.store = store
        self.overrides: dict[str, float] = {}

    def limit(self, tenant: str) -> float | None:
        """Limit in force for `tenant` (None: unlimited)."""
        if tenant in self.overrides:
            return self.overrides[tenant]
        budget = self.config.tenant(tenant)
        if budget is None:
            budget = self.config.tenant(self.config.default_tenant)
        return None if budget is None else budget.limit_usd

    def state(self, tenant: str, now: float) -> BudgetState:
        """Where `tenant` stands now."""
        period = period_key(now, self.config.period)
        soft, hard = self.config.fractions(tenant)
        return BudgetState(tenant, period, self.limit(tenant),
                           self.store.committed(tenant, period),
                           self.store.reserved(tenant, period), soft, hard)

    def reserve(self, tenant: str, amount: float, now: float) -> Reservation | None:
        """Atomically hold `amount` of `tenant`'s hard headroom."""
        period = period_key(now, self.config.period)
        limit = self.limit(tenant)
        _, hard = self.config.fractions(tenant)
        ceiling = float("inf") if limit is None else limit * hard
        return self.store.reserve(tenant, period, amount, ceiling)

    def settle(self, reservation: Reservation, actual: float | None = None) -> None:
        """Commit a finished request's cost (its estimate unless told otherwise)."""
        self.store.settle(reservation, reservation.amount if actual is None else actual)

    def retry_after(self, now: float) -> int:
        """Seconds until the period rolls over (for 429 retry-after)."""
        return max(1, int(period_end(now, self.config.period) - now + 0.999))
