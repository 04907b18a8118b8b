"""The demo's live terminal summary: traffic stats plus the router's own metrics."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from router.core.policy import Policy
from router.demo.traffic import Stats


def scrape(url: str, timeout: float = 1.0) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text at `url` as {metric name: {labels: value}} (empty if unreachable)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return parse(resp.read().decode())
    except OSError:
        return {}


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text as {metric name: {labels: value}}."""
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
    lines += _fleet(policy, stats, metrics) if metrics else _unreachable(policy, stats)
    if events:
        lines.append("")
        lines.append("events: " + " | ".join(events[-4:]))
    return "\n".join(lines)


def _fleet(policy: Policy, stats: Stats,
           metrics: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> list[str]:
    """Nodes, pools, budgets and feed age as the router's metrics show them."""
    inflight = _by(metrics.get("router_node_inflight", {}), "node")
    weights = _by(metrics.get("router_node_weight", {}), "node")
    caps = _by(metrics.get("router_node_cap", {}), "node")
    slots = _by(metrics.get("router_node_slots", {}), "node")
    lines = ["", f"{'node':<10}{'hardware':<17}{'weight':>7}{'inflight':>9}{'cap':>5}"
                 f"{'slots':>6}  served"]
    for node in policy.nodes:
        w = weights.get(node.id, 0.0)
        state = "" if w > 0 else "  (out of ring)"
        lines.append(f"{node.id:<10}{node.hardware:<17}{w:>7.2f}{inflight.get(node.id, 0):>9.0f}"
                     f"{caps.get(node.id, 0):>5.0f}{slots.get(node.id, node.slots):>6.0f}  "
                     f"{stats.nodes.get(node.id, 0)}{state}")
    for pool in policy.pools:
        lines.append(f"{pool.id:<10}{'cloud ' + pool.instance_type:<17}{'':>7}"
                     f"{inflight.get(pool.id, 0):>9.0f}{'':>5}{'':>6}  "
                     f"{stats.nodes.get(pool.id, 0)}")
    spend = _by(metrics.get("router_budget_spend_usd", {}), "tenant")
    budget = policy.budgets
    parts = []
    for tenant, tb in budget.tenants.items():
        soft, hard = budget.fractions(tenant)
        parts.append(f"{tenant} ${spend.get(tenant, 0.0):.4f} of ${tb.limit_usd:g} (soft "
                     f"{soft:.0%}, hard {hard:.0%})")
    age = metrics.get("router_feed_age_seconds", {})
    lines += ["", "budget this " + budget.period + ": " + "; ".join(parts),
              f"feed age: {next(iter(age.values())):.0f} s" if age else "feed age: no feed yet"]
    return lines


def _unreachable(policy: Policy, stats: Stats) -> list[str]:
    """The fleet while the router's metrics do not answer: what traffic reached, nothing the
    router would have said (no weights, caps, spend or feed age: it is not there to ask)."""
    lines = ["", "router unreachable: no weights, caps, spend or feed age until it answers "
                 "(Envoy routes on its own meanwhile)",
             f"{'node':<10}{'hardware':<17}{'slots':>6}  served"]
    for node in policy.nodes:
        lines.append(f"{node.id:<10}{node.hardware:<17}{node.slots:>6}  "
                     f"{stats.nodes.get(node.id, 0)}")
    for pool in policy.pools:
        lines.append(f"{pool.id:<10}{'cloud ' + pool.instance_type:<17}{'':>6}  "
                     f"{stats.nodes.get(pool.id, 0)}")
    lines += ["", "budget this " + policy.budgets.period + ": router unreachable",
              "feed age: router unreachable"]
    return lines
