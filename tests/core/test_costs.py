"""Marginal cost in routing: reservations fill first, spot against on-demand, reclaim notices."""

from __future__ import annotations

from typing import Any

import pytest

from router import wire
from router.core.admit import decide, finish
from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import CloudPool, Policy

from .factory import NOW, ledger, policy, request, table


def cloud_pool(name: str, port: int, **spec: Any) -> CloudPool:
    """An EU pool; 120 + 40 ms, no egress, so a request's bill is its compute alone."""
    return CloudPool(id=name, address=f"127.0.0.1:{port}", latency_ms=120.0, compute_ms=40.0,
                     egress_usd_per_gb=0.0, **spec)


RESERVED = cloud_pool("reserved", 9901, pricing="reserved", reserved_slots=2, usd_per_hour=1.3)
SPOT = cloud_pool("spot", 9902, instance_type="h100-spot", usd_per_hour=2.1, max_inflight=4)
ON_DEMAND = cloud_pool("on-demand", 9903, pricing="on_demand", usd_per_hour=4.0)


def fleet() -> Policy:
    """No edge: every request is a cloud request (SLO 250 ms, degradation refused)."""
    return policy([], [ON_DEMAND, SPOT, RESERVED], limit=1000.0)


def pools_taken(tab: Any, n: int) -> list[str | None]:
    """The pools of `n` requests held in flight at once."""
    led = ledger(tab.policy)
    return [decide(request(f"k{i}", slo=250.0, degrade=False), tab, led, now=NOW).decision.node
            for i in range(n)]


def test_paid_for_capacity_fills_before_spot_and_spot_before_on_demand() -> None:
    assert pools_taken(table(fleet()), 8) == ["reserved"] * 2 + ["spot"] * 4 + ["on-demand"] * 2


def test_a_reserved_request_bills_nothing_and_holds_no_budget() -> None:
    tab = table(fleet())
    led = ledger(tab.policy)
    routed = decide(request("k", slo=250.0, degrade=False), tab, led, now=NOW)
    d = routed.decision
    assert (d.node, d.cost_usd, routed.hold.reservation) == ("reserved", 0.0, None)
    finish(routed, tab.tracker, led)


def test_spot_dearer_than_on_demand_moves_cloud_work_to_on_demand() -> None:
    spike = FeedSnapshot(generated_at=NOW, received_at=NOW, prices={"h100-spot": 6.3})
    tab = table(fleet(), spike)
    led = ledger(tab.policy)
    held = [decide(request(f"k{i}", slo=250.0, degrade=False), tab, led, now=NOW)
            for i in range(4)]
    assert [r.decision.node for r in held] == ["reserved"] * 2 + ["on-demand"] * 2
    assert held[2].decision.cost_usd == pytest.approx(4.0 / 3600 * 0.040)  # what on-demand bills


@pytest.mark.parametrize(("left", "spot_taken"), [
    pytest.param(1.0, 4, id="no-notice"),
    pytest.param(0.5, 2, id="half-reclaimed"),
    pytest.param(0.2, 0, id="less-than-one-slot-left"),
    pytest.param(0.0, 0, id="all-reclaimed"),
])
def test_a_reclaim_notice_caps_spot_at_what_it_keeps(left: float, spot_taken: int) -> None:
    notice = FeedSnapshot(generated_at=NOW, received_at=NOW, pools={"spot": left})
    taken = pools_taken(table(fleet(), notice), 10)
    assert taken.count("spot") == spot_taken
    assert taken.count("on-demand") == 8 - spot_taken


def test_an_elastic_pool_closes_only_when_nothing_is_left() -> None:
    elastic = policy([], [cloud_pool("spot", 9902, instance_type="h100-spot")])
    half = FeedSnapshot(generated_at=NOW, received_at=NOW, pools={"spot": 0.5})
    gone = FeedSnapshot(generated_at=NOW, received_at=NOW, pools={"spot": 0.0})
    assert pools_taken(table(elastic, half), 3) == ["spot"] * 3
    d = decide(request("k", slo=250.0, degrade=False), table(elastic, gone), ledger(elastic),
               now=NOW).decision
    assert (d.status, d.reason) == (503, wire.R_RESIDENCY)
    assert dict(table(elastic, gone).entry(frozenset(), None).excluded)["spot"] == \
        "capacity reclaimed (spot notice)"
