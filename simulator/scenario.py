"""Scenario YAML → typed `Scenario` (docs/reference.md), with located errors.

The same declarative approach as the policy: `Scenario` mirrors the YAML, each default
is written once on its field, and `router.policy.loader.validate_located` places every
error at FILE:LINE:COL. A new section (`world:`) is one more field on `Scenario`:
`world: Annotated[World, Sect] = Field(default_factory=World)` with `World` a `Schema`
model; `Sect` makes an empty section mean its defaults.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

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
    type_name,
)
from router.policy.loader import validate_located
from router.policy.yamlloc import MAX_BYTES, Problem, load_located, read_text
from simulator.publictrace import TraceSource
from simulator.worldconfig import Site, WorldConfig

__all__ = ["Event", "Gateway", "Keys", "Scenario", "Site", "Traffic", "TrafficClass", "WorldConfig",
           "load_scenario", "parse_scenario"]

EVENT_KINDS = ("node_down", "node_up", "throttle", "spot_price", "partition", "budget",
               "preempt", "gateway_down", "gateway_up", "feed_delay")
Points = tuple[tuple[float, float], ...]


class TrafficClass(Schema):
    """One kind of request in the mix (`traffic.classes[]`)."""

    name: Text = Field(description="label in reports; default class-N (N its index)")
    weight: Num = Field(default=1.0, gt=0, description="share of arrivals")
    tenant: Text = Field(default="default", description="budget owner")
    residency: Tags = Field(default=frozenset(), description="residency tags required")
    slo_ms: Num = Field(default=100.0, gt=0, description="latency objective")
    model: Text | None = Field(default=None, description="model needed; null: any")
    degrade: Bool = Field(default=True, description="whether degraded/split answers are acceptable")
    max_cost_usd: Num | None = Field(default=None, ge=0, description="null: no per-request limit")
    payload_kb: Num = Field(default=16.0, ge=0, description="request body size")


def _rate(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"must be greater than 0, got {value!r}")
        return ((0.0, value),)
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a number or a list of [t_s, rps] points, got "
                         f"{type_name(value)}")
    return value


def _ascending(points: Points | None) -> Points | None:
    if points is None:
        return None
    out = [Breach((i,), f"expected [t_s, rps] with t ascending and rps >= 0, got {list(p)}")
           for i, p in enumerate(points)
           if p[1] < 0 or (i > 0 and p[0] < points[i - 1][0])]
    if not points:
        out.append(Breach((), "must list at least one [t_s, rps] point"))
    enforce(out)
    return points


class Keys(Schema):
    """The key population (`traffic.keys`)."""

    count: Int = Field(default=1000, gt=0, description="distinct affinity keys")
    zipf_s: Num = Field(default=1.1, ge=0, description="Zipf skew; <= 1 means uniform")


class Traffic(Schema):
    """Arrivals (`traffic`)."""

    rate_rps: Annotated[tuple[tuple[Num, Num], ...] | None, BeforeValidator(_rate),
                        AfterValidator(_ascending)] = Field(
        default=None,
        description="requests/s: one number, or [t_s, rps] points, piecewise linear")
    trace: TraceSource | None = Field(default=None, description="a public trace's arrivals")
    keys: Annotated[Keys, Sect] = Field(
        default_factory=lambda: Keys(), description="the key population")
    classes: tuple[TrafficClass, ...] = Field(description="the request classes (at least one)")

    @field_validator("classes", mode="before")
    @classmethod
    def _named(cls, classes: Any) -> Any:
        if isinstance(classes, list | tuple):
            return [{**c, "name": f"class-{i}"} if isinstance(c, dict) and "name" not in c
                    else c for i, c in enumerate(classes)]
        return classes

    @field_validator("classes")
    @classmethod
    def _some(cls, classes: tuple[TrafficClass, ...]) -> tuple[TrafficClass, ...]:
        enforce([] if classes else [Breach((), "must list at least one class")])
        return classes

    @model_validator(mode="after")
    def _one_source(self) -> Traffic:
        if (self.rate_rps is None) == (self.trace is None):
            enforce([Breach((), "give exactly one of rate_rps and trace")])
        return self


class Throttle(Schema):
    """`throttle: {node, compute_score}`."""

    node: Text
    compute_score: Num = Field(gt=0)


class Partition(Schema):
    """`partition: {pool, for_s}`."""

    pool: Text
    for_s: Num = Field(gt=0)


class Preempt(Schema):
    """`preempt: {pool, fraction, notice_s}`: a spot reclaim notice."""

    pool: Text
    fraction: Num = Field(gt=0, le=1)
    notice_s: Num = Field(default=120.0, ge=0)


class FeedDelay(Schema):
    """`feed_delay: {for_s}`."""

    for_s: Num = Field(gt=0)


class BudgetChange(Schema):
    """`budget: {tenant, limit_usd}`."""

    tenant: Text
    limit_usd: Num = Field(ge=0)


class Gateway(Schema):
    """One gateway (router) in front of the fleet (`gateways[]`)."""

    share: Num = Field(gt=0, description="its share of the traffic (keys)")


class Event(Schema):
    """A timed change to the world (`events[]`): `at_s` and exactly one kind."""

    at_s: Num = Field(ge=0, description="when, in simulated seconds")
    node_down: Text | None = None
    node_up: Text | None = None
    throttle: Throttle | None = None
    spot_price: dict[Text, Annotated[Num, Field(ge=0)]] | None = None
    partition: Partition | None = None
    budget: BudgetChange | None = None
    preempt: Preempt | None = None
    gateway_down: Int | None = Field(default=None, ge=0, description="index into gateways")
    gateway_up: Int | None = Field(default=None, ge=0, description="index into gateways")
    feed_delay: FeedDelay | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Event:
        given = [k for k in EVENT_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            enforce([Breach((), f"an event needs exactly one of {', '.join(EVENT_KINDS)}")])
        if self.spot_price is not None and not self.spot_price:
            enforce([Breach(("spot_price",), "expected {instance_type: usd_per_hour}")])
        return self

    @property
    def kind(self) -> str:
        """Which change this is."""
        return next(k for k in EVENT_KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> dict[str, Any]:
        """The change's arguments, by name."""
        value = getattr(self, self.kind)
        if isinstance(value, str):
            return {"node": value}
        if isinstance(value, int):
            return {"gateway": value}
        if isinstance(value, dict):
            return {"prices": dict(value)}
        return dict(value)


def _policy_file(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {type_name(value)}")
    base = (info.context or {}).get("base", Path())
    path = Path(base) / value
    if not path.is_file():
        raise ValueError(f"policy file {path} does not exist")
    return path


def _version_one(value: int) -> int:
    if value != 1:
        raise ValueError(f"unsupported scenario version {value}; this simulator reads 1")
    return value


class Scenario(Schema):
    """A whole, validated scenario."""

    version: Annotated[Int, AfterValidator(_version_one)] = 1
    policy: Annotated[Path, BeforeValidator(_policy_file)] = Field(
        description="policy file, relative to the scenario")
    duration_s: Num = Field(default=600.0, gt=0, description="simulated time")
    seed: Int = Field(default=1, ge=0, description="random seed")
    traffic: Traffic = Field(description="arrivals")
    events: tuple[Event, ...] = Field(default=(), description="timed changes, any order")
    world: Annotated[WorldConfig, Sect] = Field(
        default_factory=lambda: WorldConfig(), description="how the simulated world behaves")
    gateways: tuple[Gateway, ...] = Field(
        default=(), description="routers leasing the edge's slots; none: one router")
    lease_sync_s: Num = Field(default=0.25, gt=0, description="gateways' lease sync period")
    _file: str = PrivateAttr("<scenario>")

    @field_validator("events", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("events")
    @classmethod
    def _in_time_order(cls, events: tuple[Event, ...]) -> tuple[Event, ...]:
        return tuple(sorted(events, key=lambda e: e.at_s))

    @model_validator(mode="after")
    def _known_gateways(self) -> Scenario:
        bad = [Breach(("events", i, e.kind), f"gateway {e.args['gateway']} is not one of the "
                      f"{len(self.gateways)} in gateways")
               for i, e in enumerate(self.events) if e.kind.startswith("gateway_")
               and e.args["gateway"] >= len(self.gateways)]
        enforce(bad)
        return self

    @property
    def file(self) -> str:
        """The file this scenario was read from."""
        return self._file

    @property
    def rate(self) -> Points:
        """Rate points [(t_s, rps), ...] (a trace's mean rate when it drives the arrivals)."""
        if self.traffic.rate_rps is not None:
            return self.traffic.rate_rps
        src = self.traffic.trace
        assert src is not None
        tr = src.trace
        return ((0.0, src.rate_scale * len(tr.t) / (tr.period_s * src.time_scale)),)

    @property
    def keys(self) -> int:
        """Distinct affinity keys."""
        return self.traffic.keys.count

    @property
    def zipf_s(self) -> float:
        """Zipf skew of key popularity."""
        return self.traffic.keys.zipf_s

    @property
    def classes(self) -> tuple[TrafficClass, ...]:
        """The request classes."""
        return self.traffic.classes

    def rate_at(self, t: float) -> float:
        """Requests per second at time `t` (piecewise linear)."""
        pts = self.rate
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, r0), (t1, r1) in itertools.pairwise(pts):
            if t0 <= t <= t1:
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0) if t1 > t0 else r1
        return pts[-1][1]


def parse_scenario(text: str, file: str = "<scenario>") -> tuple[Scenario | None, list[Problem]]:
    """Parse scenario text; returns the scenario (None on any error) and every problem."""
    loc, problems = load_located(text, file)
    if loc.data is None:
        return None, problems
    scenario, problems = validate_located(Scenario, loc, context={"base": Path(file).parent})
    if not isinstance(scenario, Scenario):
        return None, problems
    scenario._file = file
    src = scenario.traffic.trace
    if src is not None and src.trace.skipped:
        tr = src.trace
        at = loc.where(("traffic", "trace", "path"))
        problems.append(Problem(file, at[0], at[1], f"traffic.trace.path: {tr.skipped} of "
                                f"{tr.rows} rows broken, skipped (first: {tr.first_broken})",
                                "warning"))
    return scenario, problems


def load_scenario(path: str | Path) -> tuple[Scenario | None, list[Problem]]:
    """Read and parse a scenario file."""
    text, problems = read_text(str(path), MAX_BYTES)
    return (None, problems) if text is None else parse_scenario(text, str(path))
