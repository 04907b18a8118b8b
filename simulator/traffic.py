"""The arrivals of a scenario, drawn up front: times, classes and keys."""

from __future__ import annotations

import numpy as np

from simulator.scenario import Scenario


def arrivals(scenario: Scenario, rng: np.random.Generator, limit: int | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pre-drawn (times, class indexes, key indexes) of a non-homogeneous Poisson stream."""
    edges = np.arange(0.0, scenario.duration_s + 1.0, 1.0)
    rates = np.array([scenario.rate_at(float(t) + 0.5) for t in edges[:-1]])
    counts = rng.poisson(rates)
    times = np.repeat(edges[:-1], counts) + rng.random(int(counts.sum()))
    times.sort()
    if limit is not None:
        while len(times) < limit:  # extend past duration_s at the last rate
            extra = rng.exponential(1.0 / max(rates[-1], 1e-6), limit - len(times)).cumsum()
            times = np.concatenate([times, (times[-1] if len(times) else 0.0) + extra])
        times = times[:limit]
    weights = np.array([c.weight for c in scenario.classes])
    cls = rng.choice(len(weights), size=len(times), p=weights / weights.sum())
    if scenario.zipf_s > 1.0:
        keys = (rng.zipf(scenario.zipf_s, len(times)) - 1) % scenario.keys
    else:
        keys = rng.integers(0, scenario.keys, len(times))
    return times, cls, keys
