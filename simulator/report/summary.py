"""report.json's numbers, the decisions file and the plain-text comparison table."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from router.core.model import Policy
from simulator.run import Result

CLOUDY = ("cloud", "split")


def summarize(r: Result, policy: Policy) -> dict[str, Any]:
    """The contract's report keys (and a few more) for one run."""
    lat = np.asarray(r.latency_ms, dtype=float)
    served = ~np.isnan(lat) & (np.asarray(r.mode) != "refused")
    slo = np.asarray(r.slo_ms)
    ok = served & (lat <= slo)
    modes = Counter(r.mode)
    cost = float(np.sum(r.cost_usd))
    cloud = sum(modes.get(m, 0) for m in CLOUDY)
    spend: dict[str, float] = {}
    for tenant, mode, c in zip(r.tenant, r.mode, r.cost_usd, strict=True):
        if mode in CLOUDY:
            spend[tenant] = spend.get(tenant, 0.0) + c
    overrun = 0.0
    for tenant, limits in r.limits.items():
        _, hard = policy.budgets.fractions(tenant)
        overrun += max(0.0, spend.get(tenant, 0.0) - min(v for _, v in limits) * hard)
    last: dict[str, str] = {}
    hits = total = 0
    for key, node in zip(r.key, r.node, strict=True):
        if key in last and node:
            total += 1
            hits += last[key] == node
        if node:
            last[key] = node
    weights = {n.id: n.weight for n in policy.nodes}
    ratio = 0.0
    for _, loads in r.load_samples:
        busy = sum(loads.values())
        if busy >= len(loads):
            wsum = sum(weights.values())
            ratio = max(ratio, max(v / (busy * weights[n] / wsum) for n, v in loads.items()))
    def pct(q: float) -> float:
        return round(float(np.percentile(lat[served], q)), 2) if served.any() else 0.0

    n = len(r.t)
    return {
        "router": r.router, "requests": n, "mode_counts": dict(sorted(modes.items())),
        "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99)},
        "slo_attainment": round(float(ok.sum()) / n, 4) if n else 0.0,
        "cost_usd": round(cost, 6), "cost_per_1k_usd": round(1000 * cost / n, 6) if n else 0.0,
        "cloud_fraction": round(cloud / n, 4) if n else 0.0,
        "cloud_spend_usd": round(sum(spend.values()), 6),
        "max_load_ratio": round(ratio, 3),
        "affinity_hit_rate": round(hits / total, 4) if total else 0.0,
        "residency_violations": r.violations,
        "budget_overrun_usd": round(overrun, 6),
        "refused": modes.get("refused", 0),
        "wall_seconds": round(r.wall_seconds, 3),
    }


def write_decisions(r: Result, path: Path) -> None:
    """One JSON line per request."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(len(r.t)):
            lat = r.latency_ms[i]
            fh.write(json.dumps({
                "t": round(r.t[i], 6), "key": r.key[i], "tenant": r.tenant[i],
                "mode": r.mode[i], "node": r.node[i] or None,
                "latency_ms": None if math.isnan(lat) else round(lat, 3),
                "cost_usd": r.cost_usd[i],
                "slo_met": (not math.isnan(lat)) and r.mode[i] != "refused"
                and lat <= r.slo_ms[i]}) + "\n")


def table(reports: list[dict[str, Any]]) -> str:
    """Side-by-side comparison, the first run as the reference for cloud use and spend."""
    ref = next((x for x in reports if x["router"] == "cloud-only"), reports[0])
    cols = ["router", "p50 ms", "p95 ms", "p99 ms", "SLO met", "cloud frac", "cloud spend $",
            "cost/1k $", "vs cloud-only: cloud / spend", "residency viol.", "refused"]
    rows = [cols]
    for x in reports:
        cut_c = 1 - x["cloud_fraction"] / ref["cloud_fraction"] if ref["cloud_fraction"] else 0
        cut_s = 1 - x["cloud_spend_usd"] / ref["cloud_spend_usd"] if ref["cloud_spend_usd"] else 0
        rows.append([x["router"], f"{x['latency_ms']['p50']:.1f}", f"{x['latency_ms']['p95']:.1f}",
                     f"{x['latency_ms']['p99']:.1f}", f"{100 * x['slo_attainment']:.1f}%",
                     f"{x['cloud_fraction']:.3f}", f"{x['cloud_spend_usd']:.4f}",
                     f"{x['cost_per_1k_usd']:.4f}", f"-{100 * cut_c:.0f}% / -{100 * cut_s:.0f}%",
                     str(x["residency_violations"]), str(x["refused"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
