"""report.json's numbers, the decisions file and the plain-text comparison table."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.core.policy import Policy
from simulator import metrics
from simulator.row import Row, decision
from simulator.run import Result

CLOUDY = ("cloud", "split")


def cloud_part(r: Result) -> list[float]:
    """Per request, what a pool billed (what budgets count); a hand-made run without the
    column counts a cloud or split request's whole cost."""
    if len(r.cloud_usd) == len(r.t):
        return r.cloud_usd
    return [c if m in CLOUDY else 0.0 for m, c in zip(r.mode, r.cost_usd, strict=True)]


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Totals:
    """What a run's summary reads from its requests, however they were counted: from a
    scenario run's columns (`totals`) or folded as a replay's requests end
    (`simulator.fold.RunFold`)."""

    requests: int
    modes: Mapping[str, int]
    slo_met: int
    variable_usd: float
    spend: Mapping[str, float]  # cloud spend per tenant, in order of first spend
    last_t: float  # the last arrival, s
    latency_ms: Mapping[str, float]  # p50, p95, p99 over served requests (0.0: none)
    max_load_over_cap: float | None
    affinity_hit_rate: float | None
    warm_hit_rate: float | None
    mode_flap: float | None
    quality_flap_rate: float | None


def totals(r: Result) -> Totals:
    """A run's totals from its columns (percentiles exact, as numpy's)."""
    lat = np.asarray(r.latency_ms, dtype=float)
    served = ~np.isnan(lat) & (np.asarray(r.mode) != "refused")
    ok = served & (lat <= np.asarray(r.slo_ms))
    spend: dict[str, float] = {}
    for tenant, c in zip(r.tenant, cloud_part(r), strict=True):
        if c:
            spend[tenant] = spend.get(tenant, 0.0) + c

    def pct(q: float) -> float:
        return round(float(np.percentile(lat[served], q)), 2) if served.any() else 0.0

    return Totals(
        requests=len(r.t), modes=Counter(r.mode), slo_met=int(ok.sum()),
        variable_usd=float(np.sum(r.cost_usd)), spend=spend, last_t=r.t[-1] if r.t else 0.0,
        latency_ms={"p50": pct(50), "p95": pct(95), "p99": pct(99)},
        max_load_over_cap=metrics.max_load_over_cap(r),
        affinity_hit_rate=metrics.affinity_hit_rate(r), warm_hit_rate=metrics.warm_hit_rate(r),
        mode_flap=metrics.mode_flap(r), quality_flap_rate=metrics.quality_flap_rate(r))


def summarize(r: Result, policy: Policy, counted: Totals | None = None) -> dict[str, Any]:
    """The contract's report keys (and a few more) for one run; its requests' `counted`
    totals when it kept no columns."""
    c = totals(r) if counted is None else counted
    n, modes = c.requests, c.modes
    cloud = sum(modes.get(m, 0) for m in CLOUDY)
    overrun = 0.0
    for tenant, limits in r.limits.items():
        _, hard = policy.budgets.fractions(tenant)
        overrun += max(0.0, c.spend.get(tenant, 0.0) - min(v for _, v in limits) * hard)
    per_hour = fixed_per_hour(policy, r.owns_edge)
    fixed = per_hour * c.last_t / 3600.0
    total = fixed + c.variable_usd
    return {
        "router": r.router, "requests": n, "mode_counts": dict(sorted(modes.items())),
        "latency_ms": dict(c.latency_ms),
        "slo_attainment": round(c.slo_met / n, 4) if n else 0.0,
        "fixed_cost_per_hour_usd": round(per_hour, 6), "fixed_cost_usd": round(fixed, 6),
        "variable_cost_usd": round(c.variable_usd, 6), "total_cost_usd": round(total, 6),
        "cost_per_1k_requests_usd": round(1000 * total / n, 6) if n else 0.0,
        "cloud_spend_usd": round(sum(c.spend.values()), 6),
        "fleet_utilization": _rounded(metrics.fleet_busy(r)) if r.owns_edge else None,
        "break_even_utilization": None,
        "cloud_fraction": round(cloud / n, 4) if n else 0.0,
        "split_fraction": round(modes.get("split", 0) / n, 4) if n else 0.0,
        "max_load_over_cap": _rounded(c.max_load_over_cap),
        "affinity_hit_rate": _rounded(c.affinity_hit_rate),
        "warm_hit_rate": _rounded(c.warm_hit_rate),
        "mode_flap": _rounded(c.mode_flap),
        "quality_flap_rate": _rounded(c.quality_flap_rate),
        "residency_violations": r.violations,
        "budget_overrun_usd": round(overrun, 6),
        "refused": modes.get("refused", 0),
        "preempted_in_flight": r.preempted,
        "wall_seconds": round(r.wall_seconds, 3),
    }


def fixed_per_hour(policy: Policy, owns_edge: bool = True) -> float:
    """USD per hour paid whether used or not: the owned edge fleet (unless the run's router
    owns none, as cloud-only) and reserved cloud capacity."""
    reserved = sum(p.fixed_usd_per_hour for p in policy.pools)
    return reserved + (policy.edge_fixed_usd_per_hour if owns_edge else 0.0)


def add_break_even(reports: list[dict[str, Any]]) -> None:
    """Fill `break_even_utilization` of every run that owns the edge fleet, against the
    cloud-only run among `reports` (left None without one).

    The fleet's extra fixed cost F (its own, over cloud-only's) buys variable savings V
    (cloud-only's variable cost minus this run's) at fleet utilization U; savings grow with
    the work the fleet takes, so the fleet pays for itself from utilization U × F / V on.
    None when the edge saved nothing (V <= 0): no utilization makes it pay.
    """
    ref = next((x for x in reports if x["router"] == "cloud-only"), None)
    if ref is None:
        return
    for x in reports:
        util = x.get("fleet_utilization")
        saved = ref["variable_cost_usd"] - x["variable_cost_usd"]
        extra = x["fixed_cost_usd"] - ref["fixed_cost_usd"]
        if x is ref or util is None or extra <= 0:
            continue
        x["break_even_utilization"] = round(util * extra / saved, 4) if saved > 0 else None


def write_decisions(r: Result, path: Path) -> None:
    """One JSON line per request (docs/reference.md, "Decisions file")."""
    n = len(r.t)
    cloud = cloud_part(r)

    def col(values: list[Any], default: Any) -> list[Any]:
        return values if len(values) == n else [default] * n

    quality, home, fill = col(r.quality, None), col(r.home, False), col(r.fill, None)
    warm = col(r.warm, None)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            row = Row(r.t[i], r.key[i], r.tenant[i], r.cls[i], r.slo_ms[i])
            row.mode, row.node, row.quality, row.home = r.mode[i], r.node[i], quality[i], home[i]
            row.fill, row.warm, row.latency = fill[i], warm[i], r.latency_ms[i]
            row.cost, row.cloud = r.cost_usd[i], cloud[i]
            fh.write(json.dumps(decision(row)) + "\n")


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def table(reports: list[dict[str, Any]]) -> str:
    """Side-by-side comparison: latency, SLO, cloud use and the costs of every run."""
    cols = ["router", "p50 ms", "p95 ms", "SLO met", "cloud frac", "split frac",
            "cloud spend $", "fixed $", "variable $", "total $", "$ / 1k req",
            "break-even util.", "max load/cap",
            "affinity", "warm hits", "mode flap", "residency viol.", "refused"]
    rows = [cols]
    for x in reports:
        rows.append([x["router"], f"{x['latency_ms']['p50']:.1f}", f"{x['latency_ms']['p95']:.1f}",
                     f"{100 * x['slo_attainment']:.1f}%", f"{x['cloud_fraction']:.3f}",
                     f"{x.get('split_fraction', 0.0):.3f}", f"{x['cloud_spend_usd']:.4f}",
                     f"{x['fixed_cost_usd']:.4f}", f"{x['variable_cost_usd']:.4f}",
                     f"{x['total_cost_usd']:.4f}", f"{x['cost_per_1k_requests_usd']:.4f}",
                     _num(x.get("break_even_utilization"), ".3f"),
                     _num(x.get("max_load_over_cap"), ".3f"),
                     _num(x.get("affinity_hit_rate"), ".3f"), _num(x.get("warm_hit_rate"), ".3f"),
                     _num(x.get("mode_flap"), ".3f"),
                     str(x["residency_violations"]), str(x["refused"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
