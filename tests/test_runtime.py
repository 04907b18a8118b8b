"""Runtime: table swaps never lose or double-count requests in flight."""

from __future__ import annotations

from router import wire
from router.core.feed import NodeState
from router.core.request import HeaderMap
from router.runtime import Routed, Runtime

from .core.factory import NOW, feed, node, policy, pool


def make() -> Runtime:
    pol = policy([node(i, slots=4) for i in range(4)], [pool()], limit=100.0)
    return Runtime(pol, clock=lambda: NOW)


def test_requests_admitted_before_a_swap_release_the_same_counters() -> None:
    rt = make()
    held = [rt.route({"x-affinity-key": f"k{i}"}) for i in range(8)]
    assert sum(rt.inflight().values()) == 8
    rt.install(feed=feed({"n0000": NodeState(healthy=False)}))
    rt.install(policy=policy([node(i, slots=4) for i in range(6)], [pool()]))
    newer = [rt.route({"x-affinity-key": f"k{i}"}) for i in range(8)]
    assert all(r.decision.node != "n0000" for r in newer if r.decision.mode != "cloud")
    for r in held + newer:
        rt.finish(r)
    assert all(v == 0 for v in rt.inflight().values())


def test_bad_tag_becomes_a_400_decision_holding_nothing() -> None:
    rt = make()
    routed = rt.route({"x-affinity-slo-ms": "soon"})
    d = routed.decision
    assert (d.status, d.error, d.reason, d.slots) == (400, wire.E_BAD_TAG, "bad-tag", ())
    assert "x-affinity-slo-ms" in (d.detail or "")
    rt.finish(routed)  # finishing a refusal is harmless
    assert all(v == 0 for v in rt.inflight().values())


def test_route_refuses_repeats_a_header_map_carries_and_still_takes_plain_dicts() -> None:
    # The servicer hands Runtime.route a HeaderMap; it must reach the parser as it is
    # (copying it into a plain dict would lose the repeats and let the last one win).
    rt = make()
    repeated = HeaderMap([("x-affinity-residency", "GDPR"), ("x-affinity-residency", "CCPA")])
    d = rt.route(repeated).decision
    assert d.status == 400 and (d.detail or "").startswith("x-affinity-residency: ")
    assert rt.route({"x-affinity-key": "a"}).decision.routed


def test_policy_swap_changes_the_version_header() -> None:
    rt = make()
    first = rt.route({"x-affinity-key": "a"}).decision.policy
    changed = policy([node(0)], [pool()])
    changed = changed.with_digest("v2")
    rt.install(policy=changed)
    assert first == "test" and rt.route({"x-affinity-key": "a"}).decision.policy == "v2"


def test_a_restamped_feed_routes_exactly_as_before() -> None:
    rt = make()
    rt.install(feed=feed({"n0001": NodeState(compute_score=0.5)}))
    before = [rt.route({"x-affinity-key": f"k{i}"}).decision for i in range(8)]
    for d in before:
        rt.finish(Routed(d, rt.snapshot))
    rt.restamp(feed({"n0001": NodeState(compute_score=0.5)}))  # only the timestamps moved
    after = [rt.route({"x-affinity-key": f"k{i}"}).decision for i in range(8)]
    assert [(d.node, d.mode, d.fill) for d in after] == [(d.node, d.mode, d.fill) for d in before]
