"""The capacity lease series (docs/reference.md, "Metrics"), read off the keeper at scrape time.

Every router exports its own: per resource (a node id, `NODE#features` for its
feature slots, `pool:ID` for a capped pool) what it holds, has in flight and
still wants, and what the whole fleet holds; Prometheus' `instance` label tells
the routers apart, and a sum over them is the fleet's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from router.stores.capkeeper import CapacityStats

PER = (("router_capacity_held", "Slots this router may admit onto, per leased resource"),
       ("router_capacity_used", "Requests this router has in flight, per leased resource"),
       ("router_capacity_unmet", "Slots this router asked for and was not granted"),
       ("router_capacity_fleet_leased", "Slots leased by every live router together"),
       ("router_capacity_slots", "The resource's capacity (slots, feature slots, max_inflight)"))


class CapacityCollector:
    """Gauges and counters of one router's capacity keeper."""

    def __init__(self, stats: CapacityStats) -> None:
        """Read `stats` (the keeper's, updated by its thread) at each scrape."""
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """The families, computed now."""
        st = self.stats
        families = [GaugeMetricFamily(name, text, labels=["resource"]) for name, text in PER]
        for name, values in sorted(dict(st.per).items()):
            for family, value in zip(families, values, strict=True):
                family.add_metric([name], value)
        yield from families
        yield GaugeMetricFamily("router_capacity_routers",
                                "Live routers in the fleet, from the store's heartbeats",
                                value=st.members)
        yield GaugeMetricFamily("router_capacity_sync_lag_seconds",
                                "Round trip of the last answered lease sync", value=st.lag)
        age = time.monotonic() - st.last_ok
        yield GaugeMetricFamily("router_capacity_sync_age_seconds",
                                "Seconds since the store last answered a lease sync",
                                value=age if age != float("inf") else -1.0)
        yield CounterMetricFamily("router_capacity_grants", "Slots granted to this router",
                                  value=st.grants)
        yield CounterMetricFamily("router_capacity_returns",
                                  "Slots this router handed back", value=st.returns)
        yield CounterMetricFamily("router_capacity_sync_errors",
                                  "Lease syncs the store did not answer", value=st.errors)
