"""The refresh loop against real HTTP and gRPC feed servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest

from router.feed.server import FeedServer
from router.runtime import Runtime
from tests.feed.conftest import Setup, feed_doc, sample, write_feed

GDPR = {"x-affinity-residency": "GDPR"}


def route(rt: Runtime, key: str, **headers: str) -> tuple[str, str, int]:
    """(mode, node, status) of one request, finished at once."""
    routed = rt.route({"x-affinity-key": key, **GDPR, **headers})
    rt.finish(routed)
    d = routed.decision
    return d.mode or "", d.node or "", d.status


async def publish(server: FeedServer, setup: Setup, doc: dict[str, object] | str) -> None:
    """Write the feed file and make the server serve it now."""
    write_feed(setup.feed_path, doc)
    server.feed.reload()


@pytest.mark.parametrize("via", ["http", "grpc"])
async def test_spot_price_spike_moves_cloud_traffic_within_one_refresh(
        setup: Setup, server: FeedServer, via: str) -> None:
    # Edge nodes too slow (1 s); the pool's 220 ms (120 round trip + 100 compute) fits the
    # 250 ms SLO and the max cost until the spike; degradation (and so split) refused.
    url = server.http_url if via == "http" else server.grpc_url
    rt, refresher, _ = setup.make(url, latency=1000.0)
    assert await refresher.refresh_once() == "ok"
    tags = {"x-affinity-slo-ms": "250", "x-affinity-max-cost": "0.0005",
            "x-affinity-degrade": "false"}
    before = [route(rt, f"k{i}", **tags) for i in range(50)]
    assert {m for m, _, _ in before} == {"cloud"}
    await publish(server, setup, feed_doc(setup.clock(), price=36.0))  # 10x the spot price
    assert await refresher.refresh_once() == "ok"
    after = [route(rt, f"k{i}", **tags) for i in range(50)]
    assert {m for m, _, _ in after} == {"edge"}  # best effort: cloud now over max cost
    assert all(status == 200 for _, _, status in after)


async def test_unhealthy_node_moves_only_its_own_keys(setup: Setup, server: FeedServer) -> None:
    rt, refresher, metrics = setup.make(server.http_url)
    assert await refresher.refresh_once() == "ok"
    keys = [f"user-{i}" for i in range(400)]
    home = {k: route(rt, k)[1] for k in keys}
    assert set(home.values()) == {"e1", "e2", "e3", "e4"}
    await publish(server, setup, feed_doc(setup.clock(), unhealthy=["e2"]))
    assert await refresher.refresh_once() == "ok"
    now = {k: route(rt, k)[1] for k in keys}
    moved = {k for k in keys if now[k] != home[k]}
    assert moved == {k for k in keys if home[k] == "e2"}
    assert "e2" not in now.values()
    assert sample(metrics, "router_node_weight", node="e2") == 0.0
    assert sample(metrics, "router_node_weight", node="e1") == 1.0


async def test_unchanged_feed_costs_a_304_and_no_rebuild(setup: Setup, server: FeedServer
                                                         ) -> None:
    rt, refresher, metrics = setup.make(server.http_url)
    assert await refresher.refresh_once() == "ok"
    rebuilds = rt.rebuilds
    assert await refresher.refresh_once() == "unchanged"
    assert server.stats["304"] == 1 and rt.rebuilds == rebuilds
    # a newer timestamp with the same capacity and prices: accepted, nothing rebuilt
    await publish(server, setup, feed_doc(setup.clock() + 1))
    assert await refresher.refresh_once() == "ok"
    assert rt.rebuilds == rebuilds
    assert sample(metrics, "router_feed_refresh_total", result="unchanged") == 1


async def test_grpc_push_takes_effect_without_waiting_for_the_poll(
        setup: Setup, server: FeedServer) -> None:
    rt, refresher, metrics = setup.make(server.grpc_url, refresh=3600)
    task = asyncio.create_task(refresher.run())
    try:
        async with asyncio.timeout(10):
            while rt.feed is None or refresher.pushes == 0:
                await asyncio.sleep(0.02)
        assert route(rt, "k")[0] == "edge"
        write_feed(setup.feed_path, feed_doc(setup.clock(), unhealthy=["e1", "e2", "e3", "e4"]))
        async with asyncio.timeout(10):  # the next poll is an hour away
            while any(n.healthy for n in rt.snapshot.nodes):
                await asyncio.sleep(0.02)
        assert route(rt, "k")[0] == "cloud"
        assert refresher.pushes >= 2
        assert sample(metrics, "router_feed_refresh_total", result="ok") >= 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _bad(kind: str, now: float) -> dict[str, object] | str:
    good = feed_doc(now)
    if kind == "bad-json":
        return json.dumps(good)[:-5]
    if kind == "nan-price":
        return json.dumps(good).replace('"usd_per_hour": 3.6', '"usd_per_hour": NaN')
    if kind == "negative-price":
        return feed_doc(now, price=-1.0)
    nodes = good["nodes"]
    assert isinstance(nodes, list)
    if kind == "negative-slots":
        nodes[0]["slots"] = -1
    elif kind == "unknown-node":
        nodes.append({"id": "ghost", "healthy": True})
    elif kind == "future":
        return feed_doc(now + 3600)
    elif kind == "older":
        return feed_doc(now - 3600)
    elif kind == "oversize":
        return json.dumps(good) + " " * 5000
    return good


@pytest.mark.parametrize("kind", ["bad-json", "nan-price", "negative-price", "negative-slots",
                                  "unknown-node", "future", "older", "oversize"])
@pytest.mark.parametrize("via", ["http", "grpc"])
async def test_invalid_snapshot_is_refused_counted_and_last_good_kept(
        setup: Setup, server: FeedServer, kind: str, via: str) -> None:
    url = server.http_url if via == "http" else server.grpc_url
    rt, refresher, metrics = setup.make(url)
    assert await refresher.refresh_once() == "ok"
    good = rt.feed
    table = rt.snapshot
    await publish(server, setup, _bad(kind, setup.clock()))
    assert await refresher.refresh_once() == "invalid"
    assert rt.feed is good and rt.snapshot is table
    assert sample(metrics, "router_feed_refresh_total", result="invalid") == 1
    assert route(rt, "k")[2] == 200
    # the next good snapshot is taken again
    await publish(server, setup, feed_doc(setup.clock() + 1, unhealthy=["e1"]))
    assert await refresher.refresh_once() == "ok"
    assert rt.feed is not good


async def test_unreachable_feed_goes_stale_and_traffic_keeps_flowing(
        setup: Setup, server: FeedServer) -> None:
    rt, refresher, metrics = setup.make(server.http_url)
    assert await refresher.refresh_once() == "ok"
    assert not rt.snapshot.stale
    await server.stop()
    assert await refresher.refresh_once() == "unreachable"
    assert not rt.snapshot.stale  # still within stale_after_seconds (30 s)
    setup.clock.offset = 45.0
    assert await refresher.refresh_once() == "unreachable"
    assert rt.snapshot.stale
    assert sample(metrics, "router_feed_age_seconds") >= 45.0
    assert sample(metrics, "router_feed_refresh_total", result="unreachable") == 2
    assert sample(metrics, "router_node_weight", node="e1") == 0.5  # stale_weight
    results = [route(rt, f"k{i}") for i in range(100)]
    assert all(status == 200 and mode == "edge" for mode, _, status in results)


async def test_staleness_rebuilds_without_a_new_snapshot(setup: Setup) -> None:
    rt, refresher, _ = setup.make(f"file:{setup.feed_path}")
    assert await refresher.refresh_once() == "ok"
    rebuilds = rt.rebuilds
    setup.clock.offset = 31.0
    assert await refresher.check_staleness()
    assert rt.snapshot.stale and rt.rebuilds == rebuilds + 1
    assert not await refresher.check_staleness()  # crossed once, rebuilt once
    write_feed(setup.feed_path, feed_doc(setup.clock()))  # fresh again
    assert await refresher.refresh_once() == "ok"
    assert not rt.snapshot.stale


async def test_feed_spend_merges_with_router_spend(setup: Setup, server: FeedServer) -> None:
    rt, refresher, _ = setup.make(server.http_url)
    now = setup.clock()
    await publish(server, setup, feed_doc(now, spend={"acme": 40.0}))
    assert await refresher.refresh_once() == "ok"
    assert rt.ledger.state(rt.policy.budgets, "acme", now).committed_usd == pytest.approx(40.0)
    # admitted after the bill's as-of
    held = rt.ledger.reserve(rt.policy.budgets, "acme", 2.0, now + 3)
    assert held is not None
    rt.ledger.settle(held)
    await publish(server, setup, feed_doc(now + 1, spend={"acme": 40.0}))
    assert await refresher.refresh_once() == "ok"  # the same bill again: not counted twice
    assert rt.ledger.state(rt.policy.budgets, "acme", now + 4).committed_usd == pytest.approx(42.0)
    await publish(server, setup, feed_doc(now + 5, spend={"acme": 42.0}))
    assert await refresher.refresh_once() == "ok"  # the bill caught up with the $2
    assert rt.ledger.state(rt.policy.budgets, "acme", now + 6).committed_usd == pytest.approx(42.0)
