"""Scenario YAML (CONTRACT.md section 8) → typed `Scenario`, with located errors."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.policy.yamlloc import Checker, Problem, load_located
from router.policy.yamlloc import Path as KeyPath

EVENT_KINDS = ("node_down", "node_up", "throttle", "spot_price", "partition", "budget")


@dataclass(frozen=True, slots=True)
class TrafficClass:
    """One kind of request in the mix."""

    name: str
    weight: float
    tenant: str
    residency: frozenset[str]
    slo_ms: float
    model: str | None
    degrade: bool
    max_cost_usd: float | None
    payload_kb: float


@dataclass(frozen=True, slots=True)
class Event:
    """A timed change to the world."""

    at_s: float
    kind: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole, validated scenario."""

    file: str
    policy: Path
    duration_s: float
    seed: int
    rate: tuple[tuple[float, float], ...]
    keys: int
    zipf_s: float
    classes: tuple[TrafficClass, ...]
    events: tuple[Event, ...] = field(default=())

    def rate_at(self, t: float) -> float:
        """Requests per second at time `t` (piecewise linear)."""
        pts = self.rate
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, r0), (t1, r1) in itertools.pairwise(pts):
            if t0 <= t <= t1:
                return r0 + (r1 - r0) * (t - t0) / (t1 - t0) if t1 > t0 else r1
        return pts[-1][1]


def _rate(c: Checker, m: dict[str, Any], p: KeyPath) -> tuple[tuple[float, float], ...]:
    raw = m.get("rate_rps")
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if raw <= 0:
            c.error((*p, "rate_rps"), f"must be greater than 0, got {raw}")
            return ((0.0, 1.0),)
        return ((0.0, float(raw)),)
    if not isinstance(raw, list) or not raw:
        c.error((*p, "rate_rps") if "rate_rps" in m else p,
                "rate_rps must be a number or a list of [t_s, rps] points")
        return ((0.0, 1.0),)
    pts: list[tuple[float, float]] = []
    for i, item in enumerate(raw):
        ok = (isinstance(item, list) and len(item) == 2
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item))
        if not ok or item[1] < 0 or (pts and item[0] < pts[-1][0]):
            c.error((*p, "rate_rps", i), f"expected [t_s, rps] with t ascending and rps >= 0, "
                                          f"got {item!r}")
            continue
        pts.append((float(item[0]), float(item[1])))
    return tuple(pts) or ((0.0, 1.0),)


def _class(c: Checker, raw: Any, i: int) -> TrafficClass | None:
    p: KeyPath = ("traffic", "classes", i)
    m = c.mapping(raw, p, ("name", "weight", "tenant", "residency", "slo_ms", "model", "degrade",
                           "max_cost_usd", "payload_kb"))
    if not m:
        return None
    return TrafficClass(
        name=c.string(m, "name", p, f"class-{i}") or f"class-{i}",
        weight=c.number(m, "weight", p, 1.0, positive=True) or 1.0,
        tenant=c.string(m, "tenant", p, "default") or "default",
        residency=c.strings(m, "residency", p),
        slo_ms=c.number(m, "slo_ms", p, 100.0, positive=True) or 100.0,
        model=c.string(m, "model", p, None),
        degrade=c.boolean(m, "degrade", p, True),
        max_cost_usd=c.number(m, "max_cost_usd", p, None, minimum=0.0),
        payload_kb=c.number(m, "payload_kb", p, 16.0, minimum=0.0) or 0.0,
    )


def _event(c: Checker, raw: Any, i: int) -> Event | None:
    p: KeyPath = ("events", i)
    m = c.mapping(raw, p, ("at_s", *EVENT_KINDS))
    if not m:
        return None
    at = c.number(m, "at_s", p, None, minimum=0.0, required=True)
    kinds = [k for k in EVENT_KINDS if k in m]
    if len(kinds) != 1:
        c.error(p, f"an event needs exactly one of {', '.join(EVENT_KINDS)}")
        return None
    kind = kinds[0]
    value = m[kind]
    kp = (*p, kind)
    if kind in ("node_down", "node_up"):
        if not isinstance(value, str):
            c.error(kp, "expected a node id")
            return None
        args: dict[str, Any] = {"node": value}
    elif kind == "throttle":
        t = c.mapping(value, kp, ("node", "compute_score"))
        args = {"node": c.string(t, "node", kp, required=True),
                "compute_score": c.number(t, "compute_score", kp, None, positive=True,
                                          required=True)}
    elif kind == "spot_price":
        if not isinstance(value, dict) or not value:
            c.error(kp, "expected {instance_type: usd_per_hour}")
            return None
        args = {"prices": {}}
        for k in value:
            args["prices"][k] = c.number(value, k, kp, None, minimum=0.0)
    elif kind == "partition":
        t = c.mapping(value, kp, ("pool", "for_s"))
        args = {"pool": c.string(t, "pool", kp, required=True),
                "for_s": c.number(t, "for_s", kp, None, positive=True, required=True)}
    else:
        t = c.mapping(value, kp, ("tenant", "limit_usd"))
        args = {"tenant": c.string(t, "tenant", kp, required=True),
                "limit_usd": c.number(t, "limit_usd", kp, None, minimum=0.0, required=True)}
    return Event(at or 0.0, kind, args)


def parse_scenario(text: str, file: str = "<scenario>") -> tuple[Scenario | None, list[Problem]]:
    """Parse scenario text; returns the scenario (None on any error) and every problem."""
    loc, problems = load_located(text, file)
    if loc.data is None:
        return None, problems
    c = Checker(loc, problems)
    m = c.mapping(loc.data, (), ("version", "policy", "duration_s", "seed", "traffic", "events"))
    version = c.number(m, "version", (), 1, integer=True)
    if version != 1:
        c.error(("version",), f"unsupported scenario version {version}; this simulator reads 1")
    policy = c.string(m, "policy", (), required=True)
    policy_path = (Path(file).parent / policy) if policy else Path()
    if policy and not policy_path.is_file():
        c.error(("policy",), f"policy file {policy_path} does not exist")
    duration = c.number(m, "duration_s", (), 600.0, positive=True) or 600.0
    seed = int(c.number(m, "seed", (), 1, integer=True, minimum=0) or 0)
    tm = c.mapping(m.get("traffic", {}), ("traffic",), ("rate_rps", "keys", "classes"))
    rate = _rate(c, tm, ("traffic",))
    km = c.mapping(tm.get("keys", {}), ("traffic", "keys"), ("count", "zipf_s"))
    keys = int(c.number(km, "count", ("traffic", "keys"), 1000, positive=True, integer=True)
               or 1000)
    zipf = c.number(km, "zipf_s", ("traffic", "keys"), 1.1, minimum=0.0) or 0.0
    raw_classes = tm.get("classes", [])
    if not isinstance(raw_classes, list) or not raw_classes:
        c.error(("traffic",), "traffic.classes must be a non-empty list")
        raw_classes = []
    classes = [x for i, r in enumerate(raw_classes) if (x := _class(c, r, i)) is not None]
    raw_events = m.get("events", []) or []
    if not isinstance(raw_events, list):
        c.error(("events",), "expected a list of events")
        raw_events = []
    events = [e for i, r in enumerate(raw_events) if (e := _event(c, r, i)) is not None]
    if not c.ok:
        return None, c.problems
    return Scenario(file, policy_path, duration, seed, rate, keys, zipf, tuple(classes),
                    tuple(sorted(events, key=lambda e: e.at_s))), c.problems


def load_scenario(path: str | Path) -> tuple[Scenario | None, list[Problem]]:
    """Read and parse a scenario file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(str(path), 1, 1, f"cannot read: {exc.strerror or exc}")]
    return parse_scenario(text, str(path))
