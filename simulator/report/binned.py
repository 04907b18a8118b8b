"""What the charts draw from a run's requests: tallies per time bin and latencies per mode.

A chart never reads a run's requests one by one: it reads a `Binned` — counts
of each mode per time bin, cost per bin by mode (cloud by pool), each tenant's
cloud spend per bin, each edge node's peak in flight per bin, and each mode's
latency at the CDF's quantile levels. A scenario run's `Binned` is computed
here from its columns (exact); a trace replay's is folded as its requests
finish (`simulator.report.binstream`), the same tallies with the latencies read
from log-bucketed histograms (within `sketch.ALPHA`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router import wire
from simulator.run import Result

CLOUDY = ("cloud", "split")
EDGE_MODES = wire.EDGE_MODES  # modes that hold an inference slot on an edge node
# (a split holds one of the node's feature slots instead, counted apart)
# Quantile levels at which a CDF is drawn: even steps, denser in the tail where SLOs live.
LEVELS = np.unique(np.concatenate([np.linspace(0.001, 0.99, 300), np.linspace(0.99, 1.0, 101)]))


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `raw` (a readable bin width)."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    base = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * base >= raw * (1 - 1e-9):
            return float(m * base)
    return float(10 * base)


def bins_for(span: float) -> np.ndarray:
    """Edges of ~60 equal time bins of a readable width, covering [0, span]."""
    step = nice_step(span / 60)
    return np.arange(0.0, span + step, step)


@dataclass(frozen=True)
class Binned:
    """A run's requests as the charts read them.

    `modes`: every mode seen. `mode_bins`: per mode, requests per bin. `cost_bins`: per
    (mode, pool for cloud else ''), cost per bin (USD). `tenant_spend`: per tenant with
    any, its cloud spend (what budgets count). `tenant_cloud_bins`: per tenant, cloud and
    split spend per bin. `node_peaks`: per edge node of the policy, the most inference
    requests in flight at once in each bin. `latency_levels`: per mode with a served
    request, (how many, latency in ms at each of LEVELS). `error`: the relative error of
    those latencies (0: exact).
    """

    count: int
    span: float
    bins: np.ndarray
    modes: frozenset[str]
    mode_bins: Mapping[str, np.ndarray]
    cost_bins: Mapping[tuple[str, str], np.ndarray]
    cost_usd: float
    tenant_spend: Mapping[str, float]
    tenant_cloud_bins: Mapping[str, np.ndarray]
    node_peaks: Mapping[str, np.ndarray]
    latency_levels: Mapping[str, tuple[int, np.ndarray]]
    slos: tuple[float, ...]
    error: float = 0.0


def peak_inflight(start: np.ndarray, end: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Most requests in flight at once within each bin, from their [start, end) intervals."""
    nb = len(edges) - 1
    if not len(start):
        return np.zeros(nb)
    times = np.concatenate([start, end])
    delta = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    order = np.lexsort((delta, times))  # at equal times an end counts before a start
    times, level = times[order], np.cumsum(delta[order])
    before = np.searchsorted(times, edges[:-1], side="right") - 1
    peaks = np.where(before >= 0, level[np.maximum(before, 0)], 0.0)
    which = np.searchsorted(edges, times, side="right") - 1
    inside = (which >= 0) & (which < nb)
    np.maximum.at(peaks, which[inside], level[inside])
    return peaks


def _peaks(t: np.ndarray, lat: np.ndarray, mode: np.ndarray, node: np.ndarray,
           nodes: Sequence[str], edges: np.ndarray) -> dict[str, np.ndarray]:
    """Peak in flight per bin for every edge node named in `nodes`."""
    rows = np.flatnonzero(np.isin(mode, EDGE_MODES))
    start, took = t[rows], lat[rows]
    end = start + np.where(np.isfinite(took), took, 0.0) / 1000.0
    ids, inverse = np.unique(node[rows].astype(str), return_inverse=True)
    by_node = {str(n): np.flatnonzero(inverse == i) for i, n in enumerate(ids)}
    empty = np.zeros(0, dtype=int)
    return {n: peak_inflight(start[by_node.get(n, empty)], end[by_node.get(n, empty)], edges)
            for n in nodes}


def from_columns(r: Result, nodes: Sequence[str]) -> Binned:
    """The tallies of a run that kept a column per request (a scenario run)."""
    t = np.asarray(r.t, dtype=float)
    lat, cost = np.asarray(r.latency_ms, dtype=float), np.asarray(r.cost_usd, dtype=float)
    mode, node = np.asarray(r.mode, dtype=object), np.asarray(r.node, dtype=object)
    tenant = np.asarray(r.tenant, dtype=object)
    cloud = (np.asarray(r.cloud_usd, dtype=float) if len(r.cloud_usd) == len(r.t)
             else np.where(np.isin(mode, CLOUDY), cost, 0.0))
    span = max(float(t.max()) if len(t) else 0.0, 1e-3)
    edges = bins_for(span)
    nb = len(edges) - 1
    which = np.clip(np.digitize(t, edges) - 1, 0, nb - 1)
    modes = set(mode.tolist())
    cost_bins, levels = {}, {}
    for m in modes:
        sel = mode == m
        for where in sorted(set(node[sel].tolist())) if m == "cloud" else [""]:
            part = sel & (node == where) if where else sel
            cost_bins[(m, where)] = np.bincount(which[part], weights=cost[part], minlength=nb)
        served = lat[sel & np.isfinite(lat) & (lat > 0)]
        if m != "refused" and len(served):
            levels[m] = (len(served), np.quantile(served, LEVELS))
    spend: dict[str, float] = {}
    for name, usd in zip(r.tenant, cloud.tolist(), strict=True):
        if usd:
            spend[name] = spend.get(name, 0.0) + usd
    cloudy = np.isin(mode, CLOUDY)
    return Binned(
        count=len(t), span=span, bins=edges, modes=frozenset(modes),
        mode_bins={m: np.bincount(which[mode == m], minlength=nb).astype(float)
                   for m in modes},
        cost_bins=cost_bins, cost_usd=float(np.sum(cost)), tenant_spend=spend,
        tenant_cloud_bins={
            name: np.bincount(which[cloudy & (tenant == name)],
                              weights=cloud[cloudy & (tenant == name)], minlength=nb)
            for name in set(tenant[cloudy].tolist())},
        node_peaks=_peaks(t, lat, mode, node, nodes, edges), latency_levels=levels,
        slos=tuple(sorted(set(r.slo_ms))))
