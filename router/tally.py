"""The request path's own series as plain counters, folded into Prometheus families at scrape.

A prometheus-client `Counter.labels(...).inc()` or `Histogram.observe` takes a lock and
walks its bucket list on every request; here a decision is a dict increment and a
bisect, on the event loop only, and the scrape (on the metrics thread) reads copies.
Same names, labels, buckets and meaning as before (docs/reference.md, "Metrics").
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

DECISION_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3)


class DecisionTally:
    """router_decisions_total, router_refusals_total and router_decision_seconds."""

    def __init__(self, buckets: tuple[float, ...] = DECISION_BUCKETS) -> None:
        """Empty counts; `buckets`: the histogram's upper bounds (+Inf is added)."""
        self.buckets = buckets
        self.decisions: dict[tuple[str, str], int] = {}  # (mode, reason) -> count
        self.refusals: dict[tuple[str, str], int] = {}  # (code, reason) -> count
        self.seconds = [0] * (len(buckets) + 1)  # per bucket, not cumulative; last is +Inf
        self.seconds_sum = 0.0

    def decided(self, mode: str, reason: str) -> None:
        """Count one decision."""
        key = (mode, reason)
        self.decisions[key] = self.decisions.get(key, 0) + 1

    def refused(self, code: str, reason: str) -> None:
        """Count one refusal by HTTP status code and reason."""
        key = (code, reason)
        self.refusals[key] = self.refusals.get(key, 0) + 1

    def observe(self, seconds: float) -> None:
        """Record how long one decision took."""
        self.seconds[bisect.bisect_left(self.buckets, seconds)] += 1
        self.seconds_sum += seconds

    def collect(self) -> Iterator[Metric]:
        """The three families as one scrape sees them (copies: the loop goes on counting)."""
        decisions = CounterMetricFamily("router_decisions", "Routing decisions by mode and "
                                        "reason", labels=["mode", "reason"])
        for (mode, reason), n in list(self.decisions.items()):
            decisions.add_metric([mode, reason], n)
        refusals = CounterMetricFamily("router_refusals", "Refused requests by HTTP status "
                                       "code and reason", labels=["code", "reason"])
        for (code, reason), n in list(self.refusals.items()):
            refusals.add_metric([code, reason], n)
        counts, total, running = list(self.seconds), self.seconds_sum, 0
        cumulative = []
        for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
            running += n
            cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        seconds = HistogramMetricFamily("router_decision_seconds", "Time to decide one request",
                                        buckets=cumulative, sum_value=total)
        yield from (decisions, refusals, seconds)
