"""Arrivals drawn only as far as a `--requests` limit reaches are exactly the arrivals of the
whole scenario cut at the limit, and leave the generator where the whole draw leaves it (the
classes, keys and the world draw after them: a run is the same run either way)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.traffic import _poisson


def whole_then_cut(scenario: SimpleNamespace, rng: np.random.Generator,
                   limit: int | None) -> np.ndarray:
    """Every second of the scenario drawn, sorted, then cut at `limit` (the plain way)."""
    edges = np.arange(0.0, scenario.duration_s + 1.0, 1.0)
    rates = np.array([scenario.rate_at(float(t) + 0.5) for t in edges[:-1]])
    counts = rng.poisson(rates)
    times = np.repeat(edges[:-1], counts) + rng.random(int(counts.sum()))
    times.sort()
    if limit is not None:
        while len(times) < limit:
            extra = rng.exponential(1.0 / max(rates[-1], 1e-6), limit - len(times)).cumsum()
            times = np.concatenate([times, (times[-1] if len(times) else 0.0) + extra])
        times = times[:limit]
    return times


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       rates=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=12),
       limit=st.one_of(st.none(), st.integers(1, 600)))
def test_a_limited_draw_is_the_whole_draw_cut(seed, rates, limit) -> None:  # type: ignore[no-untyped-def]
    scenario = SimpleNamespace(duration_s=float(len(rates)),
                               rate_at=lambda t: rates[min(int(t), len(rates) - 1)])
    fast, plain = np.random.default_rng(seed), np.random.default_rng(seed)
    got = _poisson(scenario, fast, limit)  # type: ignore[arg-type]
    want = whole_then_cut(scenario, plain, limit)
    assert got.tolist() == want.tolist()
    assert fast.random(4).tolist() == plain.random(4).tolist()
