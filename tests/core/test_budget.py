"""Budget ledger: reserve-on-admit, settle-on-end, periods in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.core.budget import BudgetLedger, MemoryBudgetStore, period_end, period_key
from router.core.model import BudgetConfig, TenantBudget


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("period", "at", "key", "end"), [
    ("hour", "2026-11-22T10:59:59", "2026-11-22T10", "2026-11-22T11:00:00"),
    ("day", "2026-11-22T23:00:00", "2026-11-22", "2026-11-23T00:00:00"),
    ("week", "2026-11-22T12:00:00", "2026-W47", "2026-11-23T00:00:00"),
    ("month", "2026-12-31T23:59:59", "2026-12", "2027-01-01T00:00:00"),
    ("month", "2028-02-10T00:00:00", "2028-02", "2028-03-01T00:00:00"),
])
def test_periods_roll_over_in_utc(period: str, at: str, key: str, end: str) -> None:
    assert period_key(ts(at), period) == key
    assert period_end(ts(at), period) == ts(end)


def test_concurrent_reservations_cannot_overshoot() -> None:
    led = BudgetLedger(BudgetConfig(tenants={"t": TenantBudget(limit_usd=10.0)}),
                       MemoryBudgetStore())
    now = ts("2026-11-22T10:00:00")
    held = [led.reserve("t", 3.0, now) for _ in range(5)]
    assert [h is not None for h in held] == [True, True, True, False, False]
    state = led.state("t", now)
    assert state.reserved_usd == 9.0 and state.committed_usd == 0.0
    for h in held:
        if h is not None:
            led.settle(h)
    state = led.state("t", now)
    assert (state.reserved_usd, state.committed_usd) == (0.0, 9.0)


def test_new_period_starts_fresh() -> None:
    led = BudgetLedger(BudgetConfig(period="day", tenants={"t": TenantBudget(limit_usd=1.0)}),
                       MemoryBudgetStore())
    held = led.reserve("t", 1.0, ts("2026-11-22T23:59:00"))
    assert held is not None
    led.settle(held)
    assert led.reserve("t", 0.5, ts("2026-11-22T23:59:30")) is None
    assert led.reserve("t", 0.5, ts("2026-11-23T00:00:01")) is not None
    assert led.retry_after(ts("2026-11-22T23:59:30")) == 30


def test_unknown_tenant_uses_default_limit_and_fractions() -> None:
    cfg = BudgetConfig(soft_fraction=0.5, tenants={
        "default": TenantBudget(limit_usd=2.0),
        "vip": TenantBudget(limit_usd=9.0, soft_fraction=0.9, hard_fraction=1.0)})
    led = BudgetLedger(cfg, MemoryBudgetStore())
    now = ts("2026-11-22T10:00:00")
    assert led.limit("someone") == 2.0
    assert led.state("vip", now).soft_usd == pytest.approx(8.1)
    assert led.state("someone", now).soft_usd == pytest.approx(1.0)
