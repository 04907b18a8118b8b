"""The edge estimate is a tail: never below a node's unloaded p95 (`edge.tail_factor`)."""

from __future__ import annotations

import pytest

from router.core import estimate
from router.core.admit import decide, finish
from router.core.feedsnapshot import NodeState
from router.core.policy import Policy

from .factory import feed, ledger, node, policy, pool, request, table

KEYS = [f"cam-{i}" for i in range(200)]


def fleet(base_ms: float, tail_factor: float | None = None) -> Policy:
    """One 2-slot node of `base_ms` and a pool, `tail_factor` as given (None: the default)."""
    pol = policy([node(0, slots=2, latency=base_ms)], [pool()])
    if tail_factor is None:
        return pol
    return pol.model_copy(update={"edge": pol.edge.model_copy(
        update={"tail_factor": tail_factor})})


def modes(pol: Policy, reading: NodeState | None, slo: float = 150.0) -> set[tuple[str, str]]:
    """(mode, quality) of each key's request, alone on the node, under `reading`."""
    tab = table(pol, None if reading is None else feed({"n0000": reading}))
    led, out = ledger(pol), set()
    for key in KEYS:
        routed = decide(request(key, slo=slo), tab, led, now=tab.built_at)
        finish(routed, tab.tracker, led)
        out.add((routed.decision.mode, routed.decision.quality or ""))
    return out


@pytest.mark.parametrize(("base_ms", "tail_factor", "reading", "expected"), [
    # an Orin of 110 ms before the feed reports a p95: its tail, 154 ms, is over 150
    pytest.param(110, None, None, {("edge-degraded", "constrained")}, id="no-p95-tail-over"),
    pytest.param(110, 1.0, None, {("edge", "full")}, id="no-p95-held-to-the-mean"),
    # an L4 of 80 ms: its tail, 112 ms, meets 150
    pytest.param(80, None, None, {("edge", "full")}, id="no-p95-tail-within"),
    # a p95 below the tail (keys warm at home) does not lower the estimate under it
    pytest.param(110, None, NodeState(p95_ms=120, inflight=0),
                 {("edge-degraded", "constrained")}, id="warm-p95-under-the-tail"),
    pytest.param(110, 1.0, NodeState(p95_ms=120, inflight=0), {("edge", "full")},
                 id="warm-p95-held-to-the-mean"),
])
def test_a_node_whose_tail_misses_the_slo_serves_every_key_degraded(
        base_ms: float, tail_factor: float | None, reading: NodeState | None,
        expected: set[tuple[str, str]]) -> None:
    assert modes(fleet(base_ms, tail_factor), reading) == expected


def test_the_tail_is_a_floor_the_measured_load_rises_above() -> None:
    pol = fleet(40)  # tail 56 ms
    n = table(pol, feed({"n0000": NodeState(p95_ms=80, inflight=2)})).nodes[0]
    assert n.tail_ms == pytest.approx(56)
    assert estimate.edge_ms(n, 0) == pytest.approx(80)  # another router's 2 in flight
    assert estimate.edge_ms(n, 2) == pytest.approx(120)
    idle = table(pol, feed({"n0000": NodeState(p95_ms=80, inflight=0)})).nodes[0]
    assert estimate.edge_ms(idle, 0) == pytest.approx(56)  # unloaded: the tail, not the mean
    assert estimate.reading_ms(idle) == pytest.approx(80)


@pytest.mark.parametrize(("estimate_ms", "tail_ms", "share"), [
    pytest.param(200, 0, 0.5, id="load-over: (E - B) / (E - base)"),
    pytest.param(200, 140, 0.5, id="tail-within: as before"),
    pytest.param(200, 160, 1.0, id="tail-over: every key"),
    pytest.param(140, 160, 0.0, id="within-the-bound: none"),
])
def test_a_node_over_the_bound_even_unloaded_sheds_every_key(
        estimate_ms: float, tail_ms: float, share: float) -> None:
    assert estimate.shed_fraction(estimate_ms, 150, 100, tail_ms) == pytest.approx(share)
