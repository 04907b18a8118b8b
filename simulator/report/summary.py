"""report.json's numbers, the decisions file and the plain-text comparison table."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from router.core.model import Policy
from simulator import metrics
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


def summarize(r: Result, policy: Policy) -> dict[str, Any]:
    """The contract's report keys (and a few more) for one run."""
    lat = np.asarray(r.latency_ms, dtype=float)
    served = ~np.isnan(lat) & (np.asarray(r.mode) != "refused")
    slo = np.asarray(r.slo_ms)
    ok = served & (lat <= slo)
    modes = Counter(r.mode)
    variable = float(np.sum(r.cost_usd))
    cloud = sum(modes.get(m, 0) for m in CLOUDY)
    spend: dict[str, float] = {}
    for tenant, c in zip(r.tenant, cloud_part(r), strict=True):
        if c:
            spend[tenant] = spend.get(tenant, 0.0) + c
    overrun = 0.0
    for tenant, limits in r.limits.items():
        _, hard = policy.budgets.fractions(tenant)
        overrun += max(0.0, spend.get(tenant, 0.0) - min(v for _, v in limits) * hard)
    cloud_spend = sum(spend.values())

    def pct(q: float) -> float:
        return round(float(np.percentile(lat[served], q)), 2) if served.any() else 0.0

    n = len(r.t)
    per_hour = fixed_per_hour(policy, r.owns_edge)
    fixed = per_hour * (r.t[-1] if n else 0.0) / 3600.0
    total = fixed + variable
    return {
        "router": r.router, "requests": n, "mode_counts": dict(sorted(modes.items())),
        "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99)},
        "slo_attainment": round(float(ok.sum()) / n, 4) if n else 0.0,
        "fixed_cost_per_hour_usd": round(per_hour, 6), "fixed_cost_usd": round(fixed, 6),
        "variable_cost_usd": round(variable, 6), "total_cost_usd": round(total, 6),
        "cost_per_1k_requests_usd": round(1000 * total / n, 6) if n else 0.0,
        "cloud_spend_usd": round(cloud_spend, 6),
        "fleet_utilization": _rounded(metrics.fleet_busy(r)) if r.owns_edge else None,
        "break_even_utilization": None,
        "cloud_fraction": round(cloud / n, 4) if n else 0.0,
        "split_fraction": round(modes.get("split", 0) / n, 4) if n else 0.0,
        "max_load_over_cap": _rounded(metrics.max_load_over_cap(r)),
        "affinity_hit_rate": _rounded(metrics.affinity_hit_rate(r)),
        "warm_hit_rate": _rounded(metrics.warm_hit_rate(r)),
        "mode_flap": _rounded(metrics.mode_flap(r)),
        "quality_flap_rate": _rounded(metrics.quality_flap_rate(r)),
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
            lat = r.latency_ms[i]
            mode = r.mode[i]
            fh.write(json.dumps({
                "t": round(r.t[i], 6), "key": r.key[i], "tenant": r.tenant[i],
                "class": r.cls[i], "mode": mode, "node": r.node[i] or None,
                "quality": quality[i], "home": bool(home[i]) if mode != "cloud" else None,
                "fill": None if fill[i] is None else round(fill[i], 6), "warm": warm[i],
                "latency_ms": None if math.isnan(lat) else round(lat, 3),
                "cost_usd": r.cost_usd[i], "cloud_usd": cloud[i],
                "slo_met": (not math.isnan(lat)) and mode != "refused"
                and lat <= r.slo_ms[i]}) + "\n")


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
