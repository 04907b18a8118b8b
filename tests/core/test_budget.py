"""Budget ledger: reserve-on-admit, settle-on-end, periods in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.core.budget import (
    HARD,
    THROTTLED,
    Billed,
    BudgetLedger,
    Held,
    Reservation,
    Settled,
    Standing,
    account_of,
    period_end,
    period_key,
)
from router.core.policy import BudgetConfig, TenantBudget


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
    cfg = BudgetConfig(tenants={"t": TenantBudget(limit_usd=10.0)})
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
    cfg = BudgetConfig(period="day", tenants={"t": TenantBudget(limit_usd=1.0)})
    led = BudgetLedger()
    held = led.reserve(cfg, "t", 1.0, ts("2026-11-22T23:59:00"))
    assert held is not None
    led.settle(held)
    assert led.reserve(cfg, "t", 0.5, ts("2026-11-22T23:59:30")) is None
    assert led.reserve(cfg, "t", 0.5, ts("2026-11-23T00:00:01")) is not None
    assert led.retry_after(cfg, ts("2026-11-22T23:59:30")) == 30


def test_unknown_tenants_share_the_one_default_account() -> None:
    cfg = BudgetConfig(soft_fraction=0.5, tenants={
        "default": TenantBudget(limit_usd=0.03),
        "vip": TenantBudget(limit_usd=9.0, soft_fraction=0.9, hard_fraction=1.0)})
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
    cfg = BudgetConfig(unknown_tenant="refuse", tenants={"acme": TenantBudget(limit_usd=5.0)})
    assert account_of(cfg, "acme") == "acme"
    assert account_of(cfg, "default") == "default"  # the policy's own default tenant
    assert account_of(cfg, "intruder") is None


NOW = ts("2026-11-22T10:00:00")
TEN = BudgetConfig(tenants={"t": TenantBudget(limit_usd=10.0)})


def test_a_shared_ledger_admits_only_within_its_lease() -> None:
    led = BudgetLedger(leased=True)
    assert led.hold(TEN, "t", 1.0, NOW) == THROTTLED  # no lease yet: the fleet has headroom
    assert [v.need for v in led.leases()] == [1.0]
    led.sync("t", "2026-11", Standing(committed=2.0, lease=3.0, lease_until=NOW + 60),
             need_met=1.0)
    assert led.leases()[0].need == 0.0
    held = [led.hold(TEN, "t", 1.0, NOW) for _ in range(4)]
    assert [isinstance(h, Reservation) for h in held] == [True, True, True, False]
    assert held[3] == THROTTLED
    state = led.state(TEN, "t", NOW)
    assert (state.committed_usd, state.reserved_usd) == (2.0, 3.0)
    first = held[0]
    assert isinstance(first, Reservation) and first.leased
    led.settle(first, 0.5)  # counted at once; still inside the lease until flushed
    assert led.state(TEN, "t", NOW).committed_usd == 2.5
    assert led.available(TEN, "t", NOW) == 0.0
    led.flushed([Settled(first, 0.5, 1)])  # the store took it out of the lease
    assert led.leases()[0].lease == 2.0 and led.state(TEN, "t", NOW).committed_usd == 2.5
    led.sync("t", "2026-11", Standing(committed=9.5, lease=5.0, lease_until=NOW + 60))
    assert led.hold(TEN, "t", 1.0, NOW) == HARD  # the fleet spent it: the limit, not the lease


def test_a_lease_past_its_end_is_not_spent_and_surrender_stops_it() -> None:
    led = BudgetLedger(leased=True)
    led.sync("t", "2026-11", Standing(committed=0.0, lease=5.0, lease_until=NOW + 1))
    held = led.hold(TEN, "t", 1.0, NOW)
    assert isinstance(held, Reservation)
    assert led.hold(TEN, "t", 1.0, NOW + 2) == THROTTLED  # the store may have let it lapse
    led.sync("t", "2026-11", Standing(committed=0.0, lease=5.0, lease_until=NOW + 60))
    assert led.available(TEN, "t", NOW) == 4.0
    assert led.surrender("t", "2026-11") == 1.0  # what is in use of it
    assert led.hold(TEN, "t", 1.0, NOW) == THROTTLED
    unlimited = led.hold(BudgetConfig(), "t", 1.0, NOW)  # no limit: nothing to lease
    assert isinstance(unlimited, Reservation) and not unlimited.leased


def test_the_journal_keeps_order_and_a_lease_needs_no_hold_rows() -> None:
    led = BudgetLedger(journal=True)
    held = led.reserve(TEN, "t", 1.0, NOW)
    assert held is not None
    led.settle(held, 0.25)
    led.apply_billing(TEN, "t", 3.0, NOW + 1)
    assert led.drain() == [Held(held), Settled(held, 0.25, 1), Billed("t", "2026-11", 3.0,
                                                                      NOW + 1)]
    assert led.drain() == [] and led.backlog() == 0
    shared = BudgetLedger(leased=True, journal=True)
    shared.sync("t", "2026-11", Standing(committed=0.0, lease=5.0, lease_until=NOW + 60))
    got = shared.reserve(TEN, "t", 1.0, NOW)
    assert got is not None
    shared.settle(got)
    assert [type(e) for e in shared.drain()] == [Settled]


def test_books_of_past_periods_are_forgotten() -> None:
    cfg = BudgetConfig(period="hour", tenants={"t": TenantBudget(limit_usd=10.0)})
    led = BudgetLedger()
    for hour in range(48):
        held = led.reserve(cfg, "t", 0.1, NOW + 3600 * hour)
        assert held is not None
        led.settle(held)
    assert led.accounts == [("t", "2026-11-24T09")]


def test_period_keys_stay_exact_at_the_boundary_whatever_order_times_come_in() -> None:
    end = ts("2026-12-01T00:00:00")
    times = [(end - 0.5, "2026-11", "2026-11-30T23"), (end, "2026-12", "2026-12-01T00"),
             (end - 0.5, "2026-11", "2026-11-30T23"),
             (end - 86400 * 29, "2026-11", "2026-11-02T00"),
             (end + 0.5, "2026-12", "2026-12-01T00"), (end - 1e-6, "2026-11", "2026-11-30T23")]
    for now, month, hour in times:
        assert period_key(now, "month") == month
        assert period_key(now, "hour") == hour
