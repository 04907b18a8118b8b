"""Runtime: table swaps never lose or double-count requests in flight."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from router import wire
from router.core.decision import Hold
from router.core.feedsnapshot import NodeState
from router.core.request import HeaderMap
from router.core.table import Snapshot
from router.runtime import Runtime

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
    assert (d.status, d.error, d.reason) == (400, wire.E_BAD_TAG, "bad-tag")
    assert routed.hold == Hold() and routed.rung is None
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
    before = [rt.route({"x-affinity-key": f"k{i}"}) for i in range(8)]
    for r in before:
        rt.finish(r)
    rt.restamp(feed({"n0001": NodeState(compute_score=0.5)}))  # only the timestamps moved
    after = [rt.route({"x-affinity-key": f"k{i}"}) for i in range(8)]
    assert [(r.decision, r.rung) for r in after] == [(r.decision, r.rung) for r in before]


def test_an_offer_asks_a_restamp_only_when_nothing_routing_reads_moved() -> None:
    rt = make()
    first = rt.offer(feed({"n0001": NodeState(compute_score=0.5)}), NOW)
    assert first.rebuild and first.bills == ()  # the first feed always builds
    rt.apply(first, NOW)
    again = rt.offer(feed({"n0001": NodeState(compute_score=0.5)}), NOW + 5)
    assert not again.rebuild  # only its timestamps moved
    built = rt.rebuilds
    rt.apply(again, NOW + 5)
    assert rt.rebuilds == built and rt.feed is again.feed
    assert rt.offer(feed({"n0001": NodeState(compute_score=0.4)}), NOW + 6).rebuild
    notice = dataclasses.replace(feed({"n0001": NodeState(compute_score=0.5)}),
                                 pools={"cloud": 0.0})  # a spot reclaim notice, nothing else
    assert rt.offer(notice, NOW + 7).rebuild


def test_bills_for_the_policys_own_accounts_only_are_merged() -> None:
    rt = make()
    billed = dataclasses.replace(feed({}), spend={"default": 3.0, "stranger": 9.0})
    intake = rt.offer(billed, NOW)
    assert intake.bills == (("default", 3.0),)  # 'stranger' shares the default account
    rt.apply(intake, NOW)
    assert rt.ledger.state(rt.policy.budgets, "default", NOW).used_usd == 3.0


def test_tick_rebuilds_once_when_the_feed_in_force_goes_stale() -> None:
    rt = make()
    assert rt.tick(NOW) is None  # no feed yet: nothing to age
    rt.apply(rt.offer(feed({}), NOW), NOW)
    after = rt.policy.feed.stale_after_seconds
    assert rt.tick(NOW + after) is None and not rt.snapshot.stale
    intake = rt.tick(NOW + after + 1)
    assert intake is not None and intake.rebuild and intake.feed is None
    rt.apply(intake, NOW + after + 1)
    assert rt.snapshot.stale and rt.tick(NOW + after + 2) is None


def test_commit_listeners_prepare_with_the_build_and_run_after_the_swap() -> None:
    rt = make()
    seen: list[tuple[str, object]] = []

    def listener(snap: Snapshot) -> Callable[[], None]:
        seen.append(("prepared", snap))
        return lambda: seen.append(("committed", rt.snapshot))

    rt.on_commit(listener)
    prepared = rt.prepare(feed=feed({}), now=NOW)
    assert seen == [("prepared", prepared.snapshot)] and rt.snapshot is not prepared.snapshot
    rt.commit(prepared)
    assert seen[1] == ("committed", prepared.snapshot)
    rt.restamp(feed({}))  # a restamp swaps no table: no listener runs
    assert len(seen) == 2
