"""The seed's cost-aware router: one mode per request class per refresh, from the feed's averages.

Its design held that per-request routing adds unacceptable latency, so at each
feed refresh it picks, for every request class, the cheapest mode whose
estimate from the feed's fleet averages meets the class's SLO, and routes every
request of the class that way until the next refresh:

- edge: the mean node latency (the larger of the feed's p95 and the node's
  unloaded latency) is within the SLO and the mean VRAM is below
  `quality.constrained_above`;
- edge-degraded at `constrained` quality: degradation accepted and the mean
  latency × 0.6 within `degraded_slack` × SLO;
- split: degradation accepted and the split estimate within the SLO;
- cloud: the cloud estimate within the SLO and the class's max cost;
- otherwise edge, best effort.

Per request it only hashes: the key's node is the first in rendezvous order
with a free slot by its own in-flight count; with every node full (the edge
is full) a request that accepts degradation splits, and any other goes to
cloud. It tracks its own cloud spend and stops using the cloud for a tenant at
the hard limit. Residency and the model are always respected.
"""

from __future__ import annotations

from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import LATENCY_FACTOR, CloudPool, EdgeNode, Policy
from router.core.ring import hash64
from simulator.routers import REFUSED, Choice, edge_cost, pool_cost
from simulator.scenario import TrafficClass

PLAN_MODES = ("edge", "edge-degraded", "split", "cloud")


class SeedCostAware:
    """One mode per class per refresh (module docstring)."""

    name = "seed-cost-aware"

    def __init__(self, policy: Policy) -> None:
        """Start with no feed: every class on the edge until the first refresh."""
        self.policy = policy
        self.feed: FeedSnapshot | None = None
        self.modes: dict[int, str] = {}
        self.load = {n.id: 0 for n in policy.nodes}
        self.features = {n.id: 0 for n in policy.nodes}
        self.prices = {p.instance_type: p.usd_per_hour for p in policy.pools}
        self.pool_load: dict[str, int] = {}
        self.spend: dict[str, float] = {}
        self.limits = {t: b.limit_usd for t, b in policy.budgets.tenants.items()}

    def tick(self, now: float) -> None:
        """No feed came: a baseline keeps the last one, however old (it has no staleness)."""

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """A new feed: every class's mode is decided again on its next request."""
        self.feed = feed
        self.prices.update(feed.prices)
        self.modes.clear()

    def _nodes(self, cls: TrafficClass) -> list[EdgeNode]:
        feed = self.feed
        return [n for n in self.policy.nodes
                if (feed is None or n.id not in feed.nodes or feed.nodes[n.id].healthy)
                and cls.residency <= n.residency and n.serves(cls.model)]

    def _pool(self, cls: TrafficClass) -> CloudPool | None:
        """The fastest eligible pool with room, a reservation first while it has room."""
        pools = [p for p in self.policy.pools
                 if cls.residency <= p.residency and p.serves(cls.model)
                 and not 0 < p.capacity <= self.pool_load.get(p.id, 0)]
        return min(pools, key=lambda p: (p.pricing != "reserved", p.latency_ms)) \
            if pools else None

    def plan(self, cls: TrafficClass, payload_bytes: int) -> str:
        """The class's mode for this refresh period, from the feed's fleet averages."""
        nodes = self._nodes(cls)
        pool = self._pool(cls)
        if not nodes:
            return "cloud"
        lat, vram = 0.0, 0.0
        for n in nodes:
            state = self.feed.nodes.get(n.id) if self.feed is not None else None
            base = n.base_latency_ms / max(state.compute_score if state else 1.0, 1e-3)
            p95 = state.p95_ms if state is not None and state.p95_ms is not None else 0.0
            lat += max(base, p95) / len(nodes)
            vram += (state.vram_used_fraction if state else 0.0) / len(nodes)
        slo, policy = cls.slo_ms, self.policy
        if lat <= slo and vram < policy.quality.constrained_above:
            return "edge"
        if cls.degrade and lat * LATENCY_FACTOR["constrained"] <= slo * policy.slo.degraded_slack:
            return "edge-degraded"
        if pool is not None:
            if cls.degrade and self._split(nodes[0], pool, payload_bytes)[0] <= slo:
                return "split"
            ms = pool.latency_ms + pool.compute_ms + payload_bytes * 8 / (
                policy.cloud.uplink_mbps * 1000)
            cost = pool_cost(pool, self.prices, pool.compute_ms, payload_bytes)
            if ms <= slo and (cls.max_cost_usd is None or cost <= cls.max_cost_usd):
                return "cloud"
        return "edge"

    def _split(self, node: EdgeNode, pool: CloudPool, payload: int) -> tuple[float, float]:
        """(latency ms, cloud cost) of a split through `node` and `pool`."""
        cfg = self.policy.split
        features = payload * cfg.payload_fraction
        compute = pool.compute_ms * cfg.cloud_compute_fraction
        ms = node.feature_ms + features * 8 / (node.uplink_mbps * 1000) + pool.latency_ms + compute
        return ms, pool_cost(pool, self.prices, compute, features)

    def _cloud_ok(self, tenant: str, cost: float) -> bool:
        limit = self.limits.get(tenant, self.limits.get(self.policy.budgets.default_tenant))
        _, hard = self.policy.budgets.fractions(tenant)
        return limit is None or self.spend.get(tenant, 0.0) + cost <= limit * hard

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """The class's mode for this period; the key's node by rendezvous hashing."""
        mode = self.modes.get(id(cls))
        if mode is None:
            mode = self.modes[id(cls)] = self.plan(cls, payload_bytes)
        nodes = sorted(self._nodes(cls), key=lambda n: hash64(f"{n.id}|{key}"))
        if mode in ("edge", "edge-degraded"):
            free = next((n for n in nodes if self.load[n.id] < n.slots), None)
            if free is not None:
                return self._edge(mode, free, nodes[0])
            # the edge is full: a request that accepts degradation splits, any other goes to cloud
        choice = None
        if mode != "cloud" and cls.degrade:
            choice = self._try_split(cls, nodes, payload_bytes)
        choice = choice or self._try_cloud(cls, payload_bytes)
        if choice is not None:
            return choice
        if nodes:  # nowhere else to go: the key's node, where it queues if it must
            free = next((n for n in nodes if self.load[n.id] < n.slots), nodes[0])
            return self._edge("edge" if mode in ("split", "cloud") else mode, free, nodes[0])
        return REFUSED

    def _try_split(self, cls: TrafficClass, nodes: list[EdgeNode], payload: int
                   ) -> Choice | None:
        pool = self._pool(cls)
        room = next((n for n in nodes if self.features[n.id] < n.feature_slots), None)
        if pool is None or room is None:
            return None
        _, cloud_usd = self._split(room, pool, payload)
        cost = edge_cost(room, self.policy) + cloud_usd
        if not self._cloud_ok(cls.tenant, cloud_usd) or (
                cls.max_cost_usd is not None and cost > cls.max_cost_usd):
            return None
        self.features[room.id] += 1
        self.pool_load[pool.id] = self.pool_load.get(pool.id, 0) + 1
        self.spend[cls.tenant] = self.spend.get(cls.tenant, 0.0) + cloud_usd
        return Choice("split", room.id, pool.id, None, cost, cloud_usd, room is nodes[0], None)

    def _try_cloud(self, cls: TrafficClass, payload: int) -> Choice | None:
        pool = self._pool(cls)
        if pool is None:
            return None
        cost = pool_cost(pool, self.prices, pool.compute_ms, payload)
        if not self._cloud_ok(cls.tenant, cost) or (
                cls.max_cost_usd is not None and cost > cls.max_cost_usd):
            return None
        self.spend[cls.tenant] = self.spend.get(cls.tenant, 0.0) + cost
        self.pool_load[pool.id] = self.pool_load.get(pool.id, 0) + 1
        return Choice("cloud", None, pool.id, None, cost, cost)

    def _edge(self, mode: str, node: EdgeNode, home: EdgeNode) -> Choice:
        self.load[node.id] += 1
        quality = "constrained" if mode == "edge-degraded" else "full"
        cost = edge_cost(node, self.policy)
        return Choice(mode, node.id, None, quality, cost, 0.0, node is home, None)

    def failed(self, choice: Choice, now: float) -> None:
        """The seed keeps no health of its own: its nodes stay where the feed puts them."""

    def done(self, choice: Choice) -> None:
        """Track in flight per node (inference and feature slots apart)."""
        if choice.pool is not None:
            self.pool_load[choice.pool] -= 1
        if choice.node is None:
            return
        if choice.mode == "split":
            self.features[choice.node] -= 1
        else:
            self.load[choice.node] -= 1

    def set_limit(self, tenant: str, limit: float) -> None:
        """A budget change: the new limit holds from now on."""
        self.limits[tenant] = limit

    def caps(self) -> dict[str, float]:
        """No caps to draw."""
        return {}
