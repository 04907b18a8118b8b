"""Budget ledger: reserve-on-admit, settle-on-end, periods in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.core.budget import (
    BudgetLedger,
    account_of,
    period_end,
    period_key,
)
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
    cfg = BudgetConfig(tenants=(("t", TenantBudget(10.0)),))
    led = BudgetLedger()
    now = ts("2026-11-22T10:00:00")
    held = [led.reserve(cfg, "t", 3.0, now) for _ in range(5)]
    assert [h is not None for h in held] == [True, True, True, False, False]
    state = led.state(cfg, "t", now)
    assert state.reserved_usd == 9.0 and state.committed_usd == 0.0
    for h in held:
        if h is not None:
            led.settle(h)
    state = led.state(cfg, "t", now)
    assert (state.reserved_usd, state.committed_usd) == (0.0, 9.0)


def test_new_period_starts_fresh() -> None:
    cfg = BudgetConfig(period="day", tenants=(("t", TenantBudget(1.0)),))
    led = BudgetLedger()
    held = led.reserve(cfg, "t", 1.0, ts("2026-11-22T23:59:00"))
    assert held is not None
    led.settle(held)
    assert led.reserve(cfg, "t", 0.5, ts("2026-11-22T23:59:30")) is None
    assert led.reserve(cfg, "t", 0.5, ts("2026-11-23T00:00:01")) is not None
    assert led.retry_after(cfg, ts("2026-11-22T23:59:30")) == 30


def test_unknown_tenants_share_the_one_default_account() -> None:
    cfg = BudgetConfig(soft_fraction=0.5, tenants=(("default", TenantBudget(0.03)),
                                                   ("vip", TenantBudget(9.0, 0.9, 1.0))))
    led = BudgetLedger()
    now = ts("2026-11-22T10:00:00")
    assert account_of(cfg, "vip") == "vip"
    assert led.state(cfg, "vip", now).soft_usd == pytest.approx(8.1)
    admitted = 0
    for i in range(300):  # 300 invented names buy no more than the one default budget
        account = account_of(cfg, f"made-up-{i}")
        assert account == "default"
        if led.reserve(cfg, account, 0.01, now) is not None:
            admitted += 1
    assert admitted == 3
    assert {t for t, _ in led.accounts} == {"default", "vip"}  # none per invented name


def test_unknown_tenant_refused_when_the_policy_says_so() -> None:
    cfg = BudgetConfig(unknown_tenant="refuse", tenants=(("acme", TenantBudget(5.0)),))
    assert account_of(cfg, "acme") == "acme"
    assert account_of(cfg, "default") == "default"  # the policy's own default tenant
    assert account_of(cfg, "intruder") is None
