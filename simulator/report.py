"""report.json, the decisions file, the comparison table and the HTML report."""

from __future__ import annotations

import html
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


def _svg_lines(series: dict[str, list[tuple[float, float]]], title: str, xl: str, yl: str,
               w: int = 640, h: int = 280) -> str:
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    pts = [p for s in series.values() for p in s]
    if not pts:
        return f"<p>{html.escape(title)}: no data</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts) or 1.0
    y0, y1 = 0.0, max(p[1] for p in pts) or 1.0
    def sx(x: float) -> float:
        return 50 + (x - x0) / ((x1 - x0) or 1) * (w - 70)

    def sy(y: float) -> float:
        return h - 30 - (y - y0) / ((y1 - y0) or 1) * (h - 60)

    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'data-title="{html.escape(title)}">',
           f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}'
           "</text>",
           f'<line x1="50" y1="{h - 30}" x2="{w - 20}" y2="{h - 30}" stroke="#333"/>',
           f'<line x1="50" y1="30" x2="50" y2="{h - 30}" stroke="#333"/>',
           f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle" font-size="11">{xl} '
           f"({x0:.3g}–{x1:.3g})</text>",
           f'<text x="12" y="{h / 2}" font-size="11" transform="rotate(-90 12 {h / 2})">{yl} '
           f"(max {y1:.3g})</text>"]
    for i, (name, s) in enumerate(series.items()):
        if not s:
            continue
        c = colors[i % len(colors)]
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        out.append(f'<polyline class="series" data-name="{html.escape(name)}" fill="none" '
                   f'stroke="{c}" stroke-width="1.6" points="{d}"/>')
        out.append(f'<text x="{w - 150}" y="{34 + 14 * i}" font-size="11" fill="{c}">'
                   f"{html.escape(name)}</text>")
    out.append("</svg>")
    return "".join(out)


def html_report(r: Result, summary: dict[str, Any], policy: Policy, comparison: str = "") -> str:
    """A self-contained HTML page with the run's plots."""
    lat = np.asarray(r.latency_ms)
    modes = np.asarray(r.mode)
    cdf: dict[str, list[tuple[float, float]]] = {}
    for m in sorted(set(r.mode) - {"refused"}):
        v = np.sort(lat[(modes == m) & ~np.isnan(lat)])
        if len(v):
            idx = np.linspace(0, len(v) - 1, min(200, len(v))).astype(int)
            cdf[m] = [(float(v[i]), (i + 1) / len(v)) for i in idx]
    t = np.asarray(r.t)
    span = max(float(t.max()) if len(t) else 1.0, 1.0)
    bins = np.linspace(0, span, 41)
    which = np.digitize(t, bins)
    mix: dict[str, list[tuple[float, float]]] = {m: [] for m in sorted(set(r.mode))}
    cost_t: list[tuple[float, float]] = []
    costs = np.asarray(r.cost_usd)
    for b in range(1, len(bins)):
        sel = which == b
        count = int(sel.sum()) or 1
        for m in mix:
            mix[m].append((float(bins[b]), float((modes[sel] == m).sum()) / count))
        cost_t.append((float(bins[b]), float(costs[sel].sum())))
    load: dict[str, list[tuple[float, float]]] = {}
    slots_of = {x.id: x.slots for x in policy.nodes}
    for ts, loads in r.load_samples:
        for node_id, busy in loads.items():
            load.setdefault(node_id, []).append((ts, busy / slots_of[node_id]))
    burn: dict[str, list[tuple[float, float]]] = {}
    cum: dict[str, float] = {}
    for i in np.argsort(t):
        if r.mode[i] in CLOUDY:
            tenant = r.tenant[i]
            cum[tenant] = cum.get(tenant, 0.0) + r.cost_usd[i]
            burn.setdefault(f"{tenant} spend", []).append((float(t[i]), cum[tenant]))
    for tenant, limits in r.limits.items():
        if f"{tenant} spend" in burn:
            soft, hard = policy.budgets.fractions(tenant)
            lim = [(0.0, limits[0][1])] + [(a, v) for a, v in limits[1:]] + [(span, limits[-1][1])]
            burn[f"{tenant} hard"] = [(a, v * hard) for a, v in lim]
            burn[f"{tenant} soft"] = [(a, v * soft) for a, v in lim]
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in summary.items())
    comp = f"<h2>Comparison</h2><pre>{html.escape(comparison)}</pre>" if comparison else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>hybrid-router what-if"
            "</title><style>body{font-family:sans-serif;margin:24px}td{padding:2px 8px}"
            "svg{border:1px solid #ddd;margin:6px}</style></head><body>"
            f"<h1>What-if: {html.escape(r.router)}</h1><table>{rows}</table>{comp}"
            + _svg_lines(cdf, "Latency CDF per mode", "latency ms", "fraction")
            + _svg_lines(mix, "Mode mix over time", "t s", "share")
            + _svg_lines({"cost": cost_t}, "Cost over time (per bin)", "t s", "USD")
            + _svg_lines(load, "Per-node load against its slots", "t s", "busy / slots")
            + _svg_lines(burn, "Budget burn against soft and hard limits", "t s", "USD")
            + "</body></html>")
