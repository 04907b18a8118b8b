"""The world model's pieces with exact expectations: shared links, warm keys, service time, VRAM."""

from __future__ import annotations

import numpy as np
import pytest

from router.core.policy import EdgeNode
from simulator.lifecycle import BLOCK
from simulator.physics import Link, Node, WarmKeys, percentile, transfer_s
from simulator.scenario import Site, WorldConfig
from simulator.world import World
from tests.core.factory import node as make_node
from tests.core.factory import policy as make_policy
from tests.core.factory import pool as make_pool

MB = 1_000_000  # bytes; at 8 Mbps one takes exactly 1 s


def test_a_lone_transfer_takes_size_over_bandwidth() -> None:
    link = Link(8.0)
    link.start(2.0, MB, "a")
    assert link.next_end() == pytest.approx(3.0)
    assert link.finish(2.5) == []
    assert link.finish(3.0) == ["a"]
    assert link.next_end() is None
    assert transfer_s(MB, 8.0) == pytest.approx(1.0)


def test_concurrent_transfers_share_the_link_equally() -> None:
    link = Link(8.0)
    link.start(0.0, MB, "small")
    link.start(0.0, 3 * MB, "big")
    # both at half speed until the small one is done at 2 s; then the big one alone: 2 MB left
    assert link.next_end() == pytest.approx(2.0)
    assert link.finish(2.0) == ["small"]
    assert link.next_end() == pytest.approx(4.0)
    assert link.finish(4.0) == ["big"]


def test_a_transfer_joining_midway_slows_the_one_in_flight() -> None:
    link = Link(8.0)
    link.start(0.0, 2 * MB, "first")
    link.start(1.0, MB, "second")  # first has 1 MB left; from now both go at 0.5 MB/s
    assert link.next_end() == pytest.approx(3.0)
    assert link.finish(3.0) == ["first", "second"]  # both end at 3 s, first started first


def test_available_bandwidth_is_what_a_new_transfer_would_get() -> None:
    link = Link(100.0)
    assert link.available_mbps(10.0) == pytest.approx(100.0)  # idle window
    link.start(10.0, 100 * MB, "long")  # busy through the whole next window
    assert link.available_mbps(20.0) == pytest.approx(50.0)
    link.start(20.0, 100 * MB, "second")  # two for the whole window: a third would get 1/3
    assert link.available_mbps(30.0) == pytest.approx(100.0 / 3)


def test_warm_keys_are_the_most_recent_distinct_ones() -> None:
    warm = WarmKeys(2)
    assert [warm.touch(k) for k in ("a", "b", "a", "c", "b", "a")] == \
        [False, False, True, False, False, False]
    # after a, b, a, c: b was the least recent and left; serving b again evicted a
    assert len(warm) == 2
    never = WarmKeys(0)
    assert [never.touch("a"), never.touch("a")] == [False, False]


def node(slots: int = 5, **world: float) -> Node:
    spec = EdgeNode(id="n", address="127.0.0.1:1", slots=slots, base_latency_ms=20.0)
    cfg = WorldConfig(**world)  # type: ignore[arg-type]
    return Node(spec, warm_keys=cfg.warm_keys_per_node, warm_speedup=cfg.warm_speedup,
                contention=cfg.contention, vram_idle=cfg.vram_idle, vram_busy=cfg.vram_busy)


def test_service_time_scales_with_score_quality_warmth_and_contention() -> None:
    n = node(slots=5, contention=0.5, warm_speedup=0.4)
    n.throttle(0.5)  # 20 ms at score 0.5: 40 ms
    ms, warm = n.start(0.0, "k", "full", 1.0)
    assert (ms, warm) == (pytest.approx(40.0), False)  # alone: no contention
    ms, warm = n.start(0.0, "k", "constrained", 1.0)  # warm now, second in service
    assert warm is True
    assert ms == pytest.approx(40.0 * 0.6 * (1 - 0.4) * (1 + 0.5 * 1 / 4))
    ms, _ = n.start(0.0, "other", "minimal", 2.0)  # third in service, cold, draw 2
    assert ms == pytest.approx(40.0 * 0.35 * (1 + 0.5 * 2 / 4) * 2.0)


def test_vram_follows_the_load_and_the_quality_of_what_runs() -> None:
    n = node(slots=4, vram_idle=0.35, vram_busy=0.9)
    n.start(0.0, "a", "full", 1.0)
    n.start(0.0, "b", "full", 1.0)
    assert n.state(10.0, None).vram_used_fraction == pytest.approx(0.35 + 0.55 * 2 / 4)
    n.end(10.0, "full", 5.0)
    n.end(10.0, "full", 5.0)
    n.start(10.0, "a", "constrained", 1.0)
    n.start(15.0, "b", "constrained", 1.0)  # one for the whole window, one for half of it
    assert n.state(20.0, None).vram_used_fraction == pytest.approx(
        0.35 + 0.55 * (0.75 * 1.0 + 0.75 * 0.5) / 4)
    idle = node(slots=4)
    assert idle.state(10.0, None).vram_used_fraction == pytest.approx(0.35)


def test_the_feed_p95_is_at_full_quality_and_needs_five_samples() -> None:
    n = node(slots=8)
    for ms in (10.0, 20.0, 30.0, 40.0):
        n.start(0.0, "k", "full", 1.0)
        n.end(1.0, "full", ms)
    assert n.state(1.0, None).p95_ms is None  # four completions: no p95 yet
    for ms in (6.0, 12.0, 18.0, 24.0, 30.0):  # constrained: 10..50 ms at full quality
        n.start(1.0, "k", "constrained", 1.0)
        n.end(2.0, "constrained", ms)
    state = n.state(2.0, 77.0)
    assert state.p95_ms == pytest.approx(percentile([10, 20, 30, 40, 50], 95))
    assert state.p95_ms == pytest.approx(float(np.percentile([10, 20, 30, 40, 50], 95)))
    assert state.uplink_mbps == 77.0 and state.inflight == 0


def world(jitter: float = 0.0, **cfg: object) -> World:
    pol = make_policy([make_node(1, slots=2, latency=20.0), make_node(2, slots=2)],
                      [make_pool(latency=100.0, compute_ms=50.0)])
    pol = pol.model_copy(update={"cloud": pol.cloud.model_copy(update={"uplink_mbps": 8.0})})
    return World(pol, np.random.default_rng(9), WorldConfig(cloud_jitter=jitter, **cfg))


def run(w: World, submits: list[tuple[float, tuple[object, ...]]]) -> dict[int, float]:
    done: dict[int, float] = {}
    w.on_done = lambda row, ms, warm, status: done.__setitem__(row, ms)
    for t, args in submits:
        w.run_until(t)
        w.submit(*args)  # type: ignore[arg-type]
    w.run_until(float("inf"))
    return done


def test_a_cloud_request_uploads_over_the_gateway_link_then_the_pool_answers() -> None:
    w = world()
    done = run(w, [(0.0, (0, "cloud", None, "cloud", None, "k", MB)),
                   (0.0, (1, "cloud", None, "cloud", None, "k", MB))])
    # two 1 MB uploads share 8 Mbps: both done at 2 s, then 100 + 50 ms in the pool
    assert done == {0: pytest.approx(2150.0), 1: pytest.approx(2150.0)}


def test_a_split_extracts_then_sends_features_over_its_node_site_then_infers() -> None:
    w = world(sites=(Site(id="s", uplink_mbps=8.0, nodes=("n0001",)),))
    done = run(w, [(0.0, (0, "split", "n0001", "cloud", None, "k", 20 * MB))])
    shape = 1 / 0.25 ** 2  # the default service_cv
    extract = 5.0 * float(np.random.default_rng(9).gamma(shape, 1 / shape, BLOCK)[0])
    # features: 20 MB × 0.05 = 1 MB, 1 s at 8 Mbps; then 100 ms away and 0.7 × 50 ms of compute
    assert done[0] == pytest.approx(extract + 1000.0 + 100.0 + 0.7 * 50.0)


def test_a_down_node_or_a_cut_off_pool_times_out() -> None:
    w = world(timeout_ms=700.0)
    w.nodes["n0001"].up = False
    w.pools["cloud"].partitioned_until = 10.0
    done = run(w, [(1.0, (0, "edge", "n0001", None, "full", "k", 0)),
                   (1.0, (1, "cloud", None, "cloud", None, "k", 0))])
    assert done == {0: pytest.approx(700.0), 1: pytest.approx(700.0)}


def test_the_feed_reports_each_node_sites_available_uplink() -> None:
    w = world(sites=(Site(id="shared", uplink_mbps=8.0, nodes=("n0001", "n0002")),))
    w.submit(0, "split", "n0001", "cloud", None, "k", 200 * MB)  # 10 MB of features: ~10 s
    w.run_until(10.0)  # one transfer (nearly) the whole window: a second would get half the link
    feed = w.feed(0.0)
    assert feed.nodes["n0001"].uplink_mbps == pytest.approx(4.0, rel=0.01)
    assert feed.nodes["n0002"].uplink_mbps == feed.nodes["n0001"].uplink_mbps
