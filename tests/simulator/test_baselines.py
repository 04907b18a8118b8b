"""Each baseline's rule: Envoy's bounded ring hash, two random choices, the seed's modes."""

from __future__ import annotations

from collections import Counter

import pytest

from router.core.feedsnapshot import FeedSnapshot, NodeState
from simulator.baselines import BASELINES, Baseline, make_baseline
from simulator.envoy import EnvoyRing
from simulator.routers import Choice
from simulator.scenario import TrafficClass
from simulator.seed import SeedCostAware
from tests.core.factory import node, policy, pool

EU = TrafficClass(name="eu", residency=frozenset({"EU"}), slo_ms=100.0, degrade=True,
                  payload_kb=64)
STRICT = TrafficClass(name="strict", slo_ms=100.0, degrade=False, payload_kb=64)


def feed(states: dict[str, NodeState]) -> FeedSnapshot:
    return FeedSnapshot(generated_at=0.0, received_at=0.0, nodes=states)


def test_envoy_slots_follow_its_bounded_load_formula() -> None:
    a, b = node(1), node(2)
    ring = EnvoyRing([a, b], [1.0, 3.0], 125)
    # 7 active: total_slots = ceil(8 × 125 / 100) = 10; shares 1/4 and 3/4
    assert (ring.slots(a, 7), ring.slots(b, 7)) == (3, 8)
    assert ring.slots(a, 0) == 1  # never below one


def test_envoy_keeps_a_key_on_its_host_until_it_is_over_its_slots() -> None:
    nodes = [node(i) for i in range(4)]
    ring = EnvoyRing(nodes, [1.0] * 4, 125)
    idle = {n.id: 0 for n in nodes}
    first, fill, home = ring.choose("camera-7", idle)
    assert first is home and fill == pytest.approx(1.0)  # 1 active of 1 slot after the pick
    # the host may reach slots + 1: active == slots is not yet overloaded
    busy = dict(idle, **{home.id: 1})
    again, fill, _ = ring.choose("camera-7", busy)
    assert again is home and fill == pytest.approx(2.0)
    # past its slots the key takes a detour to a host that is not overloaded
    over = dict(idle, **{home.id: 5})
    other, fill, first_host = ring.choose("camera-7", over)
    assert first_host is home and other is not home and fill <= 1.0
    # the detour is seeded by the key: the same key takes the same one
    assert ring.choose("camera-7", over)[0] is other


def test_envoy_baseline_respects_residency_and_sends_a_lone_key_home() -> None:
    pol = policy([node(1, residency=["EU"]), node(2, residency=["US"]), node(3, residency=["EU"])],
                 [pool(residency=["EU"])])
    b = Baseline(pol, "envoy-ring-hash")
    alone = []
    for i in range(200):  # one at a time: nothing is ever overloaded
        c = b.route(EU, f"k{i}", 0.0, 1000)
        alone.append(c)
        b.done(c)
    assert {c.node for c in alone} == {"n0001", "n0003"}
    assert all(c.home and c.mode == "edge" for c in alone)


def test_p2c_takes_the_less_loaded_of_two_per_slot() -> None:
    pol = policy([node(1, slots=4), node(2, slots=8)])
    b = Baseline(pol, "p2c", seed=3)
    b.load.update({"n0001": 3, "n0002": 4})  # 0.75 against 0.5 per slot
    assert b.route(STRICT, "k", 0.0, 0).node == "n0002"
    b.load.update({"n0001": 0, "n0002": 7})
    assert b.route(STRICT, "k", 0.0, 0).node == "n0001"
    many = policy([node(i, slots=4) for i in range(10)])
    spread = Baseline(many, "p2c", seed=3)
    picks = Counter(spread.route(STRICT, "same-key", 0.0, 0).node for _ in range(400))
    assert len(picks) == 10  # random pairs, not the key: every node gets some
    assert max(picks.values()) - min(picks.values()) <= 4  # and the lighter one wins


def test_every_baseline_answers_with_a_choice_and_hears_done() -> None:
    pol = policy([node(1, residency=["EU"])], [pool(residency=["EU"])], limit=100.0)
    for kind in BASELINES:
        router = make_baseline(pol, kind)
        router.refresh(feed({"n0001": NodeState()}), 0.0)
        c = router.route(EU, "k", 0.0, 1000)
        assert isinstance(c, Choice) and c.mode in ("edge", "cloud", "split", "edge-degraded")
        router.done(c)
        assert router.caps() == {}
    with pytest.raises(ValueError, match="unknown baseline"):
        Baseline(pol, "magic")


def seed_policy(slots: int = 2) -> object:
    return policy([node(1, slots=slots, residency=["EU"], latency=30.0),
                   node(2, slots=slots, residency=["EU"], latency=30.0)],
                  [pool(residency=["EU"], latency=20.0, compute_ms=10.0)], limit=100.0)


def test_seed_picks_one_mode_per_class_per_refresh_from_the_feed_averages() -> None:
    router = SeedCostAware(seed_policy(slots=100))  # type: ignore[arg-type]
    slow = {"n0001": NodeState(p95_ms=140.0), "n0002": NodeState(p95_ms=150.0)}  # mean 145
    router.refresh(feed(slow), 0.0)
    modes = {router.route(EU, f"k{i}", 1.0, 1000).mode for i in range(20)}
    assert modes == {"edge-degraded"}  # 145 × 0.6 = 87 ms, within 1.5 × 100
    # the live state does not matter until the next refresh: the class keeps its mode
    assert router.route(EU, "late", 29.0, 1000).mode == "edge-degraded"
    router.refresh(feed({"n0001": NodeState(p95_ms=40.0), "n0002": NodeState(p95_ms=50.0)}), 30)
    assert {router.route(EU, f"k{i}", 31.0, 1000).mode for i in range(20)} == {"edge"}


def test_seed_splits_when_the_edge_is_full_and_stops_cloud_at_the_hard_limit() -> None:
    router = SeedCostAware(seed_policy(slots=1))  # type: ignore[arg-type]
    router.refresh(feed({"n0001": NodeState(), "n0002": NodeState()}), 0.0)
    first = [router.route(EU, f"k{i}", 0.0, 1000) for i in range(2)]
    assert [c.mode for c in first] == ["edge", "edge"]  # one slot each, now full
    assert router.route(EU, "k9", 0.0, 1000).mode == "split"
    strict = TrafficClass(name="eu-strict", residency=frozenset({"EU"}), slo_ms=100.0,
                          degrade=False, payload_kb=64)
    assert router.route(strict, "k9", 0.0, 1000).mode == "cloud"
    router.set_limit("default", 0.0)  # the hard limit is reached: no more cloud or split
    assert router.route(strict, "k8", 0.0, 1000).mode == "edge"  # queues on its node
