"""A full edge queues before it spills (edge.queue_per_slot): a request that finds every node
it may walk to full waits on one of them, its wait in its estimate, rather than leave the edge
for one request; docs/reference.md, "Routing"."""

from __future__ import annotations

from typing import Any

from router import wire
from router.core.admit import decide, finish
from router.core.plan import explained, plan_whole

from .factory import NOW, ledger, node, policy, pool, request, table


def test_every_node_full_queues_the_request_on_its_home_with_its_wait_in_the_estimate() -> None:
    pol = policy([node(0, slots=2), node(1, slots=2)], [pool(latency=80)], queue=1.0)
    tab, led = table(pol), ledger(pol)
    for n in tab.nodes:  # both nodes' slots taken
        for _ in range(2):
            tab.tracker.acquire(n.slot)
    queued = decide(request("cam", slo=200), tab, led, now=NOW).decision
    home = plan_whole(request("cam", slo=200), tab, led, now=NOW).walks[0].passed[0].node
    assert (queued.mode, queued.node) == (wire.MODE_EDGE, home.id)
    # one slot of two to free, at the node's unloaded tail: 30 ms x 1.4 / 2
    tail = 30.0 * pol.edge.tail_factor
    assert queued.est_ms == tail + tail / 2
    notes = explained(plan_whole(request("cam", slo=200), tab, led, now=NOW))
    assert any(n.verdict.startswith("queued: every node full, waits ~42 ms") for n in notes)


def test_without_a_queue_a_full_edge_spills_to_split_as_before() -> None:
    pol = policy([node(0, slots=2)], [pool(latency=80)], queue=0.0)
    tab, led = table(pol), ledger(pol)
    modes = [decide(request(f"k{i}", slo=200), tab, led, now=NOW).decision.mode
             for i in range(3)]
    assert modes == ["edge", "edge", "split"]


def test_the_queue_holds_queue_per_slot_times_the_slots_then_the_edge_spills() -> None:
    pol = policy([node(0, slots=2)], [pool(latency=80)], queue=1.0)
    tab, led = table(pol), ledger(pol)
    got = [decide(request(f"k{i}", slo=400), tab, led, now=NOW) for i in range(6)]
    assert [r.decision.mode for r in got] == ["edge"] * 4 + ["split"] * 2
    # each place further back waits one more slot's turn
    tail = 30.0 * pol.edge.tail_factor
    assert [r.decision.est_ms for r in got[2:4]] == [tail + tail / 2, tail + tail]
    assert tab.tracker.loads[tab.nodes[0].slot] == 4
    finish(got[0], tab.tracker, led)  # a place frees: the next request takes it
    assert decide(request("k9", slo=400), tab, led, now=NOW).decision.mode == "edge"


def test_a_wait_that_misses_the_slo_leaves_the_edge_for_a_split_that_meets_it() -> None:
    # a lone 1-slot node: a queued place waits a whole tail, 42 ms, so even at minimal
    # quality (42 x 0.35 + 42 = 56.7 ms) it misses 35 ms x degraded_slack 1.5; a split takes
    # 5 ms of features + 10 ms there + 0.7 x 10 ms of compute
    pol = policy([node(0, slots=1)], [pool(latency=10, compute_ms=10)], queue=1.0)
    tab, led = table(pol), ledger(pol)
    assert decide(request("a", slo=200), tab, led, now=NOW).decision.mode == "edge"
    spill = decide(request("b", slo=35), tab, led, now=NOW).decision
    assert (spill.mode, spill.est_ms) == (wire.MODE_SPLIT, 22.0)
    # a request whose SLO the wait meets is queued
    assert decide(request("c", slo=200), tab, led, now=NOW).decision.mode == "edge"


def test_a_node_whose_cap_holds_it_below_its_slots_is_not_queued_on() -> None:
    # weights 1 and 9 with 4 slots each: the light node's bounded-load cap stays under its
    # slots, so it is never full by its slots and takes no queue; the heavy one does
    pol = policy([node(0, slots=4, weight=1.0), node(1, slots=4, weight=9.0)], [pool()],
                 queue=1.0)
    tab, led = table(pol), ledger(pol)
    for i in range(40):
        decide(request(f"k{i}", slo=1000), tab, led, now=NOW)
    light, heavy = tab.nodes
    assert tab.tracker.loads[light.slot] < light.slots
    assert tab.tracker.loads[heavy.slot] == heavy.slots * 2


def test_a_queued_request_counts_as_demand_its_lease_did_not_meet() -> None:
    pol = policy([node(0, slots=8)], [pool()], queue=1.0)
    tab, led = table(pol), ledger(pol)
    tab.tracker.lease_all()
    tab.tracker.held[tab.nodes[0].slot] = 1  # this router leases 1 of the node's 8 slots
    assert decide(request("a"), tab, led, now=NOW).decision.mode == "edge"
    queued = decide(request("b"), tab, led, now=NOW).decision
    assert queued.mode == "edge"  # one place behind its one leased slot
    # the capacity keeper reads the wait as demand: the lease should grow
    assert tab.tracker.blocked[tab.nodes[0].slot] == 1


def _home_full(queue: float) -> tuple[Any, Any, Any, str]:
    """Two 2-slot nodes; the key "cam"'s home with both its slots taken, one of the other's:
    (table, ledger, home node, the other node's id). The home's bounded-load cap, 3 of the
    3 in flight, is over its slots: it is full by its slots alone."""
    pol = policy([node(0, slots=2), node(1, slots=2)], [pool(latency=80)], queue=queue)
    tab, led = table(pol), ledger(pol)
    home = plan_whole(request("cam", slo=200), tab, led, now=NOW).walks[0].pick.node
    for _ in range(2):
        tab.tracker.acquire(home.slot)
    other = next(n for n in tab.nodes if n is not home)
    tab.tracker.acquire(other.slot)
    return tab, led, home, other.id


def test_a_key_waits_at_its_full_home_rather_than_go_cold_to_a_node_with_room() -> None:
    tab, led, home, _ = _home_full(queue=1.0)
    notes = explained(plan_whole(request("cam", slo=200), tab, led, now=NOW))
    assert any(n.verdict.startswith("queued at the key's home: waits ~21 ms") for n in notes)
    d = decide(request("cam", slo=200), tab, led, now=NOW).decision
    # one place behind two busy slots: half the node's unloaded tail, 42 ms / 2
    tail = 30.0 * tab.policy.edge.tail_factor
    assert (d.mode, d.node, d.est_ms) == (wire.MODE_EDGE, home.id, tail + tail / 2)
    assert tab.tracker.loads[home.slot] == 3  # its slots and one place in its queue


def test_a_wait_at_home_that_misses_the_slo_goes_to_the_node_with_room() -> None:
    # at home the rung would take 42 + 21 ms, over 50; the other node answers in 42
    tab, led, home, other = _home_full(queue=1.0)
    d = decide(request("cam", slo=50), tab, led, now=NOW).decision
    assert (d.mode, d.node, d.est_ms) == (wire.MODE_EDGE, other, 30.0 * 1.4)
    assert tab.tracker.loads[home.slot] == 2


def test_without_a_queue_a_full_home_sends_the_key_to_the_node_with_room() -> None:
    tab, led, _, other = _home_full(queue=0.0)
    assert decide(request("cam", slo=200), tab, led, now=NOW).decision.node == other
