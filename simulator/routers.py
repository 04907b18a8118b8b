"""Routers under test: the real core (adaptive) and the baselines, as plug-ins.

Every router answers `route(cls, key, now)` with a `Choice` and hears `done` when
the request ends. Baselines respect residency and model (they are not straw
men on compliance) but know nothing of SLOs, budgets or bounded load.
"""

from __future__ import annotations

import itertools
from typing import Protocol, cast

from router.core.feed import FeedSnapshot
from router.core.model import Policy, TenantBudget
from router.core.request import RouteRequest
from router.core.ring import hash64
from router.runtime import Routed, Runtime
from simulator.scenario import TrafficClass
from simulator.world import Choice

EPOCH = 1_790_000_000.0  # simulated t=0 (2026-09-21T00:00Z): budgets roll over in UTC periods


class Router(Protocol):
    """What the simulator drives."""

    name: str

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """A new feed snapshot arrived."""

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """Where this request goes."""

    def done(self, choice: Choice) -> None:
        """The request ended."""

    def set_limit(self, tenant: str, limit: float) -> None:
        """A budget change event."""


class Adaptive:
    """hybrid-router's own core through the same `Runtime` facade the server uses."""

    def __init__(self, policy: Policy, name: str = "hybrid-router") -> None:
        """Compile the policy with no feed yet."""
        self.name = name
        self.runtime = Runtime(policy, clock=lambda: EPOCH)

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """Rebuild the snapshot from the feed (as the refresher does)."""
        self.runtime.install(feed=feed, now=EPOCH + now)

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """One decision through the shared plan and admission."""
        req = RouteRequest(key=key, tenant=cls.tenant, residency=cls.residency,
                           slo_ms=cls.slo_ms, model=cls.model, accept_degradation=cls.degrade,
                           max_cost_usd=cls.max_cost_usd, payload_bytes=payload_bytes)
        routed = self.runtime.decide(req, now=EPOCH + now)
        d = routed.decision
        if not d.routed:
            return Choice("refused")
        pool = d.split_pool if d.mode == "split" else (d.node if d.mode == "cloud" else None)
        node = d.node if d.mode != "cloud" else None
        return Choice(d.mode, node, pool, d.quality, d.cost_usd, routed)

    def done(self, choice: Choice) -> None:
        """Release slots and settle the budget."""
        if choice.token is not None:
            self.runtime.finish(cast(Routed, choice.token))

    def set_limit(self, tenant: str, limit: float) -> None:
        """A budget event: the policy in force, with this tenant's limit changed."""
        policy = self.runtime.policy
        budgets = policy.budgets
        tenants = dict(budgets.tenants)
        old = tenants.get(tenant)
        tenants[tenant] = TenantBudget(limit_usd=limit) if old is None else \
            old.model_copy(update={"limit_usd": limit})
        changed = policy.model_copy(update={
            "budgets": budgets.model_copy(update={"tenants": tenants})})
        self.runtime.install(policy=changed, now=self.runtime.snapshot.built_at)


class Baseline:
    """cloud-only, edge-only (plain consistent hashing), round-robin, least-loaded."""

    def __init__(self, policy: Policy, kind: str) -> None:
        """A baseline of `kind` over the policy's targets."""
        self.name = kind
        self.kind = kind
        self.policy = policy
        self.healthy = {n.id for n in policy.nodes}
        self.prices = {p.instance_type: p.usd_per_hour for p in policy.pools}
        self.load: dict[str, int] = {n.id: 0 for n in policy.nodes}
        self.rr = itertools.count()

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """Health and prices only."""
        self.healthy = {n for n, s in feed.nodes.items() if s.healthy}
        self.prices.update(feed.prices)

    def _cloud(self, cls: TrafficClass, payload_bytes: int) -> Choice:
        pools = [p for p in self.policy.pools
                 if cls.residency <= p.residency and p.serves(cls.model)]
        if not pools:
            return Choice("refused")
        p = min(pools, key=lambda p: p.latency_ms)
        price = self.prices.get(p.instance_type, p.usd_per_hour)
        cost = price / 3600 * p.compute_ms / 1000 + p.egress_usd_per_gb * payload_bytes / 1e9
        return Choice("cloud", None, p.id, None, cost)

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """Pick by the baseline's rule."""
        if self.kind == "cloud-only":
            return self._cloud(cls, payload_bytes)
        nodes = [n for n in self.policy.nodes if n.id in self.healthy
                 and cls.residency <= n.residency and n.serves(cls.model)]
        if not nodes:
            return Choice("refused") if self.kind == "edge-only" else \
                self._cloud(cls, payload_bytes)
        if self.kind in ("edge-only", "consistent-hash"):
            n = min(nodes, key=lambda n: hash64(f"{n.id}|{key}"))  # rendezvous hashing
        elif self.kind == "round-robin":
            n = nodes[next(self.rr) % len(nodes)]
        else:  # least-loaded, relative to slots
            n = min(nodes, key=lambda n: (self.load[n.id] / n.slots, n.id))
        self.load[n.id] += 1
        cost = n.cost_per_inference_usd
        if cost is None:
            cost = self.policy.edge_cost_per_inference_usd
        return Choice("edge", n.id, None, "full", cost)

    def done(self, choice: Choice) -> None:
        """Track in-flight for least-loaded."""
        if choice.node is not None:
            self.load[choice.node] -= 1

    def set_limit(self, tenant: str, limit: float) -> None:
        """Baselines do not enforce budgets."""


BASELINES = ("cloud-only", "edge-only", "round-robin", "consistent-hash", "least-loaded")
