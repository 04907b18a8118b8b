"""Latency and cost of each rung, payload- and bandwidth-aware (docs/reference.md, "Estimates").

- edge: the node's unloaded full-quality latency (base_latency_ms / compute
  score) plus the excess the feed measured (p95 above that base), scaled by
  the load in flight now against the load the feed saw — this router's own
  in-flight count is exact and live, so between refreshes the estimate moves
  with every request admitted or ended instead of jumping at the next feed —
  and never below the node's unloaded tail, base × `edge.tail_factor`;
- cloud: the pool's round trip + the payload over the gateway site's uplink
  (`cloud.uplink_mbps`), behind the whole payloads of this router's cloud requests
  in flight (they share it; counted as if all still crossing it) + the pool's
  compute; cost = price × compute + egress × payload;
- split: the node's feature extraction + the features (payload ×
  `split.payload_fraction`) over the node's site uplink, behind the features of
  this router's splits in flight from that node (counted as if all still
  crossing it, as the cloud's are) + the pool's round trip +
  `split.cloud_compute_fraction` × its compute; cost = the edge cost + price ×
  that compute + egress × the features.

So a large payload over a thin uplink favours split over cloud, on latency and cost.

The edge estimate is a tail, as the SLO it is held against is met or missed per
request: base_latency_ms is a mean (a lone inference, its key not cached on the
node). The feed's p95 is mostly of keys warm at their home; it says little of a
request walked to the node cold (its home at its cap) or of a key just re-homed,
and there is none before the feed first reports one. So the unloaded tail, base
× `edge.tail_factor`, bounds the estimate from below: a node whose lone inference
misses a request's SLO one time in twenty is not held to meet it.

Shedding. When a node's estimate E is over a request's bound B, a hash-stable
fraction of keys leaves it: key k stays while unit(k, node) >= f, with

    f = (E - B) / (E - base)    (clipped to [0, 1])

the share of the load whose removal brings the estimate back to B under the
model above. Only the keys whose hash is below f move; a slight overload moves
few keys, a node slower than B even unloaded (its tail over B) moves them all.
"""

from __future__ import annotations

from router.core.policy import SplitConfig
from router.core.ring import hash64
from router.core.table import NodeRt, PoolRt

UNIT = float(1 << 64)


def transfer_ms(nbytes: float, mbps: float) -> float:
    """Milliseconds to move `nbytes` over a link of `mbps` megabits per second."""
    return nbytes * 8.0 / (mbps * 1000.0)


def edge_ms(node: NodeRt, load: int) -> float:
    """Full-quality latency on `node` with `load` of this router's requests in flight."""
    if node.excess_ms <= 0.0:
        return max(node.base_ms, node.tail_ms)
    return max(node.tail_ms,
               node.base_ms + node.excess_ms * (node.others_seen + load) / node.load_seen)


def reading_ms(node: NodeRt) -> float:
    """Full-quality latency on `node` by the feed's reading (what its shed share follows)."""
    return max(node.est_ms, node.tail_ms)


def cloud(pool: PoolRt, payload: int, uplink_mbps: float, queued: int = 0
          ) -> tuple[float, float]:
    """(latency ms, cost USD) of the whole request in `pool`, its payload behind `queued`
    bytes on the gateway's uplink."""
    return (pool.est_ms + transfer_ms(payload + queued, uplink_mbps),
            pool.compute_usd + pool.egress_usd_per_byte * payload)


def split(node: NodeRt, pool: PoolRt, payload: int, cfg: SplitConfig, ahead: int = 0
          ) -> tuple[float, float, float]:
    """(latency ms, total cost USD, cloud part USD) of features on `node`, inference in `pool`,
    its features behind those of `ahead` splits of the same payload in flight from `node`."""
    features = payload * cfg.payload_fraction
    compute = cfg.cloud_compute_fraction
    cloud_usd = pool.compute_usd * compute + pool.egress_usd_per_byte * features
    ms = (node.feature_ms + transfer_ms(features * (1 + ahead), node.uplink_mbps)
          + pool.latency_ms + compute * pool.compute_ms)
    return ms, node.cost_usd + cloud_usd, cloud_usd


def shed_fraction(estimate: float, bound: float, base: float, tail: float = 0.0) -> float:
    """Share of a node's keys that leave it when its estimate is over the bound (all of
    them when the node is over it even unloaded: its base, or its unloaded `tail`)."""
    if estimate <= bound:
        return 0.0
    if base >= bound or tail > bound:
        return 1.0
    return min(1.0, (estimate - bound) / (estimate - base))


def stays(key: str, node: NodeRt, fraction: float) -> bool:
    """Whether `key` keeps `node` while `fraction` of its keys are shed (hash-stable)."""
    return fraction <= 0.0 or (fraction < 1.0 and hash64(f"{key}|{node.id}") / UNIT >= fraction)


def full_quality(key: str, node: NodeRt) -> bool:
    """Whether `key` may have full quality on `node` while it leaves a VRAM floor gradually
    (`router.core.table`): a hash-stable `full_share` of the node's keys may."""
    share = node.full_share
    return share >= 1.0 or (share > 0.0 and hash64(f"{key}|{node.id}|full") / UNIT < share)
