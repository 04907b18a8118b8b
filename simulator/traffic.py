"""The arrivals of a scenario, drawn up front: times, classes and keys (and, from a public
trace, each request's service demand and payload factor)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.publictrace import replay, sizes
from simulator.scenario import Scenario


@dataclass(frozen=True)
class Arrivals:
    """Per arrival: time, class and key indexes; demand and payload factors (None: all 1)."""

    times: np.ndarray
    cls: np.ndarray
    keys: np.ndarray
    demand: np.ndarray | None = None
    payload: np.ndarray | None = None


def _poisson(scenario: Scenario, rng: np.random.Generator, limit: int | None) -> np.ndarray:
    """Times of a non-homogeneous Poisson stream following `rate_rps`."""
    edges = np.arange(0.0, scenario.duration_s + 1.0, 1.0)
    rates = np.array([scenario.rate_at(float(t) + 0.5) for t in edges[:-1]])
    counts = rng.poisson(rates)
    total = int(counts.sum())
    seconds = len(counts)
    if limit is not None and 0 < limit < total:
        # only the seconds that hold the first `limit` arrivals are drawn (their offsets come
        # first in the stream); the generator then skips the rest, one 64-bit draw per offset
        seconds = int(np.searchsorted(counts.cumsum(), limit)) + 1
    drawn = int(counts[:seconds].sum())
    times = np.repeat(edges[:seconds], counts[:seconds]) + rng.random(drawn)
    if drawn < total:  # PCG64 (default_rng's) jumps; another bit generator draws and drops
        advance = getattr(rng.bit_generator, "advance", None)
        if advance is not None:
            advance(total - drawn)
        else:
            rng.random(total - drawn)
    times.sort()
    if limit is not None:
        while len(times) < limit:  # extend past duration_s at the last rate
            extra = rng.exponential(1.0 / max(rates[-1], 1e-6), limit - len(times)).cumsum()
            times = np.concatenate([times, (times[-1] if len(times) else 0.0) + extra])
        times = times[:limit]
    return times


def draw(scenario: Scenario, rng: np.random.Generator, limit: int | None) -> Arrivals:
    """Every arrival of the scenario: from `rate_rps`, or replayed from `traffic.trace`."""
    src = scenario.traffic.trace
    demand = payload = None
    if src is None:
        times = _poisson(scenario, rng, limit)
    else:
        drawn = replay(src.trace, duration_s=scenario.duration_s, rate_scale=src.rate_scale,
                       time_scale=src.time_scale, rng=rng, limit=limit)
        times = drawn.times
        per_row_demand, per_row_payload = sizes(src.trace, src.context_weight)
        demand, payload = per_row_demand[drawn.rows], per_row_payload[drawn.rows]
    weights = np.array([c.weight for c in scenario.classes])
    cls = rng.choice(len(weights), size=len(times), p=weights / weights.sum())
    if scenario.zipf_s > 1.0:
        keys = (rng.zipf(scenario.zipf_s, len(times)) - 1) % scenario.keys
    else:
        keys = rng.integers(0, scenario.keys, len(times))
    return Arrivals(times, cls, keys, demand, payload)


def arrivals(scenario: Scenario, rng: np.random.Generator, limit: int | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pre-drawn (times, class indexes, key indexes)."""
    a = draw(scenario, rng, limit)
    return a.times, a.cls, a.keys
