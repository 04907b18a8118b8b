"""What the world holds for a request while it waits or runs: one typed token per request.

A token is made when the request enters the world and travels with it through node
queues, feature slots, uplinks and pools; `row` names it to the driver when it ends.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from simulator.pools import Pool


@dataclass(slots=True, eq=False)
class Job:
    """A request in the world: the driver's `row` for it and when it arrived (`t0`, s)."""

    row: int
    t0: float


@dataclass(slots=True, eq=False)
class EdgeJob(Job):
    """An inference on a node: its key (for warm state), its quality, and whether the key was
    warm once it started."""

    key: Hashable
    quality: str
    warm: bool | None = None


@dataclass(slots=True, eq=False)
class PoolJob(Job):
    """A request bound for a pool: `nbytes` to send first (a split's before its features are
    extracted), then `compute_ms` of the pool's compute."""

    pool: Pool
    nbytes: float
    compute_ms: float
