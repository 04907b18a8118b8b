"""The rungs of the mode ladder one request could take, each with its estimate and cost.

`router.core.plan` builds them for a request and ranks them: the full-quality edge rung on
the picked node, the degraded ones below it (each held, as the full one is, for the keys a
node's estimate does not shed, so a key's quality follows the feed's reading rather than the
load in flight at its request), and the split and cloud rungs off the edge.
"""

from __future__ import annotations

from typing import NamedTuple

from router import wire
from router.core import estimate
from router.core.pick import Pick, Walk, pick_feature
from router.core.policy import QUALITY_LEVELS
from router.core.request import RouteRequest
from router.core.table import ClassEntry, NodeRt, PoolRt, Snapshot


class Option(NamedTuple):
    """One rung the request could take, with its estimate and what it would cost.

    Named tuples (here and `Plan`): immutable like a frozen dataclass, several
    times cheaper to build, and a few are built for every request.
    """

    mode: str
    reason: str
    est_ms: float
    cost_usd: float
    cloud_usd: float  # the part of the cost that draws on the tenant's cloud budget
    node: NodeRt | None
    pool: PoolRt | None
    quality: str | None
    home: bool = False  # the node is the key's home (first on its ring)
    fill: float = 0.0  # (load + 1) / cap of the node when it was picked
    held: bool = False  # over its estimate's bound, but the key is not among those shed


# Why a rung is not tried (or is tried late): over max cost, its pool full, over its bound,
# or over its bound but kept (the key is not among those shed from its node).
COST, POOL_FULL, SLOW, HELD = "cost", "pool-full", "slow", "held"



def full_option(pick: Pick, req: RouteRequest, key: str, demoted: bool) -> Option | None:
    """The full-quality edge rung on the picked node (None when VRAM forbids full quality,
    or the key's home serves it degraded and it accepts that)."""
    node = pick.node
    if node.quality_floor != 0 or not estimate.full_quality(key, node) or \
            (demoted and req.accept_degradation):
        return None
    live_ms = estimate.edge_ms(node, pick.load)
    full_ms = live_ms + pick.wait_ms
    fill = (pick.load + 1) / pick.cap if pick.cap else 1.0
    held = False
    # over its bound by the node's load: held only if this key is not among those shed
    # (a queued request over it by its wait is not held: it would miss it)
    if live_ms > req.slo_ms:
        held = estimate.stays(key, node, estimate.shed_fraction(
            estimate.reading_ms(node), req.slo_ms, node.base_ms, node.tail_ms))
    return Option(wire.MODE_EDGE, wire.R_AFFINITY if pick.home else wire.R_BALANCE,
                  full_ms, node.cost_usd, 0.0, node, None, "full", pick.home, fill, held)


def degraded_options(pick: Pick, req: RouteRequest, snap: Snapshot, key: str) -> list[Option]:
    """Edge rungs on the picked node at each quality below full (degradation accepted)."""
    if not req.accept_degradation:
        return []
    node = pick.node
    quality = snap.policy.quality
    full_ms = estimate.edge_ms(node, pick.load)
    fill = (pick.load + 1) / pick.cap if pick.cap else 1.0
    vram = node.quality_floor > 0 or not estimate.full_quality(key, node)
    reason = wire.R_VRAM if vram else wire.R_SLO
    bound = req.slo_ms * snap.policy.slo.degraded_slack
    out = []
    for level in QUALITY_LEVELS[max(1, node.quality_floor):]:
        factor = quality.factor(level)
        live_ms = full_ms * factor
        # over its bound by the live load: held as the full rung is, by the share of keys
        # the feed's estimate sheds (the same hash), so a key does not hop between levels
        held = live_ms > bound and estimate.stays(key, node, estimate.shed_fraction(
            estimate.reading_ms(node) * factor, bound, node.base_ms * factor,
            node.tail_ms * factor))
        # a queued request waits alike at any quality
        out.append(Option(wire.MODE_DEGRADED, reason, live_ms + pick.wait_ms, node.cost_usd,
                          0.0, node, None, level, pick.home, fill, held))
    return out


def cloud_options(entry: ClassEntry, req: RouteRequest, snap: Snapshot, key: str,
                   edge_why: str) -> tuple[list[Option], Walk | None]:
    """Split rungs (degradation accepted, a node with a free feature slot), then cloud rungs;
    and the walk over feature slots, if one was made."""
    out: list[Option] = []
    payload = req.payload_bytes
    walk = None
    if req.accept_degradation and entry.pools:
        # features need the residency, not the model: the pool does the inference
        walk = pick_feature(snap.entry(req.residency, None), snap, key)
        pick = walk.pick
        if pick is not None:
            fill = (pick.load + 1) / pick.cap if pick.cap else 1.0
            for pool in entry.pools:
                # behind this router's splits in flight there (the walk's load on the node's
                # feature slot): their features share the node's uplink
                ms, usd, cloud_usd = estimate.split(pick.node, pool, payload, snap.policy.split,
                                                    pick.load)
                out.append(Option(wire.MODE_SPLIT, edge_why, ms, usd, cloud_usd, pick.node,
                                  pool, None, pick.home, fill))
    queued = snap.tracker.uplink_bytes
    for pool in entry.pools:
        ms, usd = estimate.cloud(pool, payload, snap.cloud_uplink_mbps, queued)
        out.append(Option(wire.MODE_CLOUD, edge_why, ms, usd, usd, None, pool, None))
    return out, walk


def off_edge_meets(entry: ClassEntry, req: RouteRequest, home: NodeRt, snap: Snapshot) -> bool:
    """Whether a rung off the edge could meet the request's SLO by its estimate, whether or
    not it has room now (a split estimated on the key's home node, the cloud on an idle
    gateway uplink: what its class can have, not what this instant offers)."""
    payload = req.payload_bytes
    for pool in entry.pools:
        if estimate.cloud(pool, payload, snap.cloud_uplink_mbps)[0] <= req.slo_ms or (
                req.accept_degradation and
                estimate.split(home, pool, payload, snap.policy.split)[0] <= req.slo_ms):
            return True
    return False
