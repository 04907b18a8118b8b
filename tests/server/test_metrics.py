"""Router series beyond the decision counters: refusals, budget thresholds, event-loop lag."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest

from router.metrics import (
    FEED_RESULTS,
    RELOAD_RESULTS,
    RouterMetrics,
    State,
    probe_loop_lag,
    runtime_state,
)
from tests.server.test_servicer import Client


def value(metrics: RouterMetrics, name: str, **labels: str) -> float | None:
    """One sample's value, None when the series does not exist."""
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize(("headers", "code", "reason"), [
    ({"x_affinity_slo_ms": "soon"}, "400", "bad-tag"),
    ({"x_affinity_residency": "GDPR,CCPA"}, "503", "residency"),
], ids=["bad-tag", "unservable"])
async def test_each_refusal_counts_once_by_status_and_reason(headers: dict[str, str], code: str,
                                                              reason: str) -> None:
    async with Client() as c:
        for n in (1, 2):
            _, answer, outbox = await c.open(**headers)
            assert answer.immediate_response.status.code == int(code)
            await outbox.put(None)
            assert value(c.metrics, "router_refusals_total", code=code, reason=reason) == n
        _, answer, outbox = await c.open(x_affinity_key="k", x_affinity_residency="GDPR")
        assert answer.HasField("request_headers")  # routed: not a refusal
        await outbox.put(None)
        await c.settled()
        total = sum(s.value for m in c.metrics.registry.collect() for s in m.samples
                    if s.name == "router_refusals_total")
        assert total == 2


async def test_budget_refusal_counts_as_429_budget() -> None:
    async with Client() as c:
        for i in range(4):
            _, answer, outbox = await c.open(x_affinity_tenant="tight",
                                             x_affinity_residency="HIPAA", x_affinity_key=f"h{i}")
            await outbox.put(None)
            await c.settled()
        assert answer.immediate_response.status.code == 429
        refused = value(c.metrics, "router_refusals_total", code="429", reason="budget")
        assert refused is not None and refused >= 1


def test_budget_thresholds_are_published_in_usd_and_unlimited_ones_left_out() -> None:
    m = RouterMetrics()
    m.watch(lambda: State(budgets={"acme": (120.5, 800.0, 1000.0, 200.0),
                                   "free": (3.0, float("inf"), float("inf"), float("inf"))}))
    assert value(m, "router_budget_spend_usd", tenant="acme") == 120.5
    assert value(m, "router_budget_limit_usd", tenant="acme", threshold="soft") == 800.0
    assert value(m, "router_budget_limit_usd", tenant="acme", threshold="hard") == 1000.0
    assert value(m, "router_budget_spend_usd", tenant="free") == 3.0
    assert value(m, "router_budget_limit_usd", tenant="free", threshold="hard") is None
    assert value(m, "router_budget_lease_usd", tenant="acme") == 200.0


def test_state_gauges_are_read_off_the_runtime_at_scrape_time() -> None:
    from router.runtime import Runtime
    from tests.core.factory import NOW, node, policy, pool, request

    one = node(0, slots=1).model_copy(update={"feature_slots": 2})
    rt = Runtime(policy([one], [pool()], limit=10.0), clock=lambda: NOW)
    m = RouterMetrics()
    m.watch(lambda: runtime_state(rt))
    held = [rt.decide(request(f"k{i}", slo=1000), now=NOW) for i in range(3)]
    assert [h.decision.mode for h in held] == ["edge", "split", "split"]
    assert value(m, "router_node_inflight", node="n0000") == 1
    assert value(m, "router_node_features_inflight", node="n0000") == 2
    assert value(m, "router_node_inflight", node="cloud") == 2  # the splits' inference
    assert value(m, "router_node_weight", node="n0000") == 1.0
    for h in held:
        rt.finish(h)
    assert value(m, "router_node_inflight", node="n0000") == 0  # live, no publisher needed


def test_in_flight_is_published_against_slots_and_cap_with_the_policy_version() -> None:
    from router.runtime import Runtime
    from tests.core.factory import NOW, node, policy, request

    nodes = [node(i, slots=16) for i in range(4)]
    rt = Runtime(policy(nodes, eps=0.25, min_cap=0.25), clock=lambda: NOW)
    m = RouterMetrics()
    m.watch(lambda: runtime_state(rt))
    assert value(m, "router_node_slots", node="n0000") == 16
    assert value(m, "router_node_cap", node="n0000") == 4  # the floor: 0.25 x 16 slots
    held = [rt.decide(request(f"k{i}", slo=1000), now=NOW) for i in range(20)]
    assert all(h.decision.mode == "edge" for h in held)
    # ceil(1.25 x (20 + 1) x 1 / 4) = 7: above the floor now
    assert {value(m, "router_node_cap", node=n.id) for n in nodes} == {7}
    assert sum(value(m, "router_node_inflight", node=n.id) or 0 for n in nodes) == 20
    assert value(m, "router_policy_info", version=rt.policy.digest) == 1
    for h in held:
        rt.finish(h)
    assert value(m, "router_node_cap", node="n0000") == 4


def test_result_counters_exist_at_zero_before_the_first_event() -> None:
    m = RouterMetrics()
    for result in FEED_RESULTS:
        assert value(m, "router_feed_refresh_total", result=result) == 0.0
    for result in RELOAD_RESULTS:
        assert value(m, "router_policy_reload_total", result=result) == 0.0


def test_lag_buckets_resolve_a_tenth_of_a_millisecond_to_a_second() -> None:
    m = RouterMetrics()
    m.event_loop_lag.observe(0.00005)
    m.event_loop_lag.observe(0.003)
    m.event_loop_lag.observe(0.7)
    assert value(m, "router_event_loop_lag_seconds_bucket", le="0.0001") == 1
    assert value(m, "router_event_loop_lag_seconds_bucket", le="0.005") == 2
    assert value(m, "router_event_loop_lag_seconds_bucket", le="0.5") == 2
    assert value(m, "router_event_loop_lag_seconds_bucket", le="1.0") == 3


async def _observations(n: int, seen: list[float], task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(30):
        while len(seen) < n:
            assert not task.done()
            await asyncio.sleep(0.001)


async def test_probe_observes_how_late_the_loop_woke_it() -> None:
    seen: list[float] = []
    task = asyncio.create_task(probe_loop_lag(seen.append, interval=0.05))
    try:
        await _observations(1, seen, task)
        # The probe is asleep with a wake-up due within 50 ms; holding the loop for 200 ms
        # makes that wake-up at least 150 ms late, whatever else the machine is doing.
        time.sleep(0.2)
        await _observations(2, seen, task)
        assert seen[1] >= 0.15
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_probe_measures_with_its_clock_and_never_observes_a_negative_lag() -> None:
    ticks: Iterator[float] = itertools.chain([0.0, 0.5, 1.0, 1.0, 2.0, 2.001],
                                             itertools.repeat(3.0))
    seen: list[float] = []
    task = asyncio.create_task(probe_loop_lag(seen.append, interval=0.01,
                                              clock=lambda: next(ticks)))
    try:
        await _observations(3, seen, task)
        assert seen[:3] == [pytest.approx(0.49), 0.0, 0.0]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
