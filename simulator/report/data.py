"""What the HTML report draws from: one run's requests as tallies, its time bins and events.

`ReportInput` is built once by the command and handed to every chart; the
requests' tallies (`binned.Binned`) are computed on first use and shared.
Optional inputs (other runs, the router's caps per node) are simply absent
when a run did not record them, and the charts that need them are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from router.core.policy import Policy
from simulator.report.binned import Binned, from_columns
from simulator.run import Result
from simulator.scenario import Event, Scenario


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
    `folded`: the charts' tallies of a run that kept no column per request (a trace replay).
    """

    result: Result
    summary: Mapping[str, Any]
    policy: Policy
    scenario: Scenario | None = None
    comparison: Sequence[Mapping[str, Any]] = ()
    caps: Mapping[str, Sequence[tuple[float, float]]] | None = None
    trace: Mapping[str, Any] | None = None  # a trace replay's report.json (simulate --trace)
    candidates: Sequence[Run] = ()  # compared policies' runs, charted beside this one
    folded: Binned | None = None  # the charts' tallies, when the run kept no columns

    def of(self, run: Run) -> ReportInput:
        """The same page's input for a candidate's own run (its charts)."""
        return ReportInput(run.result, run.summary, run.policy, self.scenario,
                           caps=run.result.caps or None)

    @cached_property
    def binned(self) -> Binned:
        """The run's requests as the charts read them: given (a trace replay folds them as
        they end) or tallied from the run's columns."""
        if self.folded is not None:
            return self.folded
        return from_columns(self.result, [n.id for n in self.policy.nodes])

    @property
    def span(self) -> float:
        """Simulated seconds from 0 to the last arrival (at least a millisecond)."""
        return self.binned.span

    @property
    def bins(self) -> np.ndarray:
        """Edges of ~60 equal time bins of a readable width, covering [0, span]."""
        return self.binned.bins

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
            for slo in self.binned.slos:
                names.setdefault(slo, [])
        return [(slo, ", ".join(n)) for slo, n in sorted(names.items())]

    @property
    def runs(self) -> list[Mapping[str, Any]]:
        """The main run's summary followed by every compared run's."""
        return [self.summary, *self.comparison]
