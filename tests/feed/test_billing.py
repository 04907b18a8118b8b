"""Billing merge: committed = bill + router settlements the bill does not cover yet."""

from __future__ import annotations

import pytest

from router.core.budget import BudgetLedger, MemoryBudgetStore, Reservation, period_key
from router.core.policy import BudgetConfig, TenantBudget

T0 = 1_795_000_000.0  # mid-month, 2026-11


def settle_at(store: MemoryBudgetStore, at: float, usd: float, period: str = "p") -> None:
    held = store.reserve("t", period, usd, float("inf"))
    assert held is not None
    store.settle(Reservation(held.tenant, held.period, held.amount, held.rid, at), usd)


def test_before_any_bill_committed_is_router_settled() -> None:
    store = MemoryBudgetStore()
    settle_at(store, T0, 2.0)
    settle_at(store, T0 + 1, 3.0)
    assert store.committed("t", "p") == pytest.approx(5.0)


def test_bill_covers_settlements_up_to_its_as_of_and_adds_later_ones() -> None:
    store = MemoryBudgetStore()
    settle_at(store, T0, 2.0)        # covered by the bill below
    settle_at(store, T0 + 10, 3.0)   # admitted after the bill's as-of: counts on top
    store.apply_billing("t", "p", 100.0, as_of=T0 + 5)
    assert store.committed("t", "p") == pytest.approx(103.0)
    settle_at(store, T0 + 4, 1.0)    # late settlement of a request the bill covers
    settle_at(store, T0 + 20, 0.5)   # new spend the bill has not seen
    assert store.committed("t", "p") == pytest.approx(103.5)


def test_same_bill_twice_is_idempotent_and_older_bill_is_ignored() -> None:
    store = MemoryBudgetStore()
    settle_at(store, T0 + 10, 3.0)
    store.apply_billing("t", "p", 100.0, as_of=T0 + 5)
    store.apply_billing("t", "p", 100.0, as_of=T0 + 5)
    assert store.committed("t", "p") == pytest.approx(103.0)
    store.apply_billing("t", "p", 90.0, as_of=T0)  # out of order: ignored
    assert store.committed("t", "p") == pytest.approx(103.0)
    store.apply_billing("t", "p", 101.0, as_of=T0 + 5)  # same as-of: a correction
    assert store.committed("t", "p") == pytest.approx(104.0)


def test_newer_bill_absorbs_what_it_covers() -> None:
    store = MemoryBudgetStore()
    settle_at(store, T0 + 10, 3.0)
    store.apply_billing("t", "p", 100.0, as_of=T0 + 5)
    store.apply_billing("t", "p", 103.0, as_of=T0 + 15)  # now includes the $3
    assert store.committed("t", "p") == pytest.approx(103.0)


def test_bill_without_as_of_covers_everything_settled_so_far() -> None:
    store = MemoryBudgetStore()
    settle_at(store, T0, 2.0)
    settle_at(store, T0 + 10, 3.0)
    store.apply_billing("t", "p", 50.0)
    assert store.committed("t", "p") == pytest.approx(50.0)
    settle_at(store, T0 + 11, 1.0)
    assert store.committed("t", "p") == pytest.approx(51.0)


def test_a_bill_below_router_spend_is_not_max_but_sum() -> None:
    """max(billed, settled) would forget $3 of unbilled spend here."""
    store = MemoryBudgetStore()
    settle_at(store, T0 + 10, 3.0)
    store.apply_billing("t", "p", 2.5, as_of=T0 + 5)
    assert store.committed("t", "p") == pytest.approx(5.5)


def test_ledger_stamps_admission_time_and_bills_the_as_of_period() -> None:
    cfg = BudgetConfig(tenants={"t": TenantBudget(limit_usd=10.0)})
    led = BudgetLedger()
    held = led.reserve(cfg, "t", 1.0, T0 + 10)
    assert held is not None and held.at == T0 + 10
    led.settle(held)
    led.apply_billing(cfg, "t", 4.0, as_of=T0 + 5)
    state = led.state(cfg, "t", T0 + 20)
    assert state.period == period_key(T0, "month")
    assert state.committed_usd == pytest.approx(5.0)
    # the hard limit sees the merged figure: $5 committed, $5 of headroom left
    assert led.reserve(cfg, "t", 5.5, T0 + 21) is None
    assert led.reserve(cfg, "t", 5.0, T0 + 21) is not None


def test_settlements_in_one_second_share_one_entry() -> None:
    store = MemoryBudgetStore()
    for i in range(1000):
        settle_at(store, T0 + 0.1 + i / 2000, 0.001)
    acct = store.accounts[("t", "p")]
    assert len(acct.unbilled) == 1
    assert store.committed("t", "p") == pytest.approx(1.0)
