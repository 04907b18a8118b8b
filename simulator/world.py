"""The simulated world: the lifecycle of `simulator.lifecycle` on a heap-ordered event loop.

The loop owns time: actions are (time, kind, seq, a, b) tuples, ties broken by
(time, kind, seq), fired by kind with no closure per request. The router under test
sees this world only through `feed`, taken every `refresh_seconds` of simulated time
(health, compute score, slots, in-flight, VRAM, p95, each node site's available
uplink, prices) plus its own in-flight counts.

A request is `submit`ted with its row number and ends with `on_done(row, latency_ms,
warm, status)` (warm: whether an edge inference found its key warm, None for the
other modes); what happens in between is the lifecycle's.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Any

import numpy as np

from router.core.policy import Policy
from simulator.lifecycle import EDGE_END, OK, Lifecycle
from simulator.scenario import WorldConfig


class World(Lifecycle):
    """Nodes, pools, site uplinks and a simulated clock: `submit` requests, `run_until` a
    time, hear `on_done`."""

    def __init__(self, policy: Policy, rng: np.random.Generator,
                 config: WorldConfig | None = None) -> None:
        """Build the world from the policy's nodes and pools and the scenario's `world`."""
        super().__init__(policy, rng, config)
        self.heap: list[tuple[float, int, int, Any, Any]] = []
        self.seq = itertools.count()

    def at(self, t: float, kind: int, a: Any = None, b: Any = None) -> None:
        """Schedule an action of `kind` at time `t`."""
        heapq.heappush(self.heap, (t, kind, next(self.seq), a, b))

    def submit(self, row: int, mode: str, node: str | None, pool: str | None,
               quality: str | None, key: Hashable, payload_bytes: float) -> None:
        """Start request `row` as the router chose; `on_done` hears when it ends."""
        if mode == "edge" or mode == "edge-degraded":
            self.start_edge(row, _named(node, row, mode), key, quality or "full")
        elif mode == "cloud":
            self.start_cloud(row, _named(pool, row, mode), payload_bytes)
        elif mode == "split":
            self.start_split(row, _named(node, row, mode), _named(pool, row, mode),
                             payload_bytes)
        else:
            self.on_done(row, 0.0, None, OK)  # nothing to run

    def run_until(self, t: float) -> None:
        """Fire every action scheduled up to time `t`, in order."""
        heap, pop, fire, edge_end = self.heap, heapq.heappop, self.fire, self.edge_end
        while heap and heap[0][0] <= t:
            self.now, kind, _, a, b = pop(heap)
            if kind == EDGE_END:  # the common action, one call sooner
                edge_end(a, b)
            else:
                fire(kind, a, b)
        self.now = max(self.now, t)


def _named(target: str | None, row: int, mode: str) -> str:
    """The node or pool a `mode` request runs on; the router always names one."""
    if target is None:
        raise ValueError(f"request {row}: a {mode} request names no node or pool")
    return target
