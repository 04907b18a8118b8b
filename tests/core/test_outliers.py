"""Passive health: a node whose requests fail leaves the ring for a while (router.core.outliers),
and the runtime rebuilds its table around it."""

from __future__ import annotations

from router.core.outliers import Outliers
from router.core.policy import OutlierConfig
from router.runtime import Runtime

from .factory import NOW, node, policy, pool, request

CFG = OutlierConfig()  # 5 failures within 10 s, half the node's ends; out 30 s, at most 300


FLEET = [frozenset("abcd")]  # four nodes, none with a residency tag


def _fail(o: Outliers, node_id: str, times: list[float], ended: int = 0,
          peers: list[frozenset[str]] = FLEET, cfg: OutlierConfig = CFG) -> list[bool]:
    """Report a failure at each of `times`, the node's ends growing with them."""
    out = []
    for i, t in enumerate(times):
        out.append(o.failed(node_id, ended + i + 1, lambda: peers, cfg, t))
    return out


def test_five_failures_within_the_interval_take_a_node_out_for_eject_s() -> None:
    o = Outliers()
    assert _fail(o, "a", [0.0, 1.0, 2.0, 3.0, 4.0]) == [False] * 4 + [True]
    assert o.ejected() == {"a"} and o.until("a") == 4.0 + CFG.eject_s
    assert not o.expire(33.9) and o.ejected() == {"a"}
    assert o.expire(34.0) and o.ejected() == frozenset()


def test_failures_spread_over_windows_longer_than_the_interval_do_not() -> None:
    o = Outliers()
    # four in the first 10 s, four in the next: never five in one window
    assert not any(_fail(o, "a", [0.0, 2.0, 4.0, 6.0, 10.0, 12.0, 14.0, 16.0]))
    assert o.ejected() == frozenset()


def test_a_busy_node_whose_failures_are_a_small_share_of_its_requests_stays_in() -> None:
    o = Outliers()
    # 5 failures among 100 ends in the window: 5 %, under failure_fraction 0.5
    got = [o.failed("a", ended, lambda: FLEET, CFG, t) for ended, t in
           [(20, 0.0), (40, 1.0), (60, 2.0), (80, 3.0), (100, 4.0)]]
    assert got == [False] * 5
    # every request failing: out at the fifth
    assert _fail(o, "b", [0.0, 1.0, 2.0, 3.0, 4.0]) == [False] * 4 + [True]


def test_each_ejection_in_a_row_doubles_the_time_out_up_to_max_eject_s() -> None:
    o = Outliers()
    t, outs = 0.0, []
    for _ in range(6):
        _fail(o, "a", [t + i for i in range(5)])
        until = o.until("a")
        assert until is not None
        outs.append(until - (t + 4))
        o.expire(until)
        t = until + 1.0  # fails again a second after it is back
    assert outs == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    for _ in range(1100):  # days of failing in a row: still max_eject_s, no overflow
        _fail(o, "a", [t + i for i in range(5)])
        until = o.until("a")
        assert until is not None and until - (t + 4) == CFG.max_eject_s
        o.expire(until)
        t = until + 1.0
    # back for longer than max_eject_s without failing: the next one is eject_s again
    t += CFG.max_eject_s + 1.0
    _fail(o, "a", [t + i for i in range(5)])
    assert o.until("a") == t + 4 + CFG.eject_s


def test_never_more_than_max_ejected_fraction_of_the_nodes_out_at_once() -> None:
    o = Outliers()
    for name in "abcd":
        _fail(o, name, [0.0, 1.0, 2.0, 3.0, 4.0])
    assert o.ejected() == {"a", "b"} and o.held_in == 2  # half of 4 nodes


def test_a_residency_keeps_half_its_nodes_however_many_the_fleet_has() -> None:
    # eu-1, eu-2 (GDPR) and us-1..us-4 (CCPA): half of six nodes would be both GDPR ones
    o = Outliers()
    gdpr, ccpa = frozenset({"eu-1", "eu-2"}), frozenset({"us-1", "us-2", "us-3", "us-4"})
    for name in sorted(gdpr):
        _fail(o, name, [0.0, 1.0, 2.0, 3.0, 4.0], peers=[gdpr])
    assert o.ejected() == {"eu-1"}  # eu-2 stays: GDPR requests still have an edge node
    for name in sorted(ccpa):
        _fail(o, name, [0.0, 1.0, 2.0, 3.0, 4.0], peers=[ccpa])
    assert o.ejected() == {"eu-1", "us-1", "us-2"}


def test_failures_zero_turns_it_off() -> None:
    o = Outliers()
    off = OutlierConfig(failures=0)
    assert not any(_fail(o, "a", [float(i) for i in range(50)], cfg=off))


def test_a_node_out_of_the_ring_gets_no_keys_until_it_is_back() -> None:
    pol = policy([node(i) for i in range(4)], [pool()])
    rt = Runtime(pol, clock=lambda: NOW)

    def where(key: str, now: float) -> str | None:
        routed = rt.decide(request(key), now=now)
        rt.finish(routed)  # nothing left in flight: each key goes to its home
        return routed.decision.node

    homes = {k: where(k, NOW) for k in map(str, range(40))}
    dead = homes["0"]
    assert dead is not None
    slot = rt.tracker.slot(dead)
    for i in range(5):  # five of its requests end, each failed
        rt.tracker.acquire(slot)
        rt.tracker.release(slot)
        ejected = rt.failed(dead, NOW + i)
    assert ejected
    intake = rt.tick(NOW + 5)  # the refresher's tick asks for the rebuild
    assert intake is not None and intake.rebuild
    rt.apply(intake, NOW + 5)
    assert rt.snapshot.ejected == {dead}
    assert (dead, "out of the ring: its requests fail (outliers)") in \
        rt.snapshot.entry(frozenset(), None).excluded  # what explain says of it
    moved = {k: where(k, NOW + 5) for k in homes}
    assert dead not in moved.values()
    # only its keys moved
    assert all(moved[k] == homes[k] for k in homes if homes[k] != dead)
    assert rt.tick(NOW + 20) is None  # nothing changed
    back = rt.tick(NOW + 4 + CFG.eject_s)
    assert back is not None
    rt.apply(back, NOW + 4 + CFG.eject_s)
    assert rt.snapshot.ejected == frozenset()
    again = {k: where(k, NOW + 40) for k in homes}
    assert again == homes


def test_failures_of_a_node_the_policy_does_not_name_are_ignored() -> None:
    rt = Runtime(policy([node(0)], [pool()]), clock=lambda: NOW)
    assert not any(rt.failed("gone", NOW + i) for i in range(10))
    assert rt.outliers.ejected() == frozenset()
