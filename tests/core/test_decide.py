"""The mode ladder, refusals, and in-flight/budget bookkeeping of decide/finish."""

from __future__ import annotations

import pytest

from router import wire
from router.core.admit import decide, finish, preview
from router.core.feedsnapshot import NodeState
from router.core.plan import plan_whole

from .factory import NOW, feed, ledger, node, policy, pool, request, table


def test_key_sticks_to_its_node_while_under_cap() -> None:
    pol = policy([node(i) for i in range(6)], [pool()])
    tab, led = table(pol), ledger(pol)
    first = decide(request("cam-1"), tab, led, now=NOW)
    finish(first, tab.tracker, led)
    for _ in range(20):
        again = decide(request("cam-1"), tab, led, now=NOW)
        d = again.decision
        assert (d.mode, d.node, d.reason) == (wire.MODE_EDGE, first.decision.node, "affinity")
        finish(again, tab.tracker, led)


def test_spills_to_next_node_at_cap_and_back() -> None:
    pol = policy([node(i, slots=100) for i in range(4)], [pool()], eps=0.25)
    tab, led = table(pol), ledger(pol)
    held = [decide(request("hot"), tab, led, now=NOW) for _ in range(12)]
    nodes = [r.decision.node for r in held]
    assert len(set(nodes)) > 1, "a hot key must spill once its home node hits its cap"
    for d in held:
        finish(d, tab.tracker, led)
    assert all(v == 0 for v in tab.tracker.loads)
    assert decide(request("hot"), tab, led, now=NOW).decision.node == nodes[0]


@pytest.mark.parametrize(("latency", "vram", "slo", "degrade", "mode", "quality", "reason"), [
    pytest.param(30, 0.1, 100, True, "edge", "full", "affinity", id="edge-within-slo"),
    pytest.param(90, 0.1, 70, True, "edge-degraded", "constrained", "slo", id="degrade-for-slo"),
    pytest.param(30, 0.9, 100, True, "edge-degraded", "constrained", "vram", id="vram-pressure"),
    pytest.param(30, 0.97, 100, True, "edge-degraded", "minimal", "vram", id="vram-critical"),
    # a pool's estimate is its round trip + compute (120 + 100 ms here); a split's is the
    # node's feature extraction (5) + the round trip + 70% of the compute: 195 ms
    pytest.param(1000, 0.1, 200, True, "split", None, "slo", id="split-when-edge-too-slow"),
    pytest.param(300, 0.1, 250, False, "cloud", None, "slo", id="cloud-when-no-degrade"),
    pytest.param(30, 0.9, 250, False, "cloud", None, "slo", id="vram-without-degrade"),
])
def test_mode_ladder(latency: float, vram: float, slo: float, degrade: bool, mode: str,
                     quality: str | None, reason: str) -> None:
    pol = policy([node(0, latency=latency)], [pool(latency=120)])
    snap = feed({"n0000": NodeState(vram_used_fraction=vram)})
    d = decide(request("k", slo=slo, degrade=degrade), table(pol, snap), ledger(pol),
               now=NOW).decision
    assert (d.mode, d.quality, d.reason) == (mode, quality, reason)
    if mode == "split":
        assert d.split_cloud == "127.0.0.1:9900" and d.node == "n0000"


def test_residency_is_never_broken() -> None:
    pol = policy([node(0, residency=["CCPA"]), node(1, residency=["GDPR"])],
                 [pool("us", residency=["CCPA"])])
    tab, led = table(pol), ledger(pol)
    for i in range(50):
        routed = decide(request(f"k{i}", residency=["GDPR"]), tab, led, now=NOW)
        assert routed.decision.node == "n0001"
        finish(routed, tab.tracker, led)
    gone = decide(request("k", residency=["GDPR", "HIPAA"]), tab, led, now=NOW).decision
    assert (gone.status, gone.error, gone.reason) == (503, wire.E_UNSERVABLE, "residency")


def test_a_full_edge_splits_then_goes_to_cloud_then_503_without_cloud() -> None:
    # 2 inference slots and 2 feature slots: overflow is split while features have room
    pol = policy([node(0, slots=2)], [pool(latency=80)])
    tab, led = table(pol), ledger(pol)
    modes = [decide(request(f"k{i}", slo=200), tab, led, now=NOW).decision for i in range(6)]
    assert [d.mode for d in modes] == ["edge", "edge", "split", "split", "cloud", "cloud"]
    assert {d.reason for d in modes[2:]} == {"capacity"}
    assert modes[2].node == "n0000" and modes[2].split_cloud == "127.0.0.1:9900"
    strict = [decide(request(f"n{i}", slo=200, degrade=False), tab, led, now=NOW).decision
              for i in range(2)]
    assert [d.mode for d in strict] == ["cloud", "cloud"]  # no split without degradation
    no_cloud = policy([node(0, slots=1)])
    tab2, led2 = table(no_cloud), ledger(no_cloud)
    decide(request("a"), tab2, led2, now=NOW)
    full = decide(request("b"), tab2, led2, now=NOW).decision
    assert (full.status, full.reason, full.retry_after) == (503, "capacity", 1)


def test_hard_budget_refuses_with_retry_after() -> None:
    pol = policy([], [pool(usd_per_hour=3600.0, compute_ms=1000.0)], limit=3.0)  # $1/request
    tab, led = table(pol), ledger(pol)
    served = [decide(request(f"k{i}"), tab, led, now=NOW) for i in range(3)]
    assert all(r.decision.mode == "cloud" for r in served)
    refused = decide(request("k4"), tab, led, now=NOW).decision
    assert (refused.status, refused.error, refused.reason) == (429, wire.E_BUDGET, "budget")
    assert refused.retry_after is not None and refused.retry_after > 0
    for d in served:
        finish(d, tab.tracker, led)
    assert led.state(pol.budgets, "default", NOW).committed_usd == pytest.approx(3.0)


def test_soft_budget_keeps_best_effort_off_cloud() -> None:
    # Edge too slow for the SLO and the cloud faster: below soft, best effort picks cloud;
    # above soft, it prefers the edge.
    pol = policy([node(0, latency=400)], [pool(latency=150, usd_per_hour=360000.0,
                                               compute_ms=10.0)], limit=10.0, soft=0.5)
    tab, led = table(pol), ledger(pol)
    below = decide(request("a", slo=50, degrade=False), tab, led, now=NOW)
    assert (below.decision.mode, below.decision.reason) == ("cloud", "best-effort")
    finish(below, tab.tracker, led)
    for _ in range(5):
        finish(decide(request("a", slo=50, degrade=False), tab, led, now=NOW), tab.tracker,
               led)
    above = decide(request("a", slo=50, degrade=False), tab, led, now=NOW).decision
    assert (above.mode, above.reason) == ("edge", "budget-soft")


def test_max_cost_is_respected() -> None:
    pol = policy([], [pool(usd_per_hour=3600.0, compute_ms=1000.0)])
    d = decide(request("a", max_cost=0.5), table(pol), ledger(pol), now=NOW).decision
    assert (d.status, d.error, d.reason) == (503, wire.E_MAX_COST, "max-cost")


def test_unhealthy_node_gets_nothing() -> None:
    pol = policy([node(0), node(1)], [pool()])
    snap = feed({"n0000": NodeState(healthy=False)})
    tab, led = table(pol, snap), ledger(pol)
    seen = set()
    for i in range(40):
        routed = decide(request(f"k{i}"), tab, led, now=NOW)
        seen.add(routed.decision.node)
        finish(routed, tab.tracker, led)
    assert seen == {"n0001"}


def test_explain_does_not_commit() -> None:
    pol = policy([node(0)], [pool()], limit=1.0)
    tab, led = table(pol), ledger(pol)
    d, trace = preview(plan_whole(request("a"), tab, led, now=NOW), led, now=NOW)
    assert d.routed
    assert all(v == 0 for v in tab.tracker.loads)
    assert led.state(pol.budgets, "default", NOW).reserved_usd == 0.0
    assert any(c.verdict == "chosen" for c in trace)


def test_headers_and_body() -> None:
    pol = policy([node(0)], [pool()])
    d = decide(request("a"), table(pol), ledger(pol), now=NOW).decision
    headers = dict(d.headers())
    assert headers[wire.H_TARGET] == "127.0.0.1:10000" and headers[wire.H_MODE] == "edge"
    assert headers[wire.H_POLICY] == "test" and headers[wire.H_QUALITY] == "full"
    refused = decide(request("a", residency=["X"]), table(pol), ledger(pol), now=NOW).decision
    assert refused.body().startswith(b'{"error":"no_eligible_target","detail":')


@pytest.mark.parametrize(("mode", "rule", "failed", "charged"), [
    ("cloud", "none", True, False), ("cloud", "full", True, True),
    ("cloud", "none", False, True), ("split", "none", True, False),
    ("split", "full", True, True),
])
def test_a_failed_request_is_charged_per_its_pools_rule(mode: str, rule: str, failed: bool,
                                                        charged: bool) -> None:
    billed = pool().model_copy(update={"bill_failed": rule})
    pol = policy([node(0, latency=1000)], [billed], limit=10.0)
    tab, led = table(pol), ledger(pol)
    split = mode == "split"
    routed = decide(request("k", slo=200 if split else 250, degrade=split), tab, led, now=NOW)
    held = routed.hold.reservation
    assert routed.decision.mode == mode and held is not None
    assert routed.hold.pool is not None and routed.hold.pool.id == billed.id
    finish(routed, tab.tracker, led, failed=failed)
    used = led.state(pol.budgets, "default", NOW).used_usd
    assert used == (pytest.approx(held.amount) if charged else 0.0)
    assert all(v == 0 for v in tab.tracker.loads)  # the slots go back either way
