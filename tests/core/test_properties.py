"""Invariants of the core over random fleets, loads and keys (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.admit import decide, finish
from router.core.plan import plan
from router.core.ring import cap

from .factory import NOW, ledger, node, policy, pool, request, table

TAGS = ["GDPR", "CCPA", "HIPAA"]
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

fleets = st.lists(
    st.tuples(st.floats(0.1, 8.0), st.integers(1, 12),
              st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
    min_size=1, max_size=12)
ops = st.lists(st.tuples(st.booleans(), st.integers(0, 40),
                         st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
               min_size=1, max_size=150)


@SETTINGS
@given(fleet=fleets, steps=ops, eps=st.sampled_from([0.1, 0.25, 1.0]),
       floor=st.sampled_from([0.0, 0.5]))
def test_no_node_ever_exceeds_its_cap_or_slots(fleet, steps, eps, floor) -> None:  # type: ignore[no-untyped-def]
    nodes = [node(i, weight=w, slots=s, residency=r) for i, (w, s, r) in enumerate(fleet)]
    pol = policy(nodes, [pool()], eps=eps, min_cap=floor)
    tab, led = table(pol), ledger(pol)
    live = []
    for release, key, tags in steps:
        if release and live:
            finish(live.pop(key % len(live)), tab.tracker, led)
            continue
        entry = tab.entry(frozenset(tags), None)
        total = sum(tab.tracker.loads[tab.nodes[i].slot] for i in entry.ring.members)
        ftotal = sum(tab.tracker.loads[tab.nodes[i].feature_slot] for i in entry.ring.members)
        before = list(tab.tracker.loads)
        routed = decide(request(f"key-{key}", residency=tags, slo=1000), tab, led, now=NOW)
        live.append(routed)
        d = routed.decision
        if d.mode in ("edge", "edge-degraded", "split"):
            rt = next(n for n in tab.nodes if n.id == d.node)
            # a split holds a feature slot, counted and capped apart from inference slots
            slot, held, most = (rt.feature_slot, ftotal, rt.feature_slots) \
                if d.mode == "split" else (rt.slot, total, rt.slots)
            limit = cap(held, rt.weight, entry.weight_sum, eps, rt.min_cap)
            assert before[slot] < limit and before[slot] < most
            assert routed.rung is not None and 0 < routed.rung.fill <= 1.0
            assert set(tags) <= rt.spec.residency
        for n in tab.nodes:
            assert tab.tracker.loads[n.slot] <= n.slots
            assert tab.tracker.loads[n.feature_slot] <= n.feature_slots
    for r in live:
        finish(r, tab.tracker, led)
    assert all(v == 0 for v in tab.tracker.loads)


@SETTINGS
@given(fleet=fleets, pools_tags=st.lists(st.lists(st.sampled_from(TAGS), max_size=2,
                                                  unique=True), max_size=3), steps=ops)
def test_residency_never_broken(fleet, pools_tags, steps) -> None:  # type: ignore[no-untyped-def]
    nodes = [node(i, weight=w, slots=s, residency=r) for i, (w, s, r) in enumerate(fleet)]
    pools = [pool(f"p{i}", port=9900 + i, residency=t) for i, t in enumerate(pools_tags)]
    pol = policy(nodes, pools)
    tab, led = table(pol), ledger(pol)
    where = {**{n.id: n.residency for n in nodes}, **{p.id: p.residency for p in pools}}
    for _, key, tags in steps:
        d = decide(request(f"k{key}", residency=tags, slo=50), tab, led, now=NOW).decision
        if d.routed:
            assert set(tags) <= where[d.node or ""]
            if d.split_pool:
                assert set(tags) <= where[d.split_pool]
        else:
            assert d.status in (429, 503)


@SETTINGS
@given(limit=st.floats(0.0, 5.0), prices=st.lists(st.floats(0.01, 2.0), min_size=1,
                                                  max_size=80),
       releases=st.lists(st.booleans(), min_size=80, max_size=80))
def test_cloud_spend_never_passes_the_hard_budget(limit, prices, releases) -> None:  # type: ignore[no-untyped-def]
    pol = policy([], [pool(f"p{i}", port=9800 + i, usd_per_hour=p * 3600 * 10,
                           compute_ms=100.0) for i, p in enumerate(prices[:5])], limit=limit)
    tab, led = table(pol), ledger(pol)
    live = []
    for i, release in enumerate(releases[: len(prices) * 2]):
        routed = decide(request(f"k{i}", slo=1000), tab, led, now=NOW)
        if routed.decision.routed:
            live.append(routed)
        state = led.state(pol.budgets, "default", NOW)
        assert state.committed_usd + state.reserved_usd <= limit + 1e-9
        if release and live:
            finish(live.pop(0), tab.tracker, led)
    for r in live:
        finish(r, tab.tracker, led)
    assert led.state(pol.budgets, "default", NOW).committed_usd <= limit + 1e-9


@SETTINGS
@given(fleet=fleets, steps=ops, eps=st.sampled_from([0.1, 0.25, 1.0]),
       floor=st.sampled_from([0.0, 0.5]))
def test_the_walk_says_what_it_passed_and_why(fleet, steps, eps, floor) -> None:  # type: ignore[no-untyped-def]
    """Explain reads the one walk decide uses: every node it passed was full or at its cap,
    each once, in ring order before the one it took (all of them when it took none)."""
    from router.core.pick import pick_edge, pick_feature

    nodes = [node(i, weight=w, slots=s, residency=r) for i, (w, s, r) in enumerate(fleet)]
    pol = policy(nodes, [pool()], eps=eps, min_cap=floor)
    tab, led = table(pol), ledger(pol)
    live = []
    for release, key, tags in steps:
        if release and live:
            finish(live.pop(key % len(live)), tab.tracker, led)
            continue
        entry = tab.entry(frozenset(tags), None)
        for pick_walk in (pick_edge, pick_feature):
            walk = pick_walk(entry, tab, f"key-{key}")
            ids = [s.node.id for s in walk.passed]
            assert len(ids) == len(set(ids))
            assert all(s.load >= min(s.slots, s.cap) for s in walk.passed)
            if walk.pick is None:
                assert len(ids) == (len(entry.ring.members) if entry.ring.keys else 0)
            else:
                assert walk.pick.home == (not ids) and walk.pick.load < walk.pick.cap
                assert walk.pick.node.id not in ids
        live.append(decide(request(f"key-{key}", residency=tags, slo=1000), tab, led, now=NOW))
    for d in live:
        finish(d, tab.tracker, led)


def _homes(tab, led, keys):  # type: ignore[no-untyped-def]
    out = {}
    for k in keys:
        p = plan(request(k, slo=1000), tab, led, now=NOW)  # pure: holds nothing
        out[k] = p.options[0].node.id if p.options and p.options[0].node else None
    return out


@settings(max_examples=15, deadline=None)
@given(n=st.integers(4, 40), victim=st.integers(0, 1000))
def test_membership_change_moves_about_one_nth_of_keys(n: int, victim: int) -> None:
    keys = [f"session-{i}" for i in range(4000)]
    full = policy([node(i, slots=10_000) for i in range(n)])
    gone = victim % n
    less = policy([node(i, slots=10_000) for i in range(n) if i != gone])
    before = _homes(table(full), ledger(full), keys)
    after = _homes(table(less), ledger(less), keys)
    moved = [k for k in keys if before[k] != after[k]]
    victim_id = f"n{gone:04d}"
    # Removing a node moves exactly its own keys and no other key...
    assert all(before[k] == victim_id for k in moved)
    assert all(after[k] == before[k] for k in keys if before[k] != victim_id)
    # ...and those are about 1/n of all keys.
    fraction = len(moved) / len(keys)
    assert 0.4 / n <= fraction <= 2.0 / n, (n, fraction)
    # Adding it back moves exactly the same keys back to it.
    back = _homes(table(full), ledger(full), keys)
    assert back == before


@SETTINGS
@given(weights=st.lists(st.floats(0.5, 6.0), min_size=2, max_size=16),
       skew=st.floats(0.0, 2.0), count=st.integers(20, 400))
def test_load_ratio_stays_within_bound_at_eps_quarter(weights, skew, count) -> None:  # type: ignore[no-untyped-def]
    eps = 0.25
    pol = policy([node(i, weight=w, slots=10_000) for i, w in enumerate(weights)], eps=eps)
    tab, led = table(pol), ledger(pol)
    for i in range(count):  # Zipf-like: a few hot keys get most requests
        rank = int((i + 1) ** skew) % 50
        decide(request(f"hot-{rank}", slo=1000), tab, led, now=NOW)
    total = sum(tab.tracker.loads)
    wsum = sum(n.weight for n in tab.nodes)
    for n in tab.nodes:
        load = tab.tracker.loads[n.slot]
        assert load <= math.ceil((1 + eps) * total * n.weight / wsum)


def test_same_snapshot_same_decisions() -> None:
    pol = policy([node(i, weight=1 + i % 3, slots=3) for i in range(10)], [pool()])
    runs = []
    for _ in range(2):
        tab, led = table(pol), ledger(pol)
        runs.append([(d.mode, d.node) for d in
                     (decide(request(f"k{i % 17}"), tab, led, now=NOW).decision
                      for i in range(60))])
    assert runs[0] == runs[1]


@SETTINGS
@given(readings=st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 1.0), st.booleans(),
                                   st.sampled_from([None, 20.0, 80.0]), st.integers(0, 5),
                                   st.integers(0, 3), st.integers(0, 5)),
                         min_size=1, max_size=30))
def test_a_reused_node_is_exactly_a_freshly_built_one(readings) -> None:  # type: ignore[no-untyped-def]
    from router.core.feedsnapshot import NodeState
    from router.core.loads import LoadTracker
    from router.core.ring import PointCache
    from router.core.table import _node, build_table

    from .factory import feed

    pol = policy([node(i, latency=30.0) for i in range(4)])
    tracker, cache = LoadTracker(), PointCache()
    snap = build_table(pol, None, tracker, cache, now=NOW)
    states: dict[str, NodeState] = {}
    for which, vram, healthy, p95, seen, busy, own in readings:
        states[f"n{which:04d}"] = NodeState(healthy=healthy, vram_used_fraction=vram,
                                            p95_ms=p95, inflight=seen)
        slot = tracker.slot(f"n{busy:04d}")  # this router's own load moves on its own
        while tracker.loads[slot] < own:
            tracker.acquire(slot)
        while tracker.loads[slot] > own:
            tracker.release(slot)
        before = {n.id: n for n in snap.nodes}
        snap = build_table(pol, feed(dict(states)), tracker, cache, now=NOW, previous=snap)
        for n in snap.nodes:
            assert n.state is not None
            # the slots its keys may walk to move its shares only a window after the last
            assert n == _node(n.idx, n.spec, n.state, pol, tracker, n.weight, before[n.id], True,
                           NOW, (n.slots, 0))
