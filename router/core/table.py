"""The snapshot: (policy, feed) compiled into what a request looks up.

Built whole off the request path every refresh and swapped as one reference;
a request reads that reference once and plans against it, so the policy and the
feed in force live here and nowhere else. The in-flight counts are process
state the snapshot indexes into (`tracker`), not part of it.
Per request class (residency set, model) it holds the filtered ring, the
weight sum, the load group and the cloud pools ordered by latency, so a
decision is a dict lookup, one bounded-load walk and a budget check.

Quality floors (VRAM pressure, with hysteresis and a gradual way back) are
`router.core.quality`'s; the share of its keys a node keeps, `router.core.shed`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from router import wire
from router.core.decision import NOTHING, Hold
from router.core.feedsnapshot import FeedSnapshot, NodeState
from router.core.loads import LoadTracker
from router.core.policy import EdgeNode, Policy
from router.core.pools import PoolRt, compile_pool
from router.core.quality import full_share, quality_floor
from router.core.ring import PointCache, Ring, build_ring, filter_ring
from router.core.shed import Counts, Shares, keeping, walkable

__all__ = ["ClassEntry", "NodeRt", "PoolRt", "Snapshot", "build_table", "full_share",
           "node_ineligible", "quality_floor"]

MAX_CLASSES = 1024
FEATURES = "#features"  # load-tracker name suffix of a node's split feature slots


@dataclass(frozen=True, slots=True)
class NodeRt:
    """An edge node as the request path sees it."""

    idx: int
    id: str
    address: str
    slot: int
    weight: float
    slots: int
    est_ms: float  # full-quality latency estimate when the feed was read
    quality_floor: int  # index into QUALITY_LEVELS the node can serve at best
    cost_usd: float
    healthy: bool
    spec: EdgeNode
    feature_slot: int = -1  # load slot of split feature extractions (apart from inference)
    feature_slots: int = 0
    feature_ms: float = 0.0
    uplink_mbps: float = 100.0  # the node's site uplink: split features cross it
    base_ms: float = 0.0  # unloaded full-quality latency: base_latency_ms / compute_score
    tail_ms: float = 0.0  # its p95 unloaded: base_ms x edge.tail_factor (the estimate's floor)
    excess_ms: float = 0.0  # feed p95 above base_ms, attributed to the load the feed saw
    others_seen: float = 0.0  # in flight from other routers when the feed was read
    load_seen: float = 1.0  # everything in flight then (>= 1)
    min_cap: int = 0  # utilization floor: floor(hashing.min_cap_fraction x slots)
    full_share: float = 1.0  # share of keys allowed full quality while leaving a floor
    state: NodeState | None = None  # the feed's reading it was built from
    own_seen: int = 0  # this router's in-flight count on the node when it was built
    # shares of its home keys (router.core.shed): kept on the edge, of the keys whose class
    # misses its SLO off the edge and of those that meet it (shed first); at full quality
    keep_share: float = 1.0
    keep_loose: float = 1.0
    full_keep: float = 1.0
    shares_from: Shares = (1.0, 1.0, 1.0)  # (full, kept, kept loose) moving from, at seen_at
    counts_seen: Counts = (0, 0, 0, 0)  # the tracker's counts when the shares were last set
    degrading: bool = False  # some of its keys are served degraded, or are moving there
    seen_at: float = 0.0  # when the share was last set
    demand: float = -1.0  # its home keys' arrivals per second held for it (-1: none yet)
    hold: Hold = NOTHING  # what an edge rung on it holds (its inference slot), built once


@dataclass(frozen=True, slots=True)
class ClassEntry:
    """Everything precomputed for one (residency, model) request class."""

    ring: Ring  # the class's own ring: `ring.members` are its eligible nodes' indices
    weight_sum: float
    member_slots: tuple[int, ...]
    pools: tuple[PoolRt, ...]  # eligible, fastest first
    excluded: tuple[tuple[str, str], ...]  # (target id, why) for explain
    feature_slots: tuple[int, ...] = ()  # members' feature slots (split extractions)
    gid: int = -1  # load group of `member_slots` (-1 until registered)
    fgid: int = -1  # load group of `feature_slots`
    cluster: str = ""  # the Envoy cluster of this residency's edge nodes (x-route-cluster)


@dataclass
class Snapshot:
    """One compiled (policy, feed) pair; immutable once built, class entries memoized."""

    policy: Policy
    feed: FeedSnapshot | None
    built_at: float
    stale: bool
    nodes: tuple[NodeRt, ...]
    pools: tuple[PoolRt, ...]
    ring: Ring
    tracker: LoadTracker
    cloud_uplink_mbps: float = 1000.0
    # Per node index, flat, for the bounded-load walk (no attribute lookups per node visited):
    # (slot, size) of inference and of feature extraction, effective weight, utilization floor
    walk_inference: tuple[tuple[int, int], ...] = ()
    walk_features: tuple[tuple[int, int], ...] = ()
    walk_weights: tuple[float, ...] = ()
    walk_floors: tuple[int, ...] = ()
    epsilon: float = 0.25  # hashing.balance_factor
    queue_per_slot: float = 0.0  # edge.queue_per_slot
    ejected: frozenset[str] = frozenset()  # out of the ring for failing (router.core.outliers)
    _classes: dict[tuple[frozenset[str], str | None], ClassEntry] = field(default_factory=dict)
    # built by prebuild() before the table is published, load group not yet registered
    _pending: dict[tuple[frozenset[str], str | None], ClassEntry] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Policy version in force."""
        return self.policy.digest

    def entry(self, residency: frozenset[str], model: str | None) -> ClassEntry:
        """The class entry for a request, built on first sight and cached."""
        key = (residency, model)
        found = self._classes.get(key)
        if found is None:
            part = self._pending.pop(key, None)
            if part is None:
                part = self._class_parts(residency, model)
            found = replace(part, gid=self.tracker.group(part.member_slots),
                            fgid=self.tracker.group(part.feature_slots))
            if len(self._classes) < MAX_CLASSES:
                self._classes[key] = found
        return found

    def class_keys(self) -> list[tuple[frozenset[str], str | None]]:
        """The (residency, model) classes this table has built so far."""
        return list(self._classes)

    def prebuild(self, keys: list[tuple[frozenset[str], str | None]]) -> None:
        """Build these classes' rings before publishing the table (safe in a worker thread).

        Only the load group is left for `warm`/`entry`: registering one touches
        the tracker's counters, which belong to the thread that routes.
        """
        for key in keys:
            if key not in self._classes and key not in self._pending:
                self._pending[key] = self._class_parts(*key)

    def warm(self, keys: list[tuple[frozenset[str], str | None]]) -> None:
        """Finish these classes now, so the first request of each after a swap pays nothing."""
        for residency, model in keys:
            self.entry(residency, model)

    def _class_parts(self, residency: frozenset[str], model: str | None) -> ClassEntry:
        """The class entry but for its load group (gid -1 until registered)."""
        members: list[int] = []
        excluded: list[tuple[str, str]] = []
        for node in self.nodes:
            why = "out of the ring: its requests fail (outliers)" if node.id in self.ejected \
                else node_ineligible(node, residency, model)
            if why:
                excluded.append((node.id, why))
            else:
                members.append(node.idx)
        ring = filter_ring(self.ring, members)
        weight_sum = sum(self.nodes[i].weight for i in ring.members)
        member_slots = tuple(self.nodes[i].slot for i in ring.members)
        feature_slots = tuple(self.nodes[i].feature_slot for i in ring.members)
        pools = []
        for pool in self.pools:
            if not residency <= pool.spec.residency:
                missing = ", ".join(sorted(residency - pool.spec.residency))
                excluded.append((pool.id, f"residency {missing} not met"))
            elif not pool.spec.serves(model):
                excluded.append((pool.id, f"does not serve model {model}"))
            elif pool.closed:
                excluded.append((pool.id, pool.closed))
            else:
                pools.append(pool)
        # cheapest to bill first (a reservation with room costs nothing more), then fastest:
        # within the SLO the ladder takes the first, so paid-for capacity fills before spot
        pools.sort(key=lambda p: (p.compute_usd, p.est_ms, p.id))
        return ClassEntry(ring, weight_sum, member_slots, tuple(pools), tuple(excluded),
                          feature_slots, cluster=wire.edge_cluster(residency))


def node_ineligible(node: NodeRt, residency: frozenset[str], model: str | None) -> str:
    """Why `node` can never serve this class ('' if it can, capacity aside)."""
    if not node.healthy:
        return "unhealthy"
    if node.weight <= 0:
        return "zero weight"
    if not residency <= node.spec.residency:
        return f"residency {', '.join(sorted(residency - node.spec.residency))} not met"
    if not node.spec.serves(model):
        return f"does not serve model {model}"
    return ""


def _reading(spec: EdgeNode, feed: FeedSnapshot | None, policy: Policy,
             stale: bool, ejected: bool = False) -> tuple[NodeState, float]:
    """What the feed says of a node (a default reading when it says nothing), and its
    weight on the ring: policy weight x compute score x health (0 while `ejected`)."""
    state = feed.nodes.get(spec.id) if feed is not None else None
    if state is None:
        state = NodeState(healthy=feed is None or policy.feed.missing_node == "keep")
    health = 1.0 if state.healthy and not ejected else 0.0
    if stale and feed is not None:
        health *= policy.feed.stale_weight
    return state, spec.weight * state.compute_score * health


def _slots(spec: EdgeNode, state: NodeState) -> int:
    """The node's inference slots: as the feed states them, else the policy's."""
    return state.slots if state.slots is not None else spec.slots


def _node(idx: int, spec: EdgeNode, state: NodeState, policy: Policy, tracker: LoadTracker,
          weight: float, previous: NodeRt | None, fresh: bool, now: float,
          room: tuple[int, int]) -> NodeRt:
    score = max(state.compute_score, 1e-3)
    base = spec.base_latency_ms / score
    est = base if state.p95_ms is None else max(base, state.p95_ms)
    slot = tracker.slot(spec.id)
    # the load the feed saw matters only when it reported latency above the base
    own = tracker.loads[slot] if est > base else 0
    seen = max(float(state.inflight), float(own), 1.0) if est > base else 1.0
    slots = _slots(spec, state)
    uplink = spec.uplink_mbps if state.uplink_mbps is None else \
        min(spec.uplink_mbps, state.uplink_mbps)
    floor = quality_floor(policy, state.vram_used_fraction,
                          previous.quality_floor if previous else 0)
    (full_keep, keep, keep_loose), start, counted, seen_at, demand = keeping(
        (tracker.arrivals[slot], tracker.rigid[slot], tracker.loose[slot],
         tracker.loose_rigid[slot]), room, base,
        None if previous is None else ((previous.full_keep, previous.keep_share,
                                        previous.keep_loose),
                                       previous.shares_from, previous.counts_seen,
                                       previous.seen_at, previous.demand),
        fresh, now, policy.refresh_seconds,
        away=weight <= 0 or (previous is not None and previous.weight <= 0))
    return NodeRt(
        idx=idx, id=spec.id, address=spec.address, slot=slot, weight=weight, slots=slots,
        est_ms=est, quality_floor=floor,
        full_share=full_share(policy, state.vram_used_fraction, floor, previous, fresh=fresh),
        cost_usd=policy.edge_marginal_usd(spec),
        healthy=state.healthy and weight > 0, spec=spec,
        feature_slot=tracker.slot(spec.id + FEATURES),
        # a feed that states slots (drained to 0, or halved) scales feature capacity alike
        feature_slots=spec.feature_slots if state.slots is None or spec.slots <= 0 else
        round(spec.feature_slots * state.slots / spec.slots),
        feature_ms=spec.feature_ms, uplink_mbps=uplink, base_ms=base,
        tail_ms=base * policy.edge.tail_factor,
        excess_ms=est - base,
        others_seen=max(0.0, state.inflight - own) if est > base else 0.0, load_seen=seen,
        min_cap=int(policy.hashing.min_cap_fraction * slots), state=state, own_seen=own,
        keep_share=keep, keep_loose=keep_loose, full_keep=full_keep, shares_from=start,
        counts_seen=counted, degrading=full_keep < 1.0 or start[0] < 1.0, seen_at=seen_at,
        demand=demand, hold=Hold((slot,)))


def _unchanged(previous: NodeRt | None, idx: int, spec: EdgeNode, state: NodeState,
               weight: float, tracker: LoadTracker, policy: Policy, fresh: bool,
               now: float) -> bool:
    """Whether `previous` is exactly what `_node` would build now (most nodes, most refreshes).

    Same policy entry, same feed reading, same weight: every field follows, the quality
    floor included (hysteresis gives the same floor for a repeated reading). The one live
    input, this router's own load at build time, matters only when the feed reported
    latency above the node's base. A node easing its keys back to full quality
    (`router.core.quality`) moves its share at each new reading, so it is rebuilt; so is
    a node read afresh at a new time (`router.core.shed` starts its demand window there).
    """
    return (previous is not None and previous.spec is spec and previous.idx == idx
            and previous.state == state and previous.weight == weight
            and (previous.excess_ms <= 0.0
                 or tracker.loads[previous.slot] == previous.own_seen)
            and (not fresh or (previous.full_keep >= 1.0 and previous.seen_at == now
                 and tracker.arrivals[previous.slot] == previous.counts_seen[0]))
            and (not fresh or previous.full_share == full_share(
                policy, state.vram_used_fraction, previous.quality_floor, previous)))


def build_table(policy: Policy, feed: FeedSnapshot | None, tracker: LoadTracker,
                cache: PointCache, *, now: float, previous: Snapshot | None = None,
                ejected: frozenset[str] = frozenset()) -> Snapshot:
    """Compile `policy` and `feed` into a snapshot (pure but for slot allocation).

    `previous`, the snapshot this one replaces, carries the quality floors and
    full-quality shares that hysteresis and gradual leaving need; `ejected`: nodes out of
    the ring for failing (`router.core.outliers`), weighted 0 whatever the feed says.
    """
    stale = feed is None or feed.age(now) > policy.feed.stale_after_seconds
    before = {n.id: n for n in previous.nodes} if previous is not None else {}
    fresh = previous is None or previous.feed is not feed  # a new reading moves full_share
    read = [_reading(spec, feed, policy, stale, spec.id in ejected) for spec in policy.nodes]
    rooms = walkable([(spec.residency, frozenset(spec.models),
                       min(_slots(spec, state), tracker.held[tracker.slot(spec.id)]), weight)
                      for spec, (state, weight) in zip(policy.nodes, read, strict=True)],
                     policy.hashing.balance_factor)
    nodes: list[NodeRt] = []
    for idx, spec in enumerate(policy.nodes):
        state, weight = read[idx]
        prev = before.get(spec.id)
        if prev is not None and _unchanged(prev, idx, spec, state, weight, tracker, policy,
                                           fresh, now):
            nodes.append(prev)
        else:
            nodes.append(_node(idx, spec, state, policy, tracker, weight, prev, fresh, now,
                               rooms[idx]))
    pools = [compile_pool(idx, pspec, feed, tracker.slot(pspec.id))
             for idx, pspec in enumerate(policy.pools)]
    ring = build_ring([n.id for n in nodes], [n.weight if n.healthy else 0.0 for n in nodes],
                      cache)
    return Snapshot(policy=policy, feed=feed, built_at=now, stale=stale, nodes=tuple(nodes),
                    pools=tuple(pools), ring=ring, tracker=tracker,
                    cloud_uplink_mbps=policy.cloud.uplink_mbps,
                    walk_inference=tuple((n.slot, n.slots) for n in nodes),
                    walk_features=tuple((n.feature_slot, n.feature_slots) for n in nodes),
                    walk_weights=tuple(n.weight for n in nodes),
                    walk_floors=tuple(n.min_cap for n in nodes),
                    epsilon=policy.hashing.balance_factor,
                    queue_per_slot=policy.edge.queue_per_slot,
                    ejected=ejected & {spec.id for spec in policy.nodes})
