"""Scenario YAML → typed `Scenario` (docs/reference.md), with located errors.

The same declarative approach as the policy: `Scenario` mirrors the YAML, each default
is written once on its field, and `router.policy.loader.validate_located` places every
error at FILE:LINE:COL. A new section is one more field on `Scenario`, its model a
`Schema` in a module of its own (`simulator.trafficconfig` for `traffic:`,
`simulator.worldconfig` for `world:`): `world: Annotated[WorldConfig, Sect] =
Field(default_factory=WorldConfig)`; `Sect` makes an empty section mean its defaults.
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

from router.core.schema import Breach, Int, Num, Schema, Sect, Text, enforce, type_name
from router.policy.loader import validate_located
from router.policy.yamlloc import MAX_BYTES, Problem, load_located, read_text
from simulator.trafficconfig import Keys, Points, Traffic, TrafficClass
from simulator.worldconfig import Site, WorldConfig

__all__ = ["SEED_MAX", "Event", "Gateway", "Keys", "Scenario", "Site", "Traffic", "TrafficClass",
           "WorldConfig", "load_scenario", "parse_scenario"]

# the planner's search seeds numpy's legacy generator (optuna's TPE), which takes 32 bits
SEED_MAX = 2**32 - 1
EVENT_KINDS = ("node_down", "node_up", "throttle", "spot_price", "partition", "budget",
               "preempt", "gateway_down", "gateway_up", "feed_delay")


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
    seed: Int = Field(default=1, ge=0, le=SEED_MAX, description="random seed")
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
