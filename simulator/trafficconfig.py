"""The scenario's `traffic` section: arrivals, keys and request classes (docs/reference.md).

Each default is written once, here; `simulator.traffic` draws the arrivals they describe.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from router.core.schema import Bool, Breach, Int, Num, Schema, Sect, Tags, Text, enforce, type_name
from simulator.publictrace import TraceSource

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
