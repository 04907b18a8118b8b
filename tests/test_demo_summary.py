"""The demo's summary shows what the router's metrics say, and says so when it cannot ask."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from router.demo.summary import parse, render
from router.demo.traffic import Stats
from router.metrics import RouterMetrics, runtime_state
from router.policy.loader import load_policy
from router.runtime import Runtime

EXAMPLE = Path(__file__).resolve().parent.parent / "policies" / "example.yaml"


def test_while_the_router_restarts_the_summary_says_unreachable_not_zero() -> None:
    policy = load_policy(EXAMPLE)
    out = render(policy, Stats(), {}, elapsed=40.0, events=[])
    assert "router unreachable" in out
    assert "(out of ring)" not in out and "0.00" not in out and "$0" not in out
    assert "budget this month: router unreachable" in out
    assert "feed age: router unreachable" in out


def test_caps_and_slots_come_from_the_routers_own_gauges() -> None:
    policy = load_policy(EXAMPLE)
    rt = Runtime(policy)
    metrics = RouterMetrics()
    metrics.watch(lambda: runtime_state(rt))
    held = [rt.route({"x-affinity-key": f"k{i}", "x-affinity-residency": "GDPR"})
            for i in range(30)]
    text = generate_latest(metrics.registry).decode()
    state = runtime_state(rt)
    out = render(policy, Stats(), parse(text), elapsed=1.0, events=[])
    for node in policy.nodes:
        row = next(line for line in out.splitlines() if line.startswith(node.id + " "))
        cols = row.split()
        assert cols[2:6] == [f"{state.weights[node.id]:.2f}",
                             str(state.inflight.get(node.id, 0)), str(state.caps[node.id]),
                             str(state.slots[node.id])], row
    for routed in held:
        rt.finish(routed)
