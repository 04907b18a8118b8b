"""Small builders for policies, tables and requests used across core tests."""

from __future__ import annotations

from collections.abc import Iterable

from router.core.budget import BudgetLedger
from router.core.feedsnapshot import FeedSnapshot, NodeState
from router.core.loads import LoadTracker
from router.core.policy import (
    BudgetConfig,
    Cloud,
    CloudPool,
    Edge,
    EdgeNode,
    Hashing,
    Policy,
    SloConfig,
    TenantBudget,
)
from router.core.request import RouteRequest
from router.core.ring import PointCache
from router.core.table import Snapshot, build_table

NOW = 1_795_000_000.0  # 2026-11-18, a fixed clock for every core test


def node(i: int, *, weight: float = 1.0, slots: int = 8, residency: Iterable[str] = (),
         models: Iterable[str] = ("*",), latency: float = 30.0) -> EdgeNode:
    """Edge node number `i` on 127.0.0.1:(10000+i)."""
    return EdgeNode(id=f"n{i:04d}", address=f"127.0.0.1:{10000 + i}", hardware="generic",
                    weight=weight, slots=slots, residency=frozenset(residency),
                    models=frozenset(models), base_latency_ms=latency,
                    usd_per_inference=0.001)


def pool(name: str = "cloud", *, port: int = 9900, residency: Iterable[str] = (),
         latency: float = 120.0, usd_per_hour: float = 3.6, compute_ms: float = 100.0
         ) -> CloudPool:
    """A cloud pool; with the defaults one request costs $0.0001 before egress."""
    return CloudPool(id=name, address=f"127.0.0.1:{port}", residency=frozenset(residency),
                     models=frozenset({"*"}), instance_type=f"{name}-type", latency_ms=latency,
                     compute_ms=compute_ms, egress_usd_per_gb=0.0, usd_per_hour=usd_per_hour)


def policy(nodes: Iterable[EdgeNode] = (), pools: Iterable[CloudPool] = (), *,
           eps: float = 0.25, slo_ms: float = 100.0, limit: float | None = None,
           soft: float = 0.8, min_cap: float = 0.0, queue: float = 0.0) -> Policy:
    """A policy from parts; `limit` sets tenant 'default''s budget; `queue`: the nodes'
    `edge.queue_per_slot` (0 here, so a full edge spills, unless a test asks for a queue)."""
    tenants = {} if limit is None else {"default": TenantBudget(limit_usd=limit)}
    return Policy(version=1, refresh_seconds=30,
                  hashing=Hashing(balance_factor=eps, min_cap_fraction=min_cap),
                  slo=SloConfig(default_latency_ms=slo_ms, degraded_slack=1.5),
                  edge=Edge(usd_per_inference=0.001, queue_per_slot=queue, nodes=tuple(nodes)),
                  cloud=Cloud(pools=tuple(pools)),
                  budgets=BudgetConfig(soft_fraction=soft, tenants=tenants)).with_digest("test")


def feed(states: dict[str, NodeState], prices: dict[str, float] | None = None) -> FeedSnapshot:
    """A fresh feed snapshot generated at NOW."""
    return FeedSnapshot(generated_at=NOW, received_at=NOW, nodes=states, prices=prices or {})


def table(pol: Policy, snap: FeedSnapshot | None = None,
          tracker: LoadTracker | None = None) -> Snapshot:
    """Compile a table at NOW."""
    return build_table(pol, snap, tracker or LoadTracker(), PointCache(), now=NOW)


def ledger(pol: Policy) -> BudgetLedger:
    """An in-memory ledger (limits come from the snapshot's policy at each call)."""
    return BudgetLedger()


def request(key: str | None = "k", *, residency: Iterable[str] = (), slo: float = 100.0,
            model: str | None = None, degrade: bool = True, max_cost: float | None = None,
            tenant: str = "default", payload: int = 0) -> RouteRequest:
    """A request value without going through headers."""
    return RouteRequest(key=key, tenant=tenant, residency=frozenset(residency), slo_ms=slo,
                        model=model, accept_degradation=degrade, max_cost_usd=max_cost,
                        payload_bytes=payload, request_id="rid")
