"""The router's Prometheus series (docs/reference.md, "Metrics"), on a registry of their own.

The core never imports this: the adapter turns each `Decision` into these
series, the refresh loop reports feed age and results, the reloader reloads,
and `probe_loop_lag` measures how late the event loop runs what it schedules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from router.capmetrics import CapacityCollector, TripsCollector
from router.core import ring
from router.core.table import FEATURES, Snapshot
from router.tally import DECISION_BUCKETS, DecisionTally

if TYPE_CHECKING:
    from router.runtime import Runtime

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
        # the request path's series: plain counters, folded in at scrape time
        self.tally = DecisionTally(DECISION_BUCKETS)
        r.register(self.tally)
        # state gauges, read off the router at scrape time (StateCollector)
        self.state = StateCollector()
        r.register(self.state)
        self.feed_refresh = Counter("router_feed_refresh_total", "Feed refresh attempts by result",
                                    ["result"], registry=r)
        self.policy_reload = Counter("router_policy_reload_total", "Policy reloads by result",
                                     ["result"], registry=r)
        self.policy_worker_deaths = Counter("router_policy_worker_deaths_total",
                                            "Policy worker processes that died during a read "
                                            "(each read is retried in a new one)", registry=r)
        self.event_loop_lag = Histogram("router_event_loop_lag_seconds",
                                        "How late the event loop woke a task sleeping "
                                        f"{LOOP_LAG_INTERVAL_S:g} s", buckets=LOOP_LAG_BUCKETS,
                                        registry=r)
        self.edge_failures = Counter("router_edge_failures_total",
                                     "Edge requests Envoy reported failed (a 5xx, or its own 503 "
                                     "or 504 for the node), by node", ["node"], registry=r)
        self.edge_ejections = Counter("router_edge_ejections_total",
                                      "Times a node was taken out of the ring for failing "
                                      "(outliers)", ["node"], registry=r)
        self.store_errors = Counter("router_store_errors_total",
                                    "Budget store calls that failed (retried off the request "
                                    "path)", ["store"], registry=r)
        self.store_lost = Counter("router_store_lost_total",
                                  "Times the budget store was found to have lost the spend it "
                                  "held (flushed, restarted empty, rolled back, its file "
                                  "replaced) and was rebuilt from this router's journal",
                                  ["store"], registry=r)
        self.request_log_dropped = Counter("router_request_log_dropped_total",
                                           "Request-log lines dropped because the writer fell "
                                           "behind or a write failed (the request path never "
                                           "waits for it)", registry=r)
        self.request_log_truncated = Counter("router_request_log_truncated_total",
                                             "Request-log lines cut to the line size cap "
                                             "(marked truncated: true)", registry=r)
        self.xds_push = Counter("router_xds_push_total", "xDS pushes to Envoy by result",
                                ["result"], registry=r)
        # capacity leases (router.capmetrics): empty until a keeper's stats are named
        self.capacity = CapacityCollector()
        r.register(self.capacity)
        self.trips = TripsCollector()  # store round trips: empty until stores are named
        r.register(self.trips)
        self.xds_streams = Gauge("router_xds_streams", "ADS streams open (Envoys subscribed)",
                                 registry=r)
        self.xds_synced = Gauge("router_xds_synced_envoys", "Envoy node ids whose every ADS "
                                "stream holds the clusters and endpoints now published",
                                registry=r)
        self.xds_refused = Counter("router_xds_refused_total", "ADS streams refused: over "
                                   "--xds-max-streams (limit) or asking for a type this router "
                                   "does not serve (unknown_type)", ["reason"], registry=r)
        for result in FEED_RESULTS:
            self.feed_refresh.labels(result=result)
        for result in RELOAD_RESULTS:
            self.policy_reload.labels(result=result)

    def watch(self, read: Callable[[], State]) -> None:
        """Read the state gauges with `read` at each scrape (the router's runtime)."""
        self.state.read = read


@dataclass
class State:
    """What the state gauges show, as one scrape reads it off the router."""

    inflight: dict[str, int] = field(default_factory=dict)  # node or pool id -> requests
    features: dict[str, int] = field(default_factory=dict)  # node id -> split extractions
    weights: dict[str, float] = field(default_factory=dict)  # node id -> effective weight
    # tenant -> (spend, soft threshold USD, hard threshold USD, lease USD)
    budgets: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    feed_age: float | None = None
    feed_stale: bool | None = None  # whether the snapshot in force counts as stale
    slots: dict[str, int] = field(default_factory=dict)  # node id -> slots now (feed or policy)
    caps: dict[str, int] = field(default_factory=dict)  # node id -> whole-fleet bounded-load cap
    policy_version: str = ""  # digest of the policy in force


class StateCollector:
    """Gauges of the router's state, computed when Prometheus scrapes, on the metrics thread.

    Setting thousands of gauges from the event loop every second (1,000 nodes: ~15 ms a
    pass) delayed every request; reading the state at scrape time costs the loop nothing.
    """

    def __init__(self) -> None:
        """No state to read until `RouterMetrics.watch` names it: the families stay empty."""
        self.read: Callable[[], State] | None = None

    def collect(self) -> Iterator[Metric]:
        """The state families, with samples when there is state to read."""
        state = self.read() if self.read is not None else State()
        inflight = GaugeMetricFamily("router_node_inflight",
                                     "Requests in flight per node or pool", labels=["node"])
        features = GaugeMetricFamily("router_node_features_inflight",
                                     "Split feature extractions in flight per node (held apart "
                                     "from its inference slots)", labels=["node"])
        weights = GaugeMetricFamily("router_node_weight", "Effective ring weight per node",
                                    labels=["node"])
        spend = GaugeMetricFamily("router_budget_spend_usd", "Cloud spend this period per "
                                  "tenant (committed + reserved)", labels=["tenant"])
        limit = GaugeMetricFamily("router_budget_limit_usd", "Spend at which a tenant's soft "
                                  "or hard budget threshold is reached this period (limit x "
                                  "fraction)", labels=["tenant", "threshold"])
        lease = GaugeMetricFamily("router_budget_lease_usd", "Cloud budget this router can admit "
                                  "per tenant without asking the budget store (its lease's "
                                  "unused part; for an authoritative store the headroom left)",
                                  labels=["tenant"])
        age = GaugeMetricFamily("router_feed_age_seconds", "Age of the feed snapshot in force")
        stale = GaugeMetricFamily("router_feed_stale", "1 while the feed snapshot in force is "
                                  "older than feed.stale_after_seconds (nodes weighted down)")
        for name, value in state.inflight.items():
            inflight.add_metric([name], value)
        for name, value in state.features.items():
            features.add_metric([name], value)
        for name, weight in state.weights.items():
            weights.add_metric([name], weight)
        for tenant, (used, soft, hard, held) in state.budgets.items():
            spend.add_metric([tenant], used)
            lease.add_metric([tenant], held)
            for threshold, usd in (("soft", soft), ("hard", hard)):
                if usd != float("inf"):  # unlimited thresholds are left out
                    limit.add_metric([tenant, threshold], usd)
        if state.feed_age is not None:
            age.add_metric([], state.feed_age)
        if state.feed_stale is not None:
            stale.add_metric([], float(state.feed_stale))
        yield from (inflight, features, weights, spend, limit, lease, age, stale)
        yield from _capacity_families(state)


def _capacity_families(state: State) -> Iterator[Metric]:
    """Slots and bounded-load cap per node, and the policy version, for one scrape."""
    slots = GaugeMetricFamily("router_node_slots", "Inference slots per edge node now (the "
                              "feed's reading, else the policy's)", labels=["node"])
    caps = GaugeMetricFamily("router_node_cap", "Bounded-load cap per edge node were every edge "
                             "node eligible: ceil((1 + balance_factor) x (in flight + 1) x "
                             "weight / total weight), at least its utilization floor; 0 off the "
                             "ring", labels=["node"])
    for name, value in state.slots.items():
        slots.add_metric([name], value)
    for name, value in state.caps.items():
        caps.add_metric([name], value)
    info = GaugeMetricFamily("router_policy_info", "1, labelled with the version (hash) of the "
                             "policy in force", labels=["version"])
    if state.policy_version:
        info.add_metric([state.policy_version], 1)
    yield from (slots, caps, info)


def runtime_state(runtime: Runtime) -> State:
    """The state gauges of one router, read from memory only (never a store): loads, weights,
    budget standing against the snapshot in force, feed age. Safe off the event loop: it
    only reads, and a scrape that races a swap sees the old snapshot or the new one."""
    loads = runtime.tracker
    inflight: dict[str, int] = {}
    features: dict[str, int] = {}
    for name, value in zip(list(loads.names), list(loads.loads), strict=False):
        if name.endswith(FEATURES):
            features[name.removesuffix(FEATURES)] = value
        else:
            inflight[name] = value
    snap = runtime.snapshot
    now = runtime.clock()
    budgets = snap.policy.budgets
    standing = {}
    for tenant in budgets.tenants:
        st = runtime.ledger.state(budgets, tenant, now)
        standing[tenant] = (st.used_usd, st.soft_usd, st.hard_usd,
                            runtime.ledger.available(budgets, tenant, now))
    weights = {n.id: n.weight if n.healthy else 0.0 for n in snap.nodes}
    return State(inflight=inflight, features=features, weights=weights,
                 budgets=standing, feed_age=None if snap.feed is None else snap.feed.age(now),
                 feed_stale=None if snap.feed is None else snap.stale,
                 slots={n.id: n.slots for n in snap.nodes},
                 caps=fleet_caps(snap, weights, inflight), policy_version=snap.digest)


def fleet_caps(snap: Snapshot, weights: dict[str, float], inflight: dict[str, int]
               ) -> dict[str, int]:
    """Each edge node's bounded-load cap with the whole fleet as one class (a request class's
    own cap counts only its eligible nodes, so it can be lower): the cap explain and the demo
    show against a node's in-flight count."""
    total = sum(w for w in weights.values() if w > 0)
    load = sum(inflight.get(n.id, 0) for n in snap.nodes)
    return {n.id: ring.cap(load, weights[n.id], total, snap.epsilon, n.min_cap)
            if weights[n.id] > 0 else 0 for n in snap.nodes}


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
