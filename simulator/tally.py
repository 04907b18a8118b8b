"""Production's side of a trace replay, folded line by line into bounded aggregates.

The same numbers `simulator.report.summary.summarize` gives from a run's columns
(the keys `simulator.report.replay.COMPARED` names), without keeping a column:
counts per mode and per node or pool, sums of cost, SLOs met, and latencies in a
`LogHistogram` (quantiles within `sketch.ALPHA` of the exact ones).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from router.core.policy import Policy
from router.logline import LogEntry
from simulator.report.summary import CLOUDY, fixed_per_hour
from simulator.sketch import LogHistogram


class Tally:
    """One side's aggregates, a request at a time, in arrival order."""

    def __init__(self, router: str) -> None:
        self.router = router
        self.modes: Counter[str] = Counter()
        self.nodes: Counter[str] = Counter()
        self.latency = LogHistogram()  # served requests only
        self.cost = 0.0
        self.slo_met = 0
        self.last_t = 0.0  # arrival of the newest request, s after the log's first line

    def add(self, t: float, mode: str, node: str, latency_ms: float | None, cost_usd: float,
            slo_ms: float) -> None:
        """Fold one request in (`latency_ms` None: not served; `node` '' when refused)."""
        self.modes[mode] += 1
        if node:
            self.nodes[node] += 1
        if latency_ms is not None and mode != "refused":
            self.latency.add(latency_ms)
            self.slo_met += latency_ms <= slo_ms
        self.cost += cost_usd
        self.last_t = t

    def add_logged(self, t: float, e: LogEntry, slo_ms: float) -> None:
        """Fold in a logged request as production answered it."""
        ok = e.status == 200
        self.add(t, e.mode, (e.node or "") if ok else "", e.duration_ms if ok else None,
                 e.cost_usd if ok else 0.0, slo_ms)

    def summary(self, policy: Policy) -> dict[str, Any]:
        """The compared keys, as `summarize` computes them from columns."""
        n = sum(self.modes.values())

        def pct(q: float) -> float:
            return round(self.latency.quantile(q / 100.0), 2) if self.latency.count else 0.0

        fixed = fixed_per_hour(policy) * (self.last_t if n else 0.0) / 3600.0
        total = fixed + self.cost
        cloud = sum(self.modes.get(m, 0) for m in CLOUDY)
        return {
            "router": self.router, "requests": n, "mode_counts": dict(sorted(self.modes.items())),
            "node_counts": dict(sorted(self.nodes.items())),
            "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99)},
            "slo_attainment": round(self.slo_met / n, 4) if n else 0.0,
            "fixed_cost_usd": round(fixed, 6), "variable_cost_usd": round(self.cost, 6),
            "total_cost_usd": round(total, 6),
            "cost_per_1k_requests_usd": round(1000 * total / n, 6) if n else 0.0,
            "cloud_fraction": round(cloud / n, 4) if n else 0.0,
            "split_fraction": round(self.modes.get("split", 0) / n, 4) if n else 0.0,
            "refused": self.modes.get("refused", 0),
        }
