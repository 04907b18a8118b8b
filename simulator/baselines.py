"""The routers users would otherwise run, on the same world, traffic and events.

Every baseline respects residency and the model a request needs (none is a
straw man on compliance) and learns health and prices from the same feed the
adaptive router reads; none knows SLOs, and only `seed-cost-aware` knows
budgets. Edge nodes a baseline over-fills queue their requests (the world's
FIFO), as real nodes would.

- cloud-only: every request to the fastest eligible pool.
- edge-only, consistent-hash: rendezvous hashing over eligible nodes, no load
  bound; with no eligible node edge-only refuses, consistent-hash uses cloud.
- round-robin, least-loaded (in flight / slots, over every eligible node).
- envoy-ring-hash: what Envoy does without this router — its ring hash over
  the same effective weights with `hash_balance_factor` = 100 × (1 + ε) (see
  `EnvoyRing`); cloud only when no edge node is eligible (a lower priority).
- p2c: power of two choices — two eligible nodes drawn at random, the one
  with less in flight per slot wins.
- seed-cost-aware: one mode per request class per refresh (`SeedCostAware`).
"""

from __future__ import annotations

import itertools
import random

from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import EdgeNode, Policy
from router.core.ring import hash64
from simulator.envoy import EnvoyRing
from simulator.routers import REFUSED, Choice, edge_cost, pool_cost
from simulator.scenario import TrafficClass
from simulator.seed import SeedCostAware

__all__ = ["BASELINES", "Baseline", "EnvoyRing", "SeedCostAware", "make_baseline"]


class Baseline:
    """cloud-only, edge-only, consistent-hash, round-robin, least-loaded, envoy-ring-hash, p2c."""

    def __init__(self, policy: Policy, kind: str, seed: int = 0) -> None:
        """A baseline of `kind` over the policy's targets (`seed` for p2c's draws)."""
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
        self.name = kind
        self.kind = kind
        self.owns_edge = kind != "cloud-only"  # cloud-only's operator owns no edge fleet
        self.policy = policy
        self.healthy = {n.id for n in policy.nodes}
        self.scores = {n.id: 1.0 for n in policy.nodes}
        self.prices = {p.instance_type: p.usd_per_hour for p in policy.pools}
        self.load: dict[str, int] = {n.id: 0 for n in policy.nodes}
        self.pool_load: dict[str, int] = {p.id: 0 for p in policy.pools}
        self.rr = itertools.count()
        self.rng = random.Random(seed)
        self.eps = policy.balance_factor
        self._eligible: dict[tuple[frozenset[str], str | None], list[EdgeNode]] = {}
        self._rings: dict[tuple[frozenset[str], str | None], EnvoyRing] = {}

    def tick(self, now: float) -> None:
        """No feed came: a baseline keeps the last one, however old (it has no staleness)."""

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """Health, compute scores (Envoy's endpoint weights) and prices."""
        self.healthy = {n for n, s in feed.nodes.items() if s.healthy}
        self.scores = {n: s.compute_score for n, s in feed.nodes.items()}
        self.prices.update(feed.prices)
        self._eligible.clear()
        self._rings.clear()

    def eligible(self, cls: TrafficClass) -> list[EdgeNode]:
        """Healthy nodes with the class's residency and model."""
        ck = (cls.residency, cls.model)
        found = self._eligible.get(ck)
        if found is None:
            found = self._eligible[ck] = [
                n for n in self.policy.nodes if n.id in self.healthy
                and cls.residency <= n.residency and n.serves(cls.model)]
        return found

    def cloud(self, cls: TrafficClass, payload_bytes: int) -> Choice:
        """The fastest eligible pool with room (a reservation first while it has room, as an
        operator who paid for it would), or a refusal when none is."""
        pools = [p for p in self.policy.pools
                 if cls.residency <= p.residency and p.serves(cls.model)
                 and not 0 < p.capacity <= self.pool_load[p.id]]
        if not pools:
            return REFUSED
        p = min(pools, key=lambda p: (p.pricing != "reserved", p.latency_ms))
        self.pool_load[p.id] += 1
        cost = pool_cost(p, self.prices, p.compute_ms, payload_bytes)
        return Choice("cloud", None, p.id, None, cost, cost)

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """Pick by the baseline's rule."""
        if self.kind == "cloud-only":
            return self.cloud(cls, payload_bytes)
        nodes = self.eligible(cls)
        if not nodes:
            return REFUSED if self.kind == "edge-only" else self.cloud(cls, payload_bytes)
        home = min(nodes, key=lambda n: hash64(f"{n.id}|{key}"))  # rendezvous hashing
        fill: float | None = None
        if self.kind in ("edge-only", "consistent-hash"):
            n = home
        elif self.kind == "round-robin":
            n = nodes[next(self.rr) % len(nodes)]
        elif self.kind == "least-loaded":
            n = min(nodes, key=lambda n: (self.load[n.id] / n.slots, n.id))
        elif self.kind == "p2c":
            a, b = self.rng.sample(nodes, 2) if len(nodes) > 1 else (nodes[0], nodes[0])
            n = b if self.load[b.id] / b.slots < self.load[a.id] / a.slots else a
        else:  # envoy-ring-hash
            ring = self._ring(cls, nodes)
            n, fill, home = ring.choose(key, self.load)
        self.load[n.id] += 1
        cost = edge_cost(n, self.policy)
        return Choice("edge", n.id, None, "full", cost, 0.0, n is home, fill)

    def _ring(self, cls: TrafficClass, nodes: list[EdgeNode]) -> EnvoyRing:
        ck = (cls.residency, cls.model)
        ring = self._rings.get(ck)
        if ring is None:
            weights = [n.weight * self.scores.get(n.id, 1.0) for n in nodes]
            ring = self._rings[ck] = EnvoyRing(nodes, weights, round(100 * (1 + self.eps)))
        return ring

    def failed(self, choice: Choice, now: float) -> None:
        """A baseline keeps no health of its own: its nodes stay where the feed puts them."""

    def done(self, choice: Choice) -> None:
        """Track in flight (least-loaded, p2c and Envoy's bounded load read it)."""
        if choice.node is not None:
            self.load[choice.node] -= 1
        elif choice.pool is not None:
            self.pool_load[choice.pool] -= 1

    def set_limit(self, tenant: str, limit: float) -> None:
        """These baselines do not enforce budgets."""

    def caps(self) -> dict[str, float]:
        """No caps to draw."""
        return {}


BASELINES = ("cloud-only", "edge-only", "round-robin", "consistent-hash", "least-loaded",
             "envoy-ring-hash", "p2c", "seed-cost-aware")


def make_baseline(policy: Policy, kind: str, seed: int = 0) -> Baseline | SeedCostAware:
    """The baseline router named `kind`."""
    if kind == "seed-cost-aware":
        return SeedCostAware(policy)
    return Baseline(policy, kind, seed)
