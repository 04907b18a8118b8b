"""The capacity lease series (docs/reference.md, "Metrics"), read off the keeper at scrape time.

Every router exports its own: per resource (a node id, `NODE#features` for its
feature slots, `pool:ID` for a capped pool) what it holds, has in flight and
still wants, and what the whole fleet holds; Prometheus' `instance` label tells
the routers apart, and a sum over them is the fleet's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from router.stores.capkeeper import CapacityStats

PER = (("router_capacity_held", "Slots this router may admit onto, per leased resource"),
       ("router_capacity_used", "Requests this router has in flight, per leased resource"),
       ("router_capacity_unmet", "Slots this router asked for and was not granted"),
       ("router_capacity_fleet_leased", "Slots leased by every live router together"),
       ("router_capacity_slots", "The resource's capacity (slots, feature slots, max_inflight)"))


class CapacityCollector:
    """Gauges and counters of one router's capacity keeper."""

    def __init__(self, stats: CapacityStats | None = None) -> None:
        """Read `stats` (the keeper's, updated by its thread; None: a router alone, no
        samples) at each scrape."""
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """The families, computed now."""
        st = self.stats
        families = [GaugeMetricFamily(name, text, labels=["resource"]) for name, text in PER]
        scalars: list[GaugeMetricFamily | CounterMetricFamily] = [
            GaugeMetricFamily("router_capacity_routers",
                              "Live routers in the fleet, from the store's heartbeats"),
            GaugeMetricFamily("router_capacity_sync_lag_seconds",
                              "Round trip of the last answered lease sync"),
            GaugeMetricFamily("router_capacity_sync_age_seconds",
                              "Seconds since the store last answered a lease sync (-1: never)"),
            CounterMetricFamily("router_capacity_grants", "Slots granted to this router"),
            CounterMetricFamily("router_capacity_returns", "Slots this router handed back"),
            CounterMetricFamily("router_capacity_syncs", "Lease syncs the store answered"),
            CounterMetricFamily("router_capacity_sync_errors",
                                "Lease syncs the store did not answer")]
        if st is not None:
            for name, row in sorted(dict(st.per).items()):
                for family, count in zip(families, row, strict=True):
                    family.add_metric([name], count)
            age = time.monotonic() - st.last_ok
            values: tuple[float, ...] = (st.members, st.lag, age if age != float("inf")
                                         else -1.0, st.grants, st.returns, st.syncs,
                                         st.errors)
            for scalar, value in zip(scalars, values, strict=True):
                scalar.add_metric([], value)
        yield from families
        yield from scalars


class TripsCollector:
    """router_store_round_trips_total: the round trips this router made to its shared stores."""

    def __init__(self) -> None:
        """No stores until `watch` names them."""
        self.stores: list[tuple[str, Mapping[str, int]]] = []

    def watch(self, kind: str, trips: Mapping[str, int] | None) -> None:
        """Count `trips` (a store's round trips by purpose, kept by its thread) as `kind`."""
        if trips is not None:
            self.stores.append((kind, trips))

    def collect(self) -> Iterator[Metric]:
        """The counter, read now."""
        family = CounterMetricFamily("router_store_round_trips",
                                     "Round trips to the shared stores, by store and purpose",
                                     labels=["store", "purpose"])
        for kind, trips in self.stores:
            for purpose, count in sorted(dict(trips).items()):
                family.add_metric([kind, purpose], count)
        yield family
