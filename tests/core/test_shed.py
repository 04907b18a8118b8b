"""Keys keep their mode: a hash-stable share of each node's keys, set per refresh from demand."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.admit import decide, finish
from router.core.feedsnapshot import FeedSnapshot, NodeState
from router.core.loads import LoadTracker
from router.core.plan import plan
from router.core.ring import PointCache
from router.core.shed import (
    BLOCKING,
    DEGRADE,
    RECOVER,
    SHOCK,
    TARGET,
    by_class,
    erlang_b,
    fill,
    holding,
    keeping,
    origin,
    shares,
    tier,
    walkable,
)
from router.core.table import Snapshot, build_table

from .factory import NOW, ledger, node, policy, pool, request

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
KEYS = [f"cam-{i}" for i in range(300)]
WINDOW = 30.0


def _feed(at: float, n: int, down: frozenset[int] = frozenset()) -> FeedSnapshot:
    states = {f"n{i:04d}": NodeState(healthy=i not in down) for i in range(n)}
    return FeedSnapshot(generated_at=at, received_at=at, nodes=states)


def _refreshes(n: int, rates: list[list[float]], slots: int = 4, cloud_ms: float = 40.0,
               down: dict[int, frozenset[int]] | None = None) -> list[Snapshot]:
    """One snapshot per window; in window w every node is the home of rates[w][i] req/s
    (`cloud_ms`: the pool's round trip, 20 ms of compute on top); the feed read at the end
    of window w reports the nodes `down[w]` unhealthy."""
    pol = policy([node(i, slots=slots, latency=60.0) for i in range(n)],
                 [pool(latency=cloud_ms, compute_ms=20.0)], slo_ms=300.0)
    tracker, cache = LoadTracker(), PointCache()
    snap = build_table(pol, _feed(NOW, n), tracker, cache, now=NOW)
    out = []
    for w, window in enumerate(rates):
        for i, rate in enumerate(window):
            slot = tracker.slot(f"n{i:04d}")
            for _ in range(round(rate * WINDOW)):
                tracker.arrive(slot)
        at = NOW + (w + 1) * WINDOW
        snap = build_table(pol, _feed(at, n, (down or {}).get(w, frozenset())), tracker,
                           cache, now=at, previous=snap)
        out.append(snap)
    return out


def _modes(snap: Snapshot, after: float = WINDOW) -> list[tuple[str, str | None]]:
    """Each key's first-ranked rung `after` s past the refresh, nothing in flight (plan holds
    nothing); by a refresh period after it the shares have reached their new values."""
    led = ledger(snap.policy)
    out = []
    for k in KEYS:
        first = plan(request(k, slo=300.0), snap, led, now=snap.built_at + after).options[0]
        out.append((first.mode, first.quality))
    return out


def test_a_node_degrades_a_share_of_its_keys_before_it_sheds_any() -> None:
    # 4 slots at 60 ms among 24 its keys may walk to, constrained at 0.6 of that: DEGRADE × 4
    # slot-seconds per second fit at full quality, fill(24) × 4 degraded
    room, kept = DEGRADE * 4, fill(24) * 4
    assert shares(4, 60.0, 0.6, round(0.99 * room / 0.06 * 30), 30.0, (0.0, 0.0), 24) == \
        (1.0, 1.0)
    need = 1.2 * room  # over by a fifth: a share d degraded saves d × 0.4 of the need
    full, keep = shares(4, 60.0, 0.6, round(need / 0.06 * 30), 30.0, (1.0, 1.0), 24)
    assert keep == 1.0 and need * (full + (1 - full) * 0.6) == pytest.approx(room, rel=1e-3)
    need = 0.99 * kept / 0.6  # all degraded, and that fits the kept room: none shed
    assert shares(4, 60.0, 0.6, round(need / 0.06 * 30), 30.0, (1.0, 1.0), 24) == (0.0, 1.0)
    need = 3 * kept  # even all degraded it does not fit: the rest is shed
    full, keep = shares(4, 60.0, 0.6, round(need / 0.06 * 30), 30.0, (1.0, 1.0), 24)
    assert full == 0.0 and need * 0.6 * keep == pytest.approx(kept, rel=1e-3)
    assert shares(4, 60.0, 0.6, 9000, 1.0, (0.3, 0.4)) == (0.3, 0.4)  # too short a window
    assert shares(0, 60.0, 0.6, 9000, 30.0, (0.3, 0.4)) == (1.0, 1.0)  # no slots: walk on


def test_each_key_is_served_as_its_tier_at_home_says() -> None:
    snap = _refreshes(3, [[200.0, 20.0, 20.0]])[0]
    busy = snap.nodes[0]
    assert busy.full_keep == 0.0 and 0.0 < busy.keep_share < 1.0
    assert (snap.nodes[1].keep_share, snap.nodes[2].full_keep) == (1.0, 1.0)
    led = ledger(snap.policy)
    seen = set()
    for k in KEYS:
        p = plan(request(k, slo=300.0), snap, led, now=snap.built_at + WINDOW)
        level = tier(k, busy.id, busy.full_keep, busy.keep_share) \
            if p.home_slot == busy.slot else 0
        seen.add(level)
        assert p.options[0].mode in (("edge",), ("edge-degraded",), ("split", "cloud"))[level]
    assert seen == {0, 1, 2}


@SETTINGS
@given(n=st.integers(1, 6), rates=st.lists(st.floats(0.0, 300.0), min_size=6, max_size=6))
def test_same_key_same_snapshot_same_mode(n: int, rates: list[float]) -> None:
    snap = _refreshes(n, [rates[:n]])[0]
    assert _modes(snap) == _modes(snap)
    led = ledger(snap.policy)
    for k in KEYS[:40]:  # admitted and finished one at a time: the same answer each time
        answers = set()
        for _ in range(2):
            routed = decide(request(k, slo=300.0), snap, led, now=snap.built_at + WINDOW)
            d = routed.decision
            answers.add((d.mode, d.quality, d.node))
            finish(routed, snap.tracker, led)
        assert len(answers) == 1


@SETTINGS
@given(n=st.integers(1, 6), rates=st.lists(st.floats(0.0, 300.0), min_size=6, max_size=6),
       windows=st.integers(2, 4))
def test_under_a_steady_load_no_key_changes_mode_between_refreshes(
        n: int, rates: list[float], windows: int) -> None:
    snaps = _refreshes(n, [rates[:n]] * windows)
    first = _modes(snaps[0])
    for snap in snaps[1:]:
        assert [x.keep_share for x in snap.nodes] == [x.keep_share for x in snaps[0].nodes]
        for after in (0.0, WINDOW / 2, WINDOW):
            assert _modes(snap, after) == first


def _shock(before: float, after: float) -> bool:
    """Whether a window at `after` req/s following one at `before` is a shock (shed.SHOCK),
    as the tracker counts them (whole requests per window)."""
    b, a = round(before * WINDOW) / WINDOW, round(after * WINDOW) / WINDOW
    return abs(a - b) > SHOCK * max(a, b)


@SETTINGS
@given(before=st.floats(0.0, 300.0), after=st.floats(0.0, 300.0))
def test_when_the_load_moves_each_key_moves_one_way_over_the_refresh_period(
        before: float, after: float) -> None:
    snap = _refreshes(1, [[before], [before], [after]])[-1]
    seen = [_modes(snap, WINDOW * i / 6) for i in range(7)]
    was = _modes(_refreshes(1, [[before], [before]])[-1])
    # starts where it was; after a shock the new mix is taken at once
    assert seen[0] == (seen[-1] if _shock(before, after) else was)
    rank = {"edge": 0, "edge-degraded": 1, "split": 2, "cloud": 2}
    for k in range(len(KEYS)):
        path = [rank[s[k][0]] for s in [was, *seen]]  # never back: full, degraded, off the edge
        assert path == sorted(path) or path == sorted(path, reverse=True)


@SETTINGS
@given(rate=st.floats(0.0, 300.0), windows=st.integers(1, 3))
def test_the_first_reading_is_taken_at_once(rate: float, windows: int) -> None:
    # the first feed after start is a shock: no staircase from "everything at full"
    snaps = _refreshes(1, [[rate]] * windows)
    assert _modes(snaps[0], 0.0) == _modes(snaps[0], WINDOW) == _modes(snaps[-1], 0.0)


def test_origin_moves_on_from_where_the_last_move_got_unless_demand_jumped() -> None:
    assert origin((0.9, 1.0), (0.5, 1.0), -1.0, 100.0) == (0.5, 1.0)  # the first reading
    assert origin((0.9, 1.0), (0.5, 1.0), 100.0, 110.0) == (0.9, 1.0)  # a tenth more
    assert origin((0.9, 1.0), (0.5, 1.0), 100.0, 140.0) == (0.5, 1.0)  # 40 % more
    assert origin((0.5, 1.0), (0.9, 1.0), 100.0, 70.0) == (0.9, 1.0)  # 30 % less
    assert origin((1.0, 1.0), (1.0, 1.0), 0.0, 0.0) == (1.0, 1.0)  # idle stays idle


def test_the_held_demand_rises_at_once_and_falls_part_of_the_way_unless_it_drops() -> None:
    assert holding(-1.0, 80.0) == 80.0  # the first reading
    assert holding(100.0, 115.0) == 115.0  # more: at once
    assert holding(100.0, 90.0) == 100.0 + RECOVER * (90.0 - 100.0)  # a tenth less
    assert holding(100.0, 70.0) == 70.0  # 30 % less: a shock, at once
    assert holding(0.0, 0.0) == 0.0


def test_a_demand_that_swings_between_refreshes_moves_the_full_share_half_as_far() -> None:
    # a production trace's windows: 20 and 23 req/s in turn, under a steady load
    snaps = _refreshes(1, [[20.0], [23.0]] * 4)
    high = shares(4, 60.0, 0.6, round(23.0 * WINDOW), WINDOW, (1.0, 1.0))[0]
    held = 23.0 + RECOVER * (20.0 - 23.0)
    mid = shares(4, 60.0, 0.6, round(held * WINDOW), WINDOW, (1.0, 1.0))[0]
    low = shares(4, 60.0, 0.6, round(20.0 * WINDOW), WINDOW, (1.0, 1.0))[0]
    assert high < mid < low  # the full share is degraded, and moves with demand
    assert [s.nodes[0].full_keep for s in snaps[2:]] == [mid, high] * 3
    # so fewer keys hop between full and degraded at each refresh than the windows say
    hops = [sum(a != b for a, b in zip(_modes(x), _modes(y), strict=True))
            for x, y in itertools.pairwise(snaps[2:])]
    assert max(hops) < len(KEYS) * (low - high)


@SETTINGS
@given(before=st.floats(0.0, 300.0), after=st.floats(0.0, 300.0))
def test_after_a_change_the_shares_settle_in_one_step_but_quality_recovers_by_halves(
        before: float, after: float) -> None:
    snaps = _refreshes(1, [[before], [before], [after], [after], [after]])
    got = [(s.nodes[0].full_keep, s.nodes[0].keep_share) for s in snaps[2:]]
    steady = shares(4, 60.0, 0.6, round(after * WINDOW), WINDOW, (1.0, 1.0))
    assert [keep for _, keep in got] == [steady[1]] * 3  # kept on the edge: in one step
    b, a = round(before * WINDOW) / WINDOW, round(after * WINDOW) / WINDOW
    if a >= b or _shock(before, after):  # more demand, or a shock: full quality in one step
        assert [full for full, _ in got] == [steady[0]] * 3
        return
    held, want = b, []  # a little less demand: the full share's moves halfway each refresh
    for _ in range(3):
        held = holding(held, a)
        want.append(shares(4, 60.0, 0.6, held * WINDOW, WINDOW, (1.0, 1.0))[0])
    assert [full for full, _ in got] == want
    assert all(x <= y for x, y in itertools.pairwise([*want, steady[0]]))  # toward steady


@pytest.mark.parametrize("away", [1, 3])
def test_a_node_back_in_the_ring_takes_up_the_shares_it_left_with(away: int) -> None:
    # n0001 is read unhealthy at the end of window 2 and back `away` windows later; its
    # keys' 100 req/s are homed on the other two meanwhile (and counted there)
    steady, moved = [100.0, 100.0, 100.0], [150.0, 0.0, 150.0]
    rates = [steady] * 3 + [moved] * away + [steady] * 3
    out = frozenset({1})
    snaps = _refreshes(3, rates, down={w: out for w in range(2, 2 + away)})
    before = (snaps[1].nodes[1].full_keep, snaps[1].nodes[1].keep_share)
    assert before[0] < 1.0  # degraded a share of its keys before it left
    back = snaps[2 + away:]
    assert [(s.nodes[1].full_keep, s.nodes[1].keep_share) for s in back] == [before] * 4
    # so its keys come back in the modes they left in, from the first instant; the other
    # two, whose last window still held its keys, are back at the next refresh
    led = ledger(back[0].policy)
    homes = [plan(request(k), back[0], led, now=back[0].built_at).home_slot for k in KEYS]
    mine = [i for i, home in enumerate(homes) if home == back[0].nodes[1].slot]
    left, returned = _modes(snaps[1], 0.0), _modes(back[0], 0.0)
    assert mine and [returned[i] for i in mine] == [left[i] for i in mine]
    assert _modes(back[1], 0.0) == left == _modes(back[-1], WINDOW)


def test_arrivals_are_counted_by_the_key_s_home() -> None:
    pol = policy([node(i, slots=1) for i in range(3)], [pool()])
    tracker = LoadTracker()
    snap = build_table(pol, None, tracker, PointCache(), now=NOW)
    led = ledger(pol)
    for k in KEYS[:30]:  # never finished: the homes fill, keys walk on, homes still count
        decide(request(k), snap, led, now=NOW)
    homes = [plan(request(k), snap, led, now=NOW).home_slot for k in KEYS[:30]]
    assert [tracker.arrivals[n.slot] for n in snap.nodes] == \
        [homes.count(n.slot) for n in snap.nodes]


def test_a_shed_key_leaves_the_edge_even_when_nothing_off_it_meets_its_slo() -> None:
    # the pool answers in 420 ms, over every key's 300 ms: shedding costs the shed keys their
    # SLO either way, and keeping them on the edge whenever a slot is free would make every
    # key of the node hop to the cloud whenever it is full
    busy, calm = _refreshes(1, [[200.0], [200.0], [5.0]], cloud_ms=400.0)[1:]
    node0 = busy.nodes[0]
    assert node0.full_keep == 0.0 and 0.0 < node0.keep_share < 1.0
    led = ledger(busy.policy)
    shed = [k for k in KEYS if tier(k, node0.id, 0.0, node0.keep_share) == 2]
    assert shed and len(shed) < len(KEYS)
    for k in KEYS:  # the home has room every time; each key takes its tier's mode every time
        for degrade in (True, False):
            modes = set()
            for _ in range(3):
                routed = decide(request(k, slo=300.0, degrade=degrade), busy, led,
                                now=busy.built_at + WINDOW)
                modes.add(routed.decision.mode)
                finish(routed, busy.tracker, led)
            kept = "edge-degraded" if degrade else "edge"
            assert modes == ({"cloud"} if k in shed else {kept}), (k, degrade)
    # the load really moves (a twentieth of it): every key comes back to the edge at full
    assert set(_modes(calm)) == {("edge", "full")}


def test_a_shed_key_takes_the_pool_before_a_split_that_comes_and_goes() -> None:
    # a split needs a free feature slot; the pool is always there: the shed key's mode holds
    snap = _refreshes(1, [[200.0], [200.0]], cloud_ms=400.0)[-1]
    node0 = snap.nodes[0]
    k = next(k for k in KEYS if tier(k, node0.id, 0.0, node0.keep_share) == 2)
    led = ledger(snap.policy)
    ranked = [o.mode for o in plan(request(k, slo=300.0), snap, led,
                                   now=snap.built_at + WINDOW).options]
    assert ranked[0] == "cloud" and ranked.index("split") < ranked.index("edge-degraded")


def test_a_shed_key_takes_a_split_when_the_gateway_queue_makes_the_pool_slower_by_its_slo(
) -> None:
    # whole payloads in flight share the gateway's uplink (1000 Mbps): forty of 1 MB put 320 ms
    # in front of the next one, more than the 300 ms SLO over the split's estimate; the shed
    # key's splits no longer lose to a pool it would queue for, and win back when they end
    snap = _refreshes(1, [[200.0], [200.0]], cloud_ms=400.0)[-1]
    node0, now = snap.nodes[0], snap.built_at + WINDOW
    shed = [k for k in KEYS if tier(k, node0.id, 0.0, node0.keep_share) == 2]
    led = ledger(snap.policy)

    def ranked() -> list[tuple[str, float]]:
        return [(o.mode, o.est_ms) for o in plan(request(shed[0], slo=300.0), snap, led,
                                                 now=now).options]

    idle = ranked()
    assert idle[0][0] == "cloud"
    whole = [decide(request(k, slo=300.0, degrade=False, payload=1_000_000), snap, led, now=now)
             for k in shed[1:41]]  # they cannot degrade, so no split: all to the pool
    assert {r.decision.mode for r in whole} == {"cloud"}
    assert snap.tracker.uplink_bytes == 40_000_000
    queued = ranked()
    assert queued[0][0] == "split"
    cloud_ms = dict(idle)["cloud"]
    assert dict(queued)["cloud"] == pytest.approx(cloud_ms + 40_000_000 * 8 / 1e6)
    for i, routed in enumerate(whole):  # however they end
        finish(routed, snap.tracker, led, failed=i % 2 == 0)
    assert snap.tracker.uplink_bytes == 0 and ranked() == idle


def _home_of(rate: float, n: int) -> Snapshot:
    """n 4-slot nodes at 60 ms after one window in which node 0 was the home of `rate` req/s."""
    return _refreshes(n, [[rate] + [0.0] * (n - 1)])[0]


def test_kept_keys_fill_less_of_a_node_they_cannot_walk_on_from() -> None:
    # Erlang B: kept keys' requests find every slot they may walk to busy at most BLOCKING of
    # the time, so a lone node is filled less than one in a pool of slots
    assert fill(8) < fill(24) <= TARGET
    for pooled in (4, 8, 24, 100):
        assert erlang_b(pooled, fill(pooled) * pooled) == pytest.approx(BLOCKING, rel=1e-3) \
            or fill(pooled) == TARGET
    # 100 req/s at 60 ms is 6 slot-seconds per second, 3.6 degraded: over what one node fills
    lone, pooled = _home_of(100.0, 1).nodes[0], _home_of(100.0, 6).nodes[0]
    # a lone node's keys have its 4 slots; six nodes of equal weight pool their overflow (24)
    assert 100.0 * 0.06 * 0.6 * lone.keep_share == pytest.approx(fill(4) * 4, rel=1e-3)
    assert 100.0 * 0.06 * 0.6 * pooled.keep_share == pytest.approx(fill(24) * 4, rel=1e-3)
    assert lone.keep_share < pooled.keep_share


def test_the_slots_a_node_s_keys_may_walk_to() -> None:
    gdpr, anywhere, vision = frozenset({"GDPR"}), frozenset(), frozenset({"vision"})
    fraud = frozenset({"fraud"})
    rooms = walkable([(gdpr, fraud, 8, 3.0), (anywhere, fraud, 8, 3.0),
                      (anywhere, vision, 4, 1.0), (gdpr, fraud, 6, 0.0)], 0.25)
    # the GDPR node's keys stay on it (the other GDPR node is out of the ring, with no room);
    # the other fraud node's may walk to both; the vision node shares no model with them
    assert rooms == [(8, 8), (8, 16), (4, 4), (0, 0)]
    # a node whose ring weight was halved (throttled) reaches its bounded-load cap first:
    # with all 24 slots busy its cap is (1 + 0.25) x 1/5 of them, 6, under its 8
    rooms = walkable([(anywhere, fraud, 8, 1.0), (anywhere, fraud, 8, 2.0),
                      (anywhere, fraud, 8, 2.0)], 0.25)
    assert rooms == [(6, 22), (8, 22), (8, 22)]


def test_the_keys_whose_class_meets_its_slo_off_the_edge_are_shed_first() -> None:
    assert by_class(0.5, 10.0, 6.0) == (1.0, pytest.approx(1 - 5 / 6))  # the loose suffice
    tight, loose = by_class(0.2, 10.0, 3.0)  # they do not: all of them, then tight keys
    assert loose == 0.0 and (1 - tight) * 7.0 + 3.0 == pytest.approx(0.8 * 10.0)
    # one kind only, or nothing shed: one share for all
    for keep, cost, loose_cost in ((0.5, 10.0, 0.0), (0.5, 10.0, 10.0), (1.0, 10.0, 6.0)):
        assert by_class(keep, cost, loose_cost) == (keep, keep)


def test_a_request_that_cannot_degrade_costs_its_node_a_full_one() -> None:
    first = keeping((0, 0, 0, 0), (4, 4), 60.0, None, True, NOW, WINDOW)
    # 100 req/s at 60 ms, all degraded, is over what 4 slots carry: a share is shed
    flex = keeping((3000, 0, 0, 0), (4, 4), 60.0, first, True, NOW + WINDOW, WINDOW)
    rigid = keeping((3000, 3000, 0, 0), (4, 4), 60.0, first, True, NOW + WINDOW, WINDOW)
    assert flex[0][0] == rigid[0][0] == 0.0
    assert 6.0 * 0.6 * flex[0][1] == pytest.approx(fill(4) * 4, rel=1e-3)
    assert 6.0 * 1.0 * rigid[0][1] == pytest.approx(fill(4) * 4, rel=1e-3)


def test_a_busy_node_sheds_the_class_the_cloud_serves_within_its_slo() -> None:
    # one 4-slot node of 40 ms and a pool of 80 ms: "batch" (300 ms) meets its SLO there,
    # "fraud" (70 ms) does not; at 100 req/s, 4 of 5 batch, the node cannot keep them all
    pol = policy([node(0, slots=4, latency=40.0)], [pool(latency=60.0, compute_ms=20.0)],
                 slo_ms=300.0)
    tracker, cache = LoadTracker(), PointCache()
    snap = build_table(pol, _feed(NOW, 1), tracker, cache, now=NOW)
    led = ledger(pol)
    classes = [("batch", 300.0)] * 4 + [("fraud", 70.0)]
    for w in range(4):
        for i in range(round(100 * WINDOW)):
            cls, slo = classes[i % 5]
            routed = decide(request(f"{cls}-{i % 1500}", slo=slo), snap, led,
                            now=snap.built_at + i / 100)
            finish(routed, tracker, led)
        at = NOW + (w + 1) * WINDOW
        snap = build_table(pol, _feed(at, 1), tracker, cache, now=at, previous=snap)
    busy = snap.nodes[0]
    assert busy.full_keep == 0.0 and busy.keep_loose < 1.0 and busy.keep_share == 1.0
    later = snap.built_at + WINDOW
    for k in range(300):
        fraud = plan(request(f"fraud-{k}", slo=70.0), snap, led, now=later).options[0]
        assert fraud.mode == "edge-degraded"  # every tight key kept
    off = [plan(request(f"batch-{k}", slo=300.0), snap, led, now=later).options[0].mode
           for k in range(300)]
    shed = sum(mode in ("split", "cloud") for mode in off)  # off the edge, within the SLO
    assert 0 < shed < 300 and shed + off.count("edge-degraded") == 300  # a share of them
