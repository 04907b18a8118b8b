"""Typed, immutable policy model (CONTRACT.md section 5).

The YAML loader in `router.policy` builds these; the core only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

QUALITY_LEVELS: tuple[str, ...] = ("full", "constrained", "minimal")


@dataclass(frozen=True, slots=True)
class EdgeNode:
    """One edge node as the policy declares it."""

    id: str
    address: str
    hardware: str
    weight: float
    slots: int
    residency: frozenset[str]
    models: frozenset[str]
    base_latency_ms: float
    cost_per_inference_usd: float | None = None

    def serves(self, model: str | None) -> bool:
        """Whether this node serves `model` (None means any)."""
        return model is None or "*" in self.models or model in self.models


@dataclass(frozen=True, slots=True)
class CloudPool:
    """One cloud GPU pool."""

    id: str
    address: str
    residency: frozenset[str]
    models: frozenset[str]
    instance_type: str
    latency_ms: float
    compute_ms: float
    egress_usd_per_gb: float
    usd_per_hour: float = 2.0
    max_inflight: int = 0  # 0: unbounded (the cloud is elastic)

    def serves(self, model: str | None) -> bool:
        """Whether this pool serves `model` (None means any)."""
        return model is None or "*" in self.models or model in self.models


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """Where the capacity and spot-price feed comes from."""

    source: str | None = None
    stale_after_seconds: float = 90.0
    stale_weight: float = 0.5
    missing_node: str = "keep"  # keep | unhealthy
    max_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SloConfig:
    """Latency objective defaults."""

    default_latency_ms: float = 100.0
    degraded_slack: float = 1.5


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """How VRAM pressure and a quality level change an edge node's answer."""

    constrained_above: float = 0.85
    minimal_above: float = 0.95
    latency_factor: tuple[tuple[str, float], ...] = (
        ("full", 1.0),
        ("constrained", 0.6),
        ("minimal", 0.35),
    )

    def factor(self, quality: str) -> float:
        """Latency multiplier for a quality level."""
        for name, value in self.latency_factor:
            if name == quality:
                return value
        return 1.0


@dataclass(frozen=True, slots=True)
class SplitConfig:
    """Split mode: features on the edge, inference in the cloud."""

    cloud_cost_fraction: float = 0.3
    extra_latency_ms: float = 15.0
    payload_fraction: float = 0.1


@dataclass(frozen=True, slots=True)
class TenantBudget:
    """A tenant's cloud budget per period."""

    limit_usd: float
    soft_fraction: float | None = None
    hard_fraction: float | None = None


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Cloud spend limits per tenant."""

    period: str = "month"  # hour | day | week | month
    store: str = "memory"
    soft_fraction: float = 0.8
    hard_fraction: float = 1.0
    tenants: tuple[tuple[str, TenantBudget], ...] = ()
    default_tenant: str = "default"
    unknown_tenant: str = "default"  # default | refuse

    def tenant(self, name: str) -> TenantBudget | None:
        """The budget of `name`, or None when the policy has none."""
        for tenant, budget in self.tenants:
            if tenant == name:
                return budget
        return None

    def fractions(self, name: str) -> tuple[float, float]:
        """(soft, hard) fractions in force for `name`."""
        budget = self.tenant(name)
        soft = self.soft_fraction
        hard = self.hard_fraction
        if budget is not None:
            soft = budget.soft_fraction if budget.soft_fraction is not None else soft
            hard = budget.hard_fraction if budget.hard_fraction is not None else hard
        return soft, hard


@dataclass(frozen=True, slots=True)
class Defaults:
    """Tag values for requests that leave them out."""

    tenant: str = "default"
    residency: frozenset[str] = frozenset()
    model: str | None = None
    accept_degradation: bool = True
    max_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A whole, validated policy."""

    version: int
    refresh_seconds: float
    feed: FeedConfig
    balance_factor: float
    slo: SloConfig
    edge_cost_per_inference_usd: float
    nodes: tuple[EdgeNode, ...]
    pools: tuple[CloudPool, ...]
    split: SplitConfig
    budgets: BudgetConfig
    quality: QualityConfig = field(default_factory=QualityConfig)
    defaults: Defaults = field(default_factory=Defaults)
    digest: str = ""  # version hash of the source text, shown in x-route-policy

    def node(self, node_id: str) -> EdgeNode | None:
        """The node named `node_id`, if any."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None

    def pool(self, pool_id: str) -> CloudPool | None:
        """The pool named `pool_id`, if any."""
        for pool in self.pools:
            if pool.id == pool_id:
                return pool
        return None
