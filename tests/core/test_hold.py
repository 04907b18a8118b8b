"""A key's quality on a busy node follows the feed's reading, not the load in flight at its
request: the degraded rungs are held by a hash-stable share of keys, as the full rung is."""

from __future__ import annotations

from router.core.feedsnapshot import NodeState
from router.core.plan import plan

from .factory import NOW, feed, ledger, node, policy, request, table

KEYS = [f"cam-{i}" for i in range(200)]


def _qualities(p95_ms: float, in_flight: int) -> list[str | None]:
    """Each key's first-ranked quality on one 8-slot node (base 60 ms, the feed saw 4 in
    flight at `p95_ms`) with `in_flight` of this router's requests on it."""
    pol = policy([node(0, slots=8, latency=60.0)], slo_ms=60.0)  # degraded bound: 90 ms
    snap = table(pol, feed({"n0000": NodeState(p95_ms=p95_ms, inflight=4)}))
    for _ in range(in_flight):
        snap.tracker.acquire(snap.nodes[0].slot)
    led = ledger(pol)
    return [plan(request(k, slo=60.0), snap, led, now=NOW).options[0].quality for k in KEYS]


def test_a_key_keeps_its_quality_whatever_is_in_flight_at_its_request() -> None:
    # the feed read 100 ms: constrained (60 ms) within 90; with 6 in flight the live estimate
    # is 160 ms, constrained 96 ms, minimal 56 ms: by live load alone every key would drop to
    # minimal whenever the node is that busy and come back when it is not
    seen = {in_flight: _qualities(100.0, in_flight) for in_flight in range(8)}
    assert set(seen[0]) == {"constrained"}
    assert all(q == seen[0] for q in seen.values())


def test_a_reading_over_the_bound_moves_a_hash_stable_share_of_keys_down() -> None:
    # the feed reads 200 ms: constrained 120 ms over 90; a share (120 - 90) / (120 - 36) of
    # the keys moves to minimal, the same keys whatever is in flight
    share = (120.0 - 90.0) / (120.0 - 36.0)
    calm, busy = _qualities(200.0, 0), _qualities(200.0, 7)
    assert calm == busy
    assert abs(calm.count("minimal") / len(KEYS) - share) < 0.1
    assert set(calm) == {"constrained", "minimal"}
