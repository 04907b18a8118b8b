"""What the HTML report draws from: one run's columns as arrays, its time bins and events.

`ReportInput` is built once by the command and handed to every chart; derived
arrays are computed on first use and shared. Optional inputs (other runs, the
router's caps per node) are simply absent when a run did not record them, and
the charts that need them are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from router.core.model import Policy
from simulator.run import Result
from simulator.scenario import Event, Scenario

CLOUDY = ("cloud", "split")
EDGE_MODES = ("edge", "edge-degraded")  # modes that hold an inference slot on an edge node
# (a split holds one of the node's feature slots instead, counted apart)


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `raw` (a readable bin width)."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    base = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * base >= raw * (1 - 1e-9):
            return float(m * base)
    return float(10 * base)


@dataclass(frozen=True)
class Run:
    """A compared candidate policy's own run: its columns, its summary and the policy."""

    result: Result
    summary: Mapping[str, Any]
    policy: Policy


@dataclass(frozen=True)
class ReportInput:
    """Everything the HTML report shows: the main run, its context and optional extras.

    `comparison`: other runs' summaries on the same traffic (policies, baselines).
    `caps`: per node, the router's bounded-load cap over time as (t_s, cap) points.
    `trace`: with `simulate --trace`, the replay's report (production beside the candidate).
    `candidates`: with `--compare`, each candidate policy's own run, charted beside this one.
    """

    result: Result
    summary: Mapping[str, Any]
    policy: Policy
    scenario: Scenario | None = None
    comparison: Sequence[Mapping[str, Any]] = ()
    caps: Mapping[str, Sequence[tuple[float, float]]] | None = None
    trace: Mapping[str, Any] | None = None  # a trace replay's report.json (simulate --trace)
    candidates: Sequence[Run] = ()  # compared policies' runs, charted beside this one

    def of(self, run: Run) -> ReportInput:
        """The same page's input for a candidate's own run (its charts)."""
        return ReportInput(run.result, run.summary, run.policy, self.scenario,
                           caps=run.result.caps or None)

    @cached_property
    def t(self) -> np.ndarray:
        """Arrival time of each request, simulated seconds."""
        return np.asarray(self.result.t, dtype=float)

    @cached_property
    def latency(self) -> np.ndarray:
        """Latency of each request in ms (NaN for refused ones)."""
        return np.asarray(self.result.latency_ms, dtype=float)

    @cached_property
    def mode(self) -> np.ndarray:
        """Mode of each request (edge, edge-degraded, split, cloud, refused)."""
        return np.asarray(self.result.mode, dtype=object)

    @cached_property
    def node(self) -> np.ndarray:
        """Edge node (edge modes, split) or pool (cloud) of each request; '' when refused."""
        return np.asarray(self.result.node, dtype=object)

    @cached_property
    def cost(self) -> np.ndarray:
        """Cost of each request, USD."""
        return np.asarray(self.result.cost_usd, dtype=float)

    @cached_property
    def cloud_cost(self) -> np.ndarray:
        """What a pool billed for each request, USD (what budgets count)."""
        r = self.result
        if len(r.cloud_usd) == len(r.t):
            return np.asarray(r.cloud_usd, dtype=float)
        return np.where(np.isin(self.mode, CLOUDY), self.cost, 0.0)

    @cached_property
    def tenant(self) -> np.ndarray:
        """Tenant of each request."""
        return np.asarray(self.result.tenant, dtype=object)

    @cached_property
    def span(self) -> float:
        """Simulated seconds from 0 to the last arrival (at least a millisecond)."""
        return max(float(self.t.max()) if len(self.t) else 0.0, 1e-3)

    @cached_property
    def bins(self) -> np.ndarray:
        """Edges of ~60 equal time bins of a readable width, covering [0, span]."""
        step = nice_step(self.span / 60)
        return np.arange(0.0, self.span + step, step)

    @property
    def bin_width(self) -> float:
        """Width of one time bin, s."""
        return float(self.bins[1] - self.bins[0])

    @cached_property
    def events(self) -> tuple[Event, ...]:
        """The scenario's events that fall inside the run."""
        events = self.scenario.events if self.scenario is not None else ()
        return tuple(e for e in events if e.at_s <= self.span)

    @cached_property
    def late_events(self) -> tuple[Event, ...]:
        """The scenario's events after the run's last arrival (not drawn)."""
        events = self.scenario.events if self.scenario is not None else ()
        return tuple(e for e in events if e.at_s > self.span)

    @cached_property
    def slos(self) -> list[tuple[float, str]]:
        """Each distinct SLO (ms) with the classes that have it."""
        names: dict[float, list[str]] = {}
        if self.scenario is not None:
            for c in self.scenario.classes:
                names.setdefault(c.slo_ms, []).append(c.name)
        else:
            for slo in sorted(set(self.result.slo_ms)):
                names.setdefault(slo, [])
        return [(slo, ", ".join(n)) for slo, n in sorted(names.items())]

    @property
    def runs(self) -> list[Mapping[str, Any]]:
        """The main run's summary followed by every compared run's."""
        return [self.summary, *self.comparison]
