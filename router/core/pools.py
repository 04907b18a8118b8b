"""Cloud pools as the request path sees them: marginal price, capacity left, open or closed.

A pool's *marginal* price is what one more request bills: a spot pool's feed price
(else its policy price), an on-demand pool's price, and nothing for a reservation,
whose fee is paid whether used or not. A spot reclaim notice in the feed
(`pools[].available_fraction`) cuts a bounded pool's capacity to what is left and
closes an elastic one only when nothing is; a closed pool is left out of every
request class, with its reason, from the notice on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router import wire
from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import CloudPool


@dataclass(frozen=True, slots=True)
class PoolRt:
    """A cloud pool as the request path sees it."""

    idx: int
    id: str
    address: str
    slot: int
    est_ms: float  # latency_ms + compute_ms, before the payload's transfer
    usd_per_hour: float
    compute_usd: float  # per request, before egress
    egress_usd_per_byte: float
    max_inflight: int
    spec: CloudPool
    latency_ms: float = 0.0
    compute_ms: float = 0.0
    cluster: str = ""  # its Envoy cluster (x-route-cluster)
    closed: str = ""  # why no request may go there now ('' when open)

    def cost(self, payload_bytes: int) -> float:
        """Estimated cost of one request with `payload_bytes` of payload."""
        return self.compute_usd + self.egress_usd_per_byte * payload_bytes



def marginal_usd_per_hour(spec: CloudPool, prices: Mapping[str, float]) -> float:
    """What one more instance-hour of `spec` bills: a spot pool at the feed's price (else its
    own), on-demand at its price, a reservation nothing (its fee is paid whether used or not)."""
    if spec.pricing == "reserved":
        return 0.0
    if spec.pricing == "spot":
        return prices.get(spec.instance_type, spec.usd_per_hour)
    return spec.usd_per_hour


def compile_pool(idx: int, spec: CloudPool, feed: FeedSnapshot | None, slot: int) -> PoolRt:
    """The pool as the request path sees it under `feed` (`slot`: its load-tracker slot)."""
    price = marginal_usd_per_hour(spec, feed.prices if feed is not None else {})
    # a spot reclaim notice takes its share of the capacity away from the notice on: a bounded
    # pool keeps floor(capacity x what is left), an elastic one closes only when nothing is left
    left = feed.pools.get(spec.id, 1.0) if feed is not None else 1.0
    cap = spec.capacity if left >= 1.0 else int(spec.capacity * left)
    closed = ""
    if left <= 0.0 or (spec.capacity > 0 and cap <= 0):
        closed = "capacity reclaimed (spot notice)"
    elif spec.pricing == "reserved" and spec.reserved_slots <= 0:
        closed = "no reserved slots"
    return PoolRt(
        idx=idx, id=spec.id, address=spec.address, slot=slot,
        est_ms=spec.latency_ms + spec.compute_ms, usd_per_hour=price,
        compute_usd=price / 3600.0 * spec.compute_ms / 1000.0,
        egress_usd_per_byte=spec.egress_usd_per_gb / 1e9,
        max_inflight=cap, spec=spec, latency_ms=spec.latency_ms,
        compute_ms=spec.compute_ms, cluster=wire.pool_cluster(spec.id), closed=closed,
    )
