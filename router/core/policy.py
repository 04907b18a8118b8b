"""The policy as a typed, immutable model that mirrors the YAML (docs/reference.md).

Each key's default is written once, here, on its field (with its bounds and meaning in
the field's description); a legal zero is kept as given. Cross-field rules are model
validators that name the key they are about. `router.policy.loader` feeds parsed YAML
through `Policy.model_validate` and places every error in the file; the core and the
simulator only read the result. Reads are plain attribute reads: validation happens
once, when a policy is built, and `model_copy(update=...)` derives variants.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic import ValidationError as _ValidationError

from router.core.fleet import Cloud, CloudPool, Edge, EdgeNode, duplicates, valid_hostport
from router.core.schema import (
    Bool,
    Breach,
    Int,
    Num,
    Schema,
    Sect,
    Tags,
    Text,
    enforce,
    reraise,
)
from router.core.tagrules import RESIDENCY_TAG

__all__ = ["LATENCY_FACTOR", "QUALITY_LEVELS", "BudgetConfig", "Cloud", "CloudPool", "Defaults",
           "Edge", "EdgeNode", "FeedConfig", "Hashing", "Policy", "QualityConfig", "SloConfig",
           "SplitConfig", "TenantBudget", "valid_hostport"]

QUALITY_LEVELS: tuple[str, ...] = ("full", "constrained", "minimal")
LATENCY_FACTOR: Mapping[str, float] = MappingProxyType(
    {"full": 1.0, "constrained": 0.6, "minimal": 0.35})


Fraction = Annotated[Num, Field(ge=0.0, le=1.0)]


class FeedConfig(Schema):
    """Where the capacity and spot-price feed comes from (`feed`)."""

    source: Text | None = Field(
        default=None, description="file:PATH, http(s)://… or grpc://…; null: none")
    stale_after_seconds: Num = Field(default=90.0, gt=0, description="age past which data is stale")
    stale_weight: Fraction = Field(default=0.5, description="weight factor on stale nodes")
    missing_node: Literal["keep", "unhealthy"] = Field(
        default="keep",
        description="a policy node the feed omits: keep its last state, or unhealthy")
    max_bytes: Int = Field(
        default=4 * 1024 * 1024, gt=0, description="largest feed document accepted")

    @model_validator(mode="after")
    def _source_scheme(self) -> FeedConfig:
        if self.source is not None and not self.source.startswith(
                ("file:", "http://", "https://", "grpc://")):
            enforce([Breach(("source",), "must start with file:, http://, https:// or "
                                         f"grpc://, got '{self.source}'")])
        return self


class Hashing(Schema):
    """Bounded-load consistent hashing (`hashing`)."""

    balance_factor: Num = Field(
        default=0.25, gt=0, description="ε: a node's cap is (1+ε) × its share")
    min_cap_fraction: Fraction = Field(
        default=0.0,
        description="utilization floor: a cap is never below this fraction of slots")


class OutlierConfig(Schema):
    """Passive health: edge nodes whose requests fail are taken out of the ring (`outliers`)."""

    failures: Int = Field(
        default=5, ge=0,
        description="failed requests on a node within `interval_s` that take it out (0: never)")
    failure_fraction: Fraction = Field(
        default=0.5,
        description="and at least this share of the requests that ended on it in that time")
    interval_s: Num = Field(default=10.0, gt=0, description="the window failures are counted in")
    eject_s: Num = Field(
        default=30.0, gt=0,
        description="how long a node stays out; doubled for each time in a row, up to max_eject_s")
    max_eject_s: Num = Field(default=300.0, gt=0, description="the longest a node stays out")
    max_ejected_fraction: Fraction = Field(
        default=0.5,
        description="never more than this share of the nodes with a residency tag out at once")


class SloConfig(Schema):
    """Latency objective defaults (`slo`)."""

    default_latency_ms: Num = Field(default=100.0, gt=0, description="SLO of a request without one")
    degraded_slack: Num = Field(
        default=1.5, ge=1.0, description="edge-degraded may take SLO × this")


class QualityConfig(Schema):
    """VRAM pressure → quality level, with hysteresis (`quality`)."""

    constrained_above: Fraction = Field(default=0.85, description="VRAM use entering 'constrained'")
    minimal_above: Fraction = Field(default=0.95, description="VRAM use entering 'minimal'")
    recover_below: Fraction = Field(default=0.75, description="VRAM use leaving a degraded level")

    def factor(self, quality: str) -> float:
        """Latency multiplier for a quality level."""
        return LATENCY_FACTOR.get(quality, 1.0)

    @model_validator(mode="after")
    def _ordered(self) -> QualityConfig:
        out: list[Breach] = []
        if self.constrained_above > self.minimal_above:
            out.append(Breach(("constrained_above",), "must not be above minimal_above "
                              f"({self.constrained_above:g} > {self.minimal_above:g})"))
        if self.recover_below > self.constrained_above:
            where = "recover_below" if "recover_below" in self.model_fields_set \
                else "constrained_above"
            out.append(Breach((where,), f"recover_below {self.recover_below:g} is above "
                              f"constrained_above {self.constrained_above:g}; set "
                              "quality.recover_below to at most constrained_above"))
        enforce(out)
        return self


class SplitConfig(Schema):
    """Split mode: features on the edge, inference in the cloud (`split`)."""

    payload_fraction: Fraction = Field(
        default=0.05, description="feature size / payload size")
    cloud_compute_fraction: Fraction = Field(
        default=0.7, description="share of the pool's compute_ms a split still needs")


class TenantBudget(Schema):
    """A tenant's cloud budget per period and what it may do (`budgets.tenants.NAME`)."""

    limit_usd: Num = Field(ge=0, description="cloud spend allowed per period")
    soft_fraction: Num | None = Field(default=None, ge=0, description="null: budgets.soft_fraction")
    hard_fraction: Num | None = Field(default=None, gt=0, description="null: budgets.hard_fraction")
    residency: Tags = Field(
        default=frozenset(),
        description="residency every request of the tenant carries, added to what it sends")
    max_cost_usd: Num | None = Field(
        default=None, ge=0, description="most one request may cost; null: no tenant limit")
    models: Tags | None = Field(
        default=None, description="models the tenant may ask for; null: any")

    @property
    def restricts(self) -> bool:
        """Whether any rule beyond the budget applies (residency, max cost, models)."""
        return bool(self.residency) or self.max_cost_usd is not None or self.models is not None

    @model_validator(mode="after")
    def _rules(self) -> TenantBudget:
        out: list[Breach] = []
        if self.models is not None and not self.models:
            out.append(Breach(("models",), "must name at least one model, or be left out "
                                           "(any model)"))
        out += [Breach(("residency",), f"residency tag '{tag}' has characters other than "
                                       "ASCII letters, digits, - and _ (or is over 64 long)")
                for tag in sorted(self.residency) if not RESIDENCY_TAG.fullmatch(tag)]
        enforce(out)
        return self


def _read_only(value: Mapping[str, TenantBudget]) -> Mapping[str, TenantBudget]:
    return MappingProxyType(dict(value))


def _store(value: str) -> str:
    if not (value == "memory" or value.startswith(("sqlite:", "redis://"))):
        raise ValueError(f"must be memory, sqlite:PATH or redis://HOST:PORT/DB, got '{value}'")
    return value


class BudgetConfig(Schema):
    """Cloud spend limits per tenant (`budgets`)."""

    default_tenant: ClassVar[str] = "default"

    period: Literal["hour", "day", "week", "month"] = Field(
        default="month", description="spend resets at each UTC period start")
    store: Annotated[Text, AfterValidator(_store)] = Field(
        default="memory", description="memory, sqlite:PATH or redis://HOST:PORT/DB")
    soft_fraction: Num = Field(default=0.8, ge=0, description="above it cloud is a last resort")
    hard_fraction: Num = Field(default=1.0, gt=0, description="at it cloud is refused")
    unknown_tenant: Literal["default", "refuse"] = Field(
        default="default", description="a tenant the policy does not name: share 'default', or 403")
    tenants: Annotated[Mapping[str, TenantBudget], AfterValidator(_read_only)] = Field(
        default_factory=lambda: MappingProxyType({}), description="budgets by tenant name")

    def __getstate__(self) -> dict[Any, Any]:
        """Pickle `tenants` as a plain dict (a read-only view does not pickle)."""
        state = super().__getstate__()
        fields = dict(state["__dict__"])
        fields["tenants"] = dict(fields["tenants"])
        return {**state, "__dict__": fields}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Restore `tenants` as the read-only view the model validator makes."""
        fields = dict(state["__dict__"])
        fields["tenants"] = MappingProxyType(fields["tenants"])
        super().__setstate__({**state, "__dict__": fields})

    def tenant(self, name: str) -> TenantBudget | None:
        """The budget of `name`, or None when the policy has none."""
        return self.tenants.get(name)

    def fractions(self, name: str) -> tuple[float, float]:
        """(soft, hard) fractions in force for `name`."""
        budget = self.tenants.get(name)
        soft, hard = self.soft_fraction, self.hard_fraction
        if budget is not None:
            soft = budget.soft_fraction if budget.soft_fraction is not None else soft
            hard = budget.hard_fraction if budget.hard_fraction is not None else hard
        return soft, hard

    @model_validator(mode="after")
    def _soft_below_hard(self) -> BudgetConfig:
        out: list[Breach] = []
        if self.soft_fraction > self.hard_fraction:
            out.append(Breach(("soft_fraction",), f"soft fraction {self.soft_fraction:g} is "
                              f"above the hard fraction {self.hard_fraction:g}"))
        for name, budget in self.tenants.items():
            soft, hard = self.fractions(name)
            own = budget.soft_fraction is not None or budget.hard_fraction is not None
            if own and soft > hard:
                out.append(Breach(("tenants", name), f"soft fraction {soft:g} is above the "
                                  f"hard fraction {hard:g}"))
        enforce(out)
        return self


class Defaults(Schema):
    """Tag values for requests that leave them out (`defaults`)."""

    tenant: Text = Field(default="default", description="budget owner of a request without one")
    residency: Tags = Field(default=frozenset(), description="residency of a request without one")
    model: Text | None = Field(
        default=None, description="model of a request without one; null: any")
    accept_degradation: Bool = Field(
        default=True, description="whether degraded/split is acceptable")
    max_cost_usd: Num | None = Field(default=None, ge=0, description="null: no per-request limit")
    payload_kb: Num = Field(
        default=64.0, ge=0,
        description="payload size assumed when a request has no content-length")


def _version_one(value: int) -> int:
    if value != 1:
        raise ValueError(f"unsupported policy version {value}; this router reads 1")
    return value


def _section(kind: type[Schema]) -> Any:
    return Field(default_factory=kind, description=kind.__doc__)


class Policy(Schema):
    """A whole, validated policy; `digest` is the version hash of its source text."""

    version: Annotated[Int, AfterValidator(_version_one)] = Field(
        description="policy format version; this router reads 1")
    refresh_seconds: Num = Field(default=30.0, gt=0, description="feed refresh period")
    feed: Annotated[FeedConfig, Sect] = _section(FeedConfig)
    hashing: Annotated[Hashing, Sect] = _section(Hashing)
    quality: Annotated[QualityConfig, Sect] = _section(QualityConfig)
    slo: Annotated[SloConfig, Sect] = _section(SloConfig)
    edge: Annotated[Edge, Sect] = _section(Edge)
    outliers: Annotated[OutlierConfig, Sect] = _section(OutlierConfig)
    cloud: Annotated[Cloud, Sect] = _section(Cloud)
    split: Annotated[SplitConfig, Sect] = _section(SplitConfig)
    budgets: Annotated[BudgetConfig, Sect] = _section(BudgetConfig)
    defaults: Annotated[Defaults, Sect] = _section(Defaults)
    # Version hash of the source text, shown in x-route-policy ('' when built in code). Not a
    # key of the file: `with_digest` stores it in the instance, where every request reads it
    # as a plain attribute (a pydantic private attribute costs microseconds per read).
    digest: ClassVar[str] = ""

    @property
    def nodes(self) -> tuple[EdgeNode, ...]:
        """The edge nodes (`edge.nodes`)."""
        return self.edge.nodes

    @property
    def pools(self) -> tuple[CloudPool, ...]:
        """The cloud pools (`cloud.pools`)."""
        return self.cloud.pools

    @property
    def balance_factor(self) -> float:
        """ε of bounded-load hashing (`hashing.balance_factor`)."""
        return self.hashing.balance_factor

    def edge_marginal_usd(self, node: EdgeNode) -> float:
        """What one more inference on `node` costs (power): its own, else the edge's."""
        own = node.usd_per_inference
        return self.edge.usd_per_inference if own is None else own

    @property
    def fixed_usd_per_hour(self) -> float:
        """What the owned edge fleet and reserved cloud capacity cost per hour, used or not."""
        return self.edge_fixed_usd_per_hour + sum(p.fixed_usd_per_hour for p in self.pools)

    @property
    def edge_fixed_usd_per_hour(self) -> float:
        """What owning the edge fleet costs per hour."""
        return sum(n.fixed_usd_per_hour for n in self.nodes)

    def with_digest(self, digest: str) -> Policy:
        """This policy stamped with the version hash of its source (copies keep it)."""
        out = self.model_copy()
        out.__dict__["digest"] = digest
        return out

    def node(self, node_id: str) -> EdgeNode | None:
        """The node named `node_id`, if any."""
        return next((n for n in self.edge.nodes if n.id == node_id), None)

    def pool(self, pool_id: str) -> CloudPool | None:
        """The pool named `pool_id`, if any."""
        return next((p for p in self.cloud.pools if p.id == pool_id), None)

    @model_validator(mode="wrap")
    @classmethod
    def _fleet_rules(cls, data: Any, handler: Any) -> Policy:
        # Checked on the raw entries, so an entry with another error still counts as taken.
        taken = duplicates(data)
        try:
            policy: Policy = handler(data)
        except _ValidationError as exc:
            reraise(cls.__name__, exc, taken)
            raise
        reraise(cls.__name__, None, taken)
        if not policy.edge.nodes and not policy.cloud.pools:
            enforce([Breach((), "the policy has neither edge nodes nor cloud pools")])
        return policy
