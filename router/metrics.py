"""The router's Prometheus series (docs/reference.md, "Metrics"), on a registry of their own.

The core never imports this: the adapter turns each `Decision` into these
series, the refresh loop reports feed age and results, the reloader reloads,
and `probe_loop_lag` measures how late the event loop runs what it schedules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DECISION_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3)
# 0.1 ms .. 1 s, with 5 ms a bucket bound so the lag alert's p99 > 5 ms is exact, not interpolated.
LOOP_LAG_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
                    1.0)
LOOP_LAG_INTERVAL_S = 0.05
# Known label values are created at 0, so rate() and increase() answer before the first event.
FEED_RESULTS = ("ok", "unchanged", "invalid", "unreachable")
RELOAD_RESULTS = ("ok", "error")


class RouterMetrics:
    """All router series; one instance per process, each with its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create every series on `registry` (a fresh one by default)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.decisions = Counter("router_decisions_total", "Routing decisions by mode and reason",
                                 ["mode", "reason"], registry=r)
        self.decision_seconds = Histogram("router_decision_seconds",
                                          "Time to decide one request", buckets=DECISION_BUCKETS,
                                          registry=r)
        self.refusals = Counter("router_refusals_total",
                                "Refused requests by HTTP status code and reason",
                                ["code", "reason"], registry=r)
        self.node_inflight = Gauge("router_node_inflight", "Requests in flight per node or pool",
                                   ["node"], registry=r)
        self.node_features = Gauge("router_node_features_inflight",
                                   "Split feature extractions in flight per node (held apart "
                                   "from its inference slots)", ["node"], registry=r)
        self.node_weight = Gauge("router_node_weight", "Effective ring weight per node",
                                 ["node"], registry=r)
        self._budget_series(r)
        self.feed_age = Gauge("router_feed_age_seconds", "Age of the feed snapshot in force",
                              registry=r)
        self.feed_refresh = Counter("router_feed_refresh_total", "Feed refresh attempts by result",
                                    ["result"], registry=r)
        self.policy_reload = Counter("router_policy_reload_total", "Policy reloads by result",
                                     ["result"], registry=r)
        self.event_loop_lag = Histogram("router_event_loop_lag_seconds",
                                        "How late the event loop woke a task sleeping "
                                        f"{LOOP_LAG_INTERVAL_S:g} s", buckets=LOOP_LAG_BUCKETS,
                                        registry=r)
        self.store_errors = Counter("router_store_errors_total",
                                    "Budget store calls that failed (retried off the request "
                                    "path)", ["store"], registry=r)
        self.request_log_dropped = Counter("router_request_log_dropped_total",
                                           "Request-log lines dropped because the writer fell "
                                           "behind (the request path never waits for it)",
                                           registry=r)
        self.xds_push = Counter("router_xds_push_total", "xDS pushes to Envoy by result",
                                ["result"], registry=r)
        for result in FEED_RESULTS:
            self.feed_refresh.labels(result=result)
        for result in RELOAD_RESULTS:
            self.policy_reload.labels(result=result)

    def _budget_series(self, r: CollectorRegistry) -> None:
        self.budget_spend = Gauge("router_budget_spend_usd",
                                  "Cloud spend this period per tenant (committed + reserved)",
                                  ["tenant"], registry=r)
        self.budget_limit = Gauge("router_budget_limit_usd",
                                  "Spend at which a tenant's soft or hard budget threshold is "
                                  "reached this period (limit x fraction)",
                                  ["tenant", "threshold"], registry=r)
        self.budget_lease = Gauge("router_budget_lease_usd",
                                  "Cloud budget this router can admit per tenant without "
                                  "asking the budget store (its lease's unused part; for an "
                                  "authoritative store the headroom left)", ["tenant"],
                                  registry=r)

    def set_budget(self, tenant: str, used_usd: float, soft_usd: float, hard_usd: float) -> None:
        """Publish one tenant's spend and thresholds (unlimited thresholds are left out)."""
        self.budget_spend.labels(tenant).set(used_usd)
        for threshold, usd in (("soft", soft_usd), ("hard", hard_usd)):
            if usd != float("inf"):
                self.budget_limit.labels(tenant, threshold).set(usd)


async def probe_loop_lag(observe: Callable[[float], None], *,
                         interval: float = LOOP_LAG_INTERVAL_S,
                         clock: Callable[[], float] = time.perf_counter) -> None:
    """Sleep `interval` again and again and observe how late each wake-up was, until cancelled.

    A wake-up is late by however long other work held the loop (a blocking call,
    a long table build on the loop, GC): the same delay every request waiting
    on the loop sees. `clock` is a fine-grained clock, not the loop's own,
    which in uvloop only moves in whole milliseconds.
    """
    while True:
        start = clock()
        await asyncio.sleep(interval)
        observe(max(0.0, clock() - start - interval))
