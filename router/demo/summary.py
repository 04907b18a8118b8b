"""The demo's live terminal summary: traffic stats plus the router's own metrics."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from router.core import ring
from router.core.model import Policy
from router.demo.traffic import Stats


def scrape(url: str, timeout: float = 1.0) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text at `url` as {metric name: {labels: value}} (empty if unreachable)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _by(metric: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    return {dict(k).get(label, ""): v for k, v in metric.items()}


def render(policy: Policy, stats: Stats, metrics: dict[str, dict[tuple[tuple[str, str], ...],
                                                             float]],
           *, elapsed: float, events: list[str]) -> str:
    """One screenful of summary text."""
    lines = [f"hybrid-router demo — {elapsed:5.0f} s   {stats.rate():6.1f} req/s   "
             f"{stats.total} served   refused/failed: "
             + (", ".join(f"{k} ×{v}" for k, v in stats.errors.most_common(4)) or "none")]
    total = sum(stats.modes.values()) or 1
    lines.append("mode mix (all time): " + "  ".join(
        f"{m} {100 * c / total:4.1f}%" for m, c in stats.modes.most_common()))
    lines.append("")
    lines.append(f"{'mode':<14}{'n (10 s)':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for mode, (n, p50, p95, p99) in stats.percentiles().items():
        lines.append(f"{mode:<14}{n:>9}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}")
    inflight = _by(metrics.get("router_node_inflight", {}), "node")
    weights = _by(metrics.get("router_node_weight", {}), "node")
    wsum = sum(v for v in weights.values() if v > 0) or 1.0
    load = sum(inflight.get(n.id, 0.0) for n in policy.nodes)
    eps = policy.balance_factor
    lines.append("")
    lines.append(f"{'node':<10}{'hardware':<17}{'weight':>7}{'inflight':>9}{'cap':>5}"
                 f"{'slots':>6}  served")
    for node in policy.nodes:
        w = weights.get(node.id, 0.0)
        # the whole fleet's cap, with the utilization floor (the router's are per class)
        cap = ring.cap(int(load), w, wsum, eps, int(policy.hashing.min_cap_fraction * node.slots)) \
            if w > 0 else 0
        state = "" if w > 0 else "  (out of ring)"
        lines.append(f"{node.id:<10}{node.hardware:<17}{w:>7.2f}{inflight.get(node.id, 0):>9.0f}"
                     f"{cap:>5}{node.slots:>6}  {stats.nodes.get(node.id, 0)}{state}")
    for pool in policy.pools:
        lines.append(f"{pool.id:<10}{'cloud ' + pool.instance_type:<17}{'':>7}"
                     f"{inflight.get(pool.id, 0):>9.0f}{'':>5}{'':>6}  "
                     f"{stats.nodes.get(pool.id, 0)}")
    spend = _by(metrics.get("router_budget_spend_usd", {}), "tenant")
    lines.append("")
    budget = policy.budgets
    parts = []
    for tenant, tb in budget.tenants.items():
        used = spend.get(tenant, 0.0)
        soft, hard = budget.fractions(tenant)
        parts.append(f"{tenant} ${used:.4f} of ${tb.limit_usd:g} (soft {soft:.0%}, hard "
                     f"{hard:.0%})")
    lines.append("budget this " + budget.period + ": " + "; ".join(parts))
    age = metrics.get("router_feed_age_seconds", {})
    age_text = f"{next(iter(age.values())):.0f} s" if age else "router unreachable"
    lines.append(f"feed age: {age_text}")
    if events:
        lines.append("")
        lines.append("events: " + " | ".join(events[-4:]))
    return "\n".join(lines)
