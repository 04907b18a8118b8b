"""Capacity leases (router.core.capacity): the fleet-wide bound and max-min fairness."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.capacity import (
    demand,
    fair,
    held_after,
    keep,
    resources,
    safe_share,
    settle,
)

from .factory import node, policy, pool, table

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
demands_st = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 40), max_size=8)


@pytest.mark.parametrize(("capacity", "demands", "want"), [
    pytest.param(8, {"a": 30, "b": 4, "c": 2}, {"a": 3, "b": 3, "c": 2}, id="busy-capped"),
    pytest.param(8, {"a": 1, "b": 1}, {"a": 4, "b": 4}, id="idle-spread"),
    pytest.param(8, {"a": 7, "b": 1}, {"a": 7, "b": 1}, id="exact"),
    pytest.param(2, {"a": 9, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 0}, id="fewer-than-routers"),
    pytest.param(0, {"a": 3}, {"a": 0}, id="drained"),
    pytest.param(5, {}, {}, id="nobody"),
])
def test_fair_targets(capacity: int, demands: dict[str, int], want: dict[str, int]) -> None:
    assert fair(capacity, demands) == want


@SETTINGS
@given(capacity=st.integers(0, 64), demands=demands_st)
def test_fair_is_max_min_and_never_over_capacity(capacity: int,
                                                  demands: dict[str, int]) -> None:
    alloc = fair(capacity, demands)
    assert set(alloc) == set(demands)
    assert all(v >= 0 for v in alloc.values())
    assert sum(alloc.values()) == (capacity if demands else 0)
    if sum(demands.values()) <= capacity:
        assert all(alloc[n] >= d for n, d in demands.items())
    for n, d in demands.items():
        if alloc[n] < d:  # short: nobody holds more than one slot above it
            assert all(v <= alloc[n] + 1 for v in alloc.values())
            assert alloc[n] >= min(d, capacity // len(demands))


ops = st.lists(st.tuples(st.sampled_from(["admit", "finish", "sync", "die", "lapse-all"]),
                         st.integers(0, 3), st.integers(0, 30)), min_size=1, max_size=300)


class Fleet:
    """A store's leases on one resource and four routers' local state, driven step by step."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.leases: dict[str, int] = {}
        self.demands: dict[str, int] = {}
        self.held = [0] * 4
        self.load = [0] * 4
        self.blocked = [0] * 4
        self.gone = [0] * 4  # requests of a dead router still running on the node

    def sync(self, r: int) -> None:
        name = f"r{r}"
        self.demands[name] = demand(self.load[r], self.blocked[r])
        self.blocked[r] = 0
        new, target = settle(self.capacity, self.leases, self.demands, name,
                             keep(self.held[r], self.load[r]))
        self.leases[name] = new
        self.held[r] = held_after(new, target)

    def admit(self, r: int) -> None:
        if self.load[r] < self.held[r]:
            self.load[r] += 1
        else:
            self.blocked[r] += 1

    def die(self, r: int) -> None:
        """Its lease lapses; in this model its requests end with it (TTL > request time)."""
        self.leases.pop(f"r{r}", None)
        self.demands.pop(f"r{r}", None)
        self.held[r] = self.load[r] = 0


@SETTINGS
@given(capacity=st.integers(0, 16), steps=ops)
def test_leases_never_add_up_past_capacity(capacity: int,
                                           steps: list[tuple[str, int, int]]) -> None:
    f = Fleet(capacity)
    for op, r, _ in steps:
        if op == "admit":
            f.admit(r)
        elif op == "finish" and f.load[r] > 0:
            f.load[r] -= 1
        elif op == "sync":
            f.sync(r)
        elif op == "die":
            f.die(r)
        assert sum(f.leases.values()) <= capacity
        assert sum(f.load) <= capacity
        for i in range(4):
            lease = f.leases.get(f"r{i}", 0)
            assert f.load[i] <= lease
            assert f.held[i] <= lease


@SETTINGS
@given(capacity=st.integers(1, 32), wants=st.lists(st.integers(0, 40), min_size=1, max_size=4))
def test_demand_is_followed_to_a_fair_share(capacity: int, wants: list[int]) -> None:
    """Closed-loop routers that always want `wants[r]` slots: after a few periods each
    holds at least its max-min guarantee, and the node is as full as demand makes it."""
    f = Fleet(capacity)
    for _ in range(3 * capacity.bit_length() + 6):
        for r, want in enumerate(wants):
            f.load[r] = 0  # requests shorter than a sync period: the last ones ended
            for _ in range(want):  # every client tries once: admitted or turned away
                f.admit(r)
            f.sync(r)
    n = len(wants)
    for r, want in enumerate(wants):
        assert f.held[r] >= min(want, capacity // n)
    assert sum(min(w, h) for w, h in zip(wants, f.held, strict=False)) >= \
        min(capacity, sum(wants)) - n


def test_demand_is_use_plus_requests_turned_away() -> None:
    assert demand(3, 9) == 12
    assert demand(0, 0) == 0
    assert demand(2, 0) == 2


def test_safe_share_keeps_every_router_falling_back_together_within_capacity() -> None:
    assert [safe_share(8, n) for n in (0, 1, 3, 9)] == [8, 8, 2, 0]


def test_resources_cover_slots_feature_slots_and_capped_pools() -> None:
    capped = pool("capped").model_copy(update={"max_inflight": 5})
    snap = table(policy([node(0, slots=4), node(1, slots=2)], [capped, pool("open", port=9901)]))
    got = {r.name: (r.slot, r.capacity) for r in resources(snap)}
    assert got["n0000"] == (snap.nodes[0].slot, 4)
    assert got["n0001#features"] == (snap.nodes[1].feature_slot, snap.nodes[1].feature_slots)
    assert got["pool:capped"] == (snap.pools[0].slot, 5)
    assert "pool:open" not in got


def test_the_walk_admits_only_within_the_lease_and_goes_on_over_leased_room() -> None:
    from router.core.admit import decide
    from router.core.decision import Candidate
    from router.core.plan import explained, plan_whole

    from .factory import ledger, request

    pol = policy([node(0, slots=8), node(1, slots=8)], min_cap=1.0)
    snap, led = table(pol), ledger(pol)
    snap.tracker.lease_all()
    home = decide(request("k"), snap, led, now=0.0).decision
    assert home.status == 503  # nothing leased yet: no edge slot is this router's
    first, other = snap.nodes
    snap.tracker.held[first.slot] = snap.tracker.held[other.slot] = 1
    d1 = decide(request("k"), snap, led, now=0.0).decision
    d2 = decide(request("k"), snap, led, now=0.0).decision
    assert {d1.node, d2.node} == {first.id, other.id}  # the second goes on to leased room
    notes: list[Candidate] = explained(plan_whole(request("k"), snap, led, now=0.0))
    assert sum("out of leased slots" in n.verdict for n in notes) == 2
    decide(request("k"), snap, led, now=0.0)  # both leases full: turned away
    home = next(n for n in snap.nodes if n.id == d1.node)
    away = next(n for n in snap.nodes if n.id != d1.node)
    # a walk that found no leased room counts once, at the first node it found leased
    # out (the key's home); d2, placed on leased room past its home, counts nothing
    assert (snap.tracker.blocked[home.slot], snap.tracker.blocked[away.slot]) == (2, 0)
