"""Prometheus series of docs/reference.md (metrics), on a registry of their own.

The core never imports this: the adapter turns each `Decision` into these
series, the refresh loop reports feed age and results, the reloader reloads.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DECISION_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3)


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
        self.node_inflight = Gauge("router_node_inflight", "Requests in flight per node or pool",
                                   ["node"], registry=r)
        self.node_features = Gauge("router_node_features_inflight",
                                   "Split feature extractions in flight per node (held apart "
                                   "from its inference slots)", ["node"], registry=r)
        self.node_weight = Gauge("router_node_weight", "Effective ring weight per node",
                                 ["node"], registry=r)
        self.budget_spend = Gauge("router_budget_spend_usd",
                                  "Cloud spend this period per tenant (committed + reserved)",
                                  ["tenant"], registry=r)
        self.budget_lease = Gauge("router_budget_lease_usd",
                                  "Cloud budget this router can admit per tenant without "
                                  "asking the budget store (its lease's unused part; for an "
                                  "authoritative store the headroom left)", ["tenant"],
                                  registry=r)
        self.store_errors = Counter("router_store_errors_total",
                                    "Budget store calls that failed (retried off the request "
                                    "path)", ["store"], registry=r)
        self.feed_age = Gauge("router_feed_age_seconds", "Age of the feed snapshot in force",
                              registry=r)
        self.feed_refresh = Counter("router_feed_refresh_total", "Feed refresh attempts by result",
                                    ["result"], registry=r)
        self.policy_reload = Counter("router_policy_reload_total", "Policy reloads by result",
                                     ["result"], registry=r)
        self.xds_push = Counter("router_xds_push_total",
                                "xDS responses sent to Envoy and Envoy's answers (sent, ack, nack)",
                                ["result"], registry=r)
