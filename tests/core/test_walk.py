"""The bounded-load walk, tuned for speed, picks exactly what the plain walk of its definition
picks: the first node from hash(key) under its cap (ring.cap) and its slots; when there is
none, a place in the queue of the first full node still under its cap whose queue
(edge.queue_per_slot × its slots) has room."""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.loads import LoadTracker
from router.core.pick import Pick, pick_edge, pick_feature
from router.core.ring import cap, hash64
from router.core.table import ClassEntry, Snapshot

from .factory import node, policy, table


def reference(entry: ClassEntry, snap: Snapshot, key: str, features: bool) -> Pick | None:
    """The walk as docs/reference.md states it, with nothing hoisted or skipped."""
    ring = entry.ring
    n = len(ring.keys)
    gid = entry.fgid if features else entry.gid
    total = snap.tracker.total(gid, entry.feature_slots if features else entry.member_slots)
    start = bisect_right(ring.keys, hash64(key))
    seen: list[int] = []
    for step in range(n):
        owner = ring.owners[(start + step) % n]
        if owner in seen:
            continue
        seen.append(owner)
        rt = snap.nodes[owner]
        load = snap.tracker.loads[rt.feature_slot if features else rt.slot]
        limit = cap(total, rt.weight, entry.weight_sum, snap.policy.balance_factor, rt.min_cap)
        if load < (rt.feature_slots if features else rt.slots) and load < limit:
            return Pick(rt, len(seen) == 1, load, limit)
    per_slot = snap.policy.edge.queue_per_slot
    for i, owner in enumerate(seen):
        rt = snap.nodes[owner]
        load = snap.tracker.loads[rt.slot]
        limit = cap(total, rt.weight, entry.weight_sum, snap.policy.balance_factor, rt.min_cap)
        if not features and rt.slots <= load < min(limit, rt.slots + int(per_slot * rt.slots)):
            return Pick(rt, i == 0, load, limit, (load - rt.slots + 1) * rt.tail_ms / rt.slots)
    return None


@settings(max_examples=150, deadline=None)
@given(weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0, 8.0]), min_size=1, max_size=7),
       slots=st.lists(st.integers(1, 6), min_size=7, max_size=7),
       loads=st.lists(st.integers(0, 7), min_size=7, max_size=7),
       eps=st.sampled_from([0.1, 0.25, 1.0]), floor=st.sampled_from([0.0, 0.5]),
       keys=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6),
       queue=st.sampled_from([0.0, 0.5, 1.0]))
def test_the_walk_picks_what_its_definition_picks(weights, slots, loads, eps, floor,  # type: ignore[no-untyped-def]
                                                  keys, queue) -> None:
    nodes = [node(i, weight=w, slots=slots[i]) for i, w in enumerate(weights)]
    pol = policy(nodes, eps=eps, min_cap=floor, queue=queue)
    tracker = LoadTracker()
    tab = table(pol, tracker=tracker)
    entry = tab.entry(frozenset(), None)
    for i, rt in enumerate(tab.nodes):
        for _ in range(loads[i]):
            tracker.acquire(rt.slot)
        for _ in range(loads[-1 - i]):
            tracker.acquire(rt.feature_slot)
    for key in keys:
        assert pick_edge(entry, tab, key).pick == reference(entry, tab, key, False)
        assert pick_feature(entry, tab, key).pick == reference(entry, tab, key, True)
