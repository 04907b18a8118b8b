"""A `Binned` folded a request at a time, in arrival order, in memory that does not grow with them.

The bins are fixed before the first request (a trace replay knows its span from
pass one), so each request adds to its bin and is gone. Counts and sums are
added in arrival order, as `np.bincount` adds a run's columns: the same numbers.
A node's peak in flight per bin is swept as the requests come: each node keeps
the end times of its requests still in flight (a heap: as many as it has in
flight), a start first retires the ends at or before it (an end counts before a
start at the same instant, as `binned.peak_inflight` orders them), and a bin's
peak is the most in flight after any of its starts, or at its opening edge. The
latencies per mode go into log-bucketed histograms, read at the CDF's levels
within `sketch.ALPHA`.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

from simulator.report.binned import CLOUDY, EDGE_MODES, LEVELS, Binned
from simulator.row import Row
from simulator.sketch import ALPHA, LogHistogram

K = TypeVar("K", bound=Hashable)


class _Sweep:
    """One edge node's requests in flight, swept bin by bin."""

    def __init__(self, bins: int) -> None:
        self.ends: list[float] = []
        self.peaks = [0.0] * bins
        self.edge = 0  # the next bin edge whose opening level is still to be taken

    def open(self, edges: Sequence[float], upto: float) -> None:
        """Take the level at each bin edge up to `upto` (all earlier starts are in)."""
        while self.edge < len(self.peaks) and edges[self.edge] <= upto:
            at = edges[self.edge]
            while self.ends and self.ends[0] <= at:
                heapq.heappop(self.ends)
            self.peaks[self.edge] = max(self.peaks[self.edge], float(len(self.ends)))
            self.edge += 1

    def start(self, edges: Sequence[float], t: float, end: float) -> None:
        """A request in flight over [t, end)."""
        self.open(edges, t)
        while self.ends and self.ends[0] <= t:
            heapq.heappop(self.ends)
        if end > t:  # one that ends as it starts is never in flight
            heapq.heappush(self.ends, end)
        b = bisect.bisect_right(edges, t) - 1
        if 0 <= b < len(self.peaks):
            self.peaks[b] = max(self.peaks[b], float(len(self.ends)))


def _row_of(tallies: dict[K, list[float]], key: K, bins: int) -> list[float]:
    """The per-bin tallies of `key`, zeros when it is new."""
    row = tallies.get(key)
    if row is None:
        row = tallies[key] = [0.0] * bins
    return row


class BinStream:
    """The charts' tallies of a run, a request at a time (`add`), read once at the end."""

    def __init__(self, edges: np.ndarray, nodes: Sequence[str]) -> None:
        self.edges = edges.tolist()
        self.nb = len(self.edges) - 1
        self.count, self.last_t, self.cost_usd = 0, 0.0, 0.0
        self.mode_bins: dict[str, list[float]] = {}
        self.cost_bins: dict[tuple[str, str], list[float]] = {}
        self.tenant_spend: dict[str, float] = {}
        self.tenant_cloud_bins: dict[str, list[float]] = {}
        self.sweeps = {n: _Sweep(self.nb) for n in nodes}
        self.latency: dict[str, LogHistogram] = {}
        self.slos: set[float] = set()

    def _bin(self, t: float) -> int:
        """The bin `np.digitize` gives `t`, clipped into the first and last bins."""
        return min(max(bisect.bisect_right(self.edges, t) - 1, 0), self.nb - 1)

    def add(self, row: Row) -> None:
        """Fold in one finished request; requests come in arrival order."""
        b, mode = self._bin(row.t), row.mode
        self.count, self.last_t = self.count + 1, row.t
        self.cost_usd += row.cost
        self.slos.add(row.slo)
        _row_of(self.mode_bins, mode, self.nb)[b] += 1.0
        _row_of(self.cost_bins, (mode, row.node if mode == "cloud" else ""), self.nb)[b] += \
            row.cost
        if row.cloud:
            self.tenant_spend[row.tenant] = self.tenant_spend.get(row.tenant, 0.0) + row.cloud
        if mode in CLOUDY:
            _row_of(self.tenant_cloud_bins, row.tenant, self.nb)[b] += row.cloud
        lat = row.latency
        if mode in EDGE_MODES and row.node in self.sweeps:
            took = lat if math.isfinite(lat) else 0.0
            self.sweeps[row.node].start(self.edges, row.t, row.t + took / 1000.0)
        if mode != "refused" and math.isfinite(lat) and lat > 0:
            hist = self.latency.get(mode)
            if hist is None:
                hist = self.latency[mode] = LogHistogram()
            hist.add(lat)

    def binned(self) -> Binned:
        """The tallies so far (all of them once the last request is in)."""
        for sweep in self.sweeps.values():
            sweep.open(self.edges, math.inf)  # the edges after the last start
        levels = {m: (h.count, np.asarray(h.quantiles(LEVELS.tolist())))
                  for m, h in self.latency.items()}

        return Binned(
            count=self.count, span=max(self.last_t, 1e-3), bins=np.asarray(self.edges),
            modes=frozenset(self.mode_bins),
            mode_bins={m: np.asarray(v) for m, v in self.mode_bins.items()},
            cost_bins={k: np.asarray(v) for k, v in self.cost_bins.items()},
            cost_usd=self.cost_usd, tenant_spend=dict(self.tenant_spend),
            tenant_cloud_bins={k: np.asarray(v) for k, v in self.tenant_cloud_bins.items()},
            node_peaks={n: np.asarray(s.peaks) for n, s in self.sweeps.items()},
            latency_levels=levels, slos=tuple(sorted(self.slos)), error=ALPHA)
