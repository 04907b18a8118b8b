"""The simulated world: edge nodes with slots and queues, cloud pools, partitions, time.

A heap-ordered event loop (ties broken by (time, kind, seq)) owns time; arrivals,
keys and classes are pre-drawn with a seeded numpy Generator, so the same
scenario and seed give the same run. The router under test sees this world
only through a feed snapshot taken every `refresh_seconds` of simulated time
(health, compute score, slots, in-flight, VRAM pressure, observed p95, prices)
plus its own in-flight counts — as in production.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from router.core.feed import FeedSnapshot, NodeState
from router.core.model import CloudPool, EdgeNode, Policy
from simulator.scenario import Scenario

QUALITY = {"full": 1.0, "constrained": 0.6, "minimal": 0.35, None: 1.0}
TIMEOUT_MS = 1000.0
SPLIT_EXTRA_MS = 15.0  # edge → cloud hand-off of a split, until the world model is reworked
DONE, REFRESH, EVENT, HEAL = 0, 1, 2, 3


@dataclass
class Node:
    """An edge node: `slots` servers and a FIFO queue."""

    spec: EdgeNode
    score: float = 1.0
    nominal: float = 1.0
    up: bool = True
    busy: int = 0
    queue: deque[tuple[float, Callable[[], None]]] = field(default_factory=deque)
    window: list[float] = field(default_factory=list)


@dataclass
class Pool:
    """A cloud pool: elastic, unless partitioned."""

    spec: CloudPool
    price: float
    partitioned_until: float = -1.0


@dataclass(frozen=True, slots=True)
class Choice:
    """Where a router sent one request."""

    mode: str  # edge | edge-degraded | split | cloud | refused
    node: str | None = None
    pool: str | None = None
    quality: str | None = None
    cost_usd: float = 0.0
    token: object = None  # the router's own handle, given back on completion


class World:
    """Nodes, pools and the clock; `submit` a choice, get a completion callback."""

    def __init__(self, policy: Policy, rng: np.random.Generator) -> None:
        """Build the world from the policy's nodes and pools."""
        self.rng = rng
        self.now = 0.0
        self.heap: list[tuple[float, int, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.nodes = {n.id: Node(n) for n in policy.nodes}
        self.pools = {p.id: Pool(p, p.usd_per_hour) for p in policy.pools}
        # The retired split.extra_latency_ms; the world model rework replaces it.
        self.split_extra = SPLIT_EXTRA_MS

    def at(self, t: float, kind: int, fn: Callable[[], None]) -> None:
        """Schedule `fn` at time `t`."""
        heapq.heappush(self.heap, (t, kind, next(self.seq), fn))

    def run_until(self, t: float) -> None:
        """Process every scheduled event up to time `t`."""
        heap = self.heap
        while heap and heap[0][0] <= t:
            when, _, _, fn = heapq.heappop(heap)
            self.now = when
            fn()
        self.now = max(self.now, t)

    def _serve(self, node: Node, mean_ms: float, done: Callable[[float], None]) -> None:
        if not node.up:
            self.at(self.now + TIMEOUT_MS / 1000, DONE, lambda: done(TIMEOUT_MS))
            return
        if node.busy < node.spec.slots:
            self._start(node, self.now, mean_ms, done)
        else:
            arrived = self.now
            node.queue.append((arrived, lambda: self._start(node, arrived, mean_ms, done)))

    def _start(self, node: Node, arrived: float, mean_ms: float,
               done: Callable[[float], None]) -> None:
        node.busy += 1
        service = float(self.rng.exponential(mean_ms * node.nominal / max(node.score, 1e-3)))

        def finish() -> None:
            node.busy -= 1
            total = (self.now - arrived) * 1000.0
            node.window.append(total)
            if node.queue:
                _, start = node.queue.popleft()
                start()
            done(total)

        self.at(self.now + service / 1000.0, DONE, finish)

    def _cloud(self, pool: Pool, base_ms: float, done: Callable[[float], None]) -> None:
        if self.now < pool.partitioned_until:
            self.at(self.now + TIMEOUT_MS / 1000, DONE, lambda: done(TIMEOUT_MS))
            return
        ms = base_ms * float(self.rng.lognormal(0.0, 0.12))
        self.at(self.now + ms / 1000.0, DONE, lambda: done(ms))

    def submit(self, choice: Choice, payload_kb: float, done: Callable[[float], None]) -> None:
        """Run one request as `choice` says; `done(latency_ms)` is called when it ends."""
        start = self.now
        if choice.mode in ("edge", "edge-degraded") and choice.node in self.nodes:
            node = self.nodes[choice.node]
            self._serve(node, node.spec.base_latency_ms * QUALITY[choice.quality], done)
        elif choice.mode == "cloud" and choice.pool in self.pools:
            pool = self.pools[choice.pool]
            self._cloud(pool, pool.spec.latency_ms + payload_kb / 100.0, done)
        elif choice.mode == "split" and choice.node in self.nodes and choice.pool in self.pools:
            node, pool = self.nodes[choice.node], self.pools[choice.pool]

            def then(edge_ms: float) -> None:
                if edge_ms >= TIMEOUT_MS:
                    done(edge_ms)
                    return
                self._cloud(pool, pool.spec.latency_ms * 0.8 + self.split_extra,
                            lambda cloud_ms: done((self.now - start) * 1000.0
                                                  if cloud_ms < TIMEOUT_MS else TIMEOUT_MS))

            self._serve(node, node.spec.base_latency_ms * 0.4, then)
        else:
            done(0.0)

    def feed(self, t_epoch: float) -> FeedSnapshot:
        """What a capacity feed would report now (and reset the p95 windows)."""
        states = {}
        for node in self.nodes.values():
            window = node.window
            p95 = float(np.percentile(window, 95)) if len(window) >= 5 else None
            node.window = []
            load = (node.busy + len(node.queue)) / node.spec.slots
            states[node.spec.id] = NodeState(
                healthy=node.up, compute_score=node.score, slots=node.spec.slots,
                inflight=node.busy, vram_used_fraction=min(1.0, 0.35 + 0.5 * load), p95_ms=p95)
        prices = {p.spec.instance_type: p.price for p in self.pools.values()}
        return FeedSnapshot(generated_at=t_epoch, received_at=t_epoch, nodes=states,
                            prices=prices)


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
