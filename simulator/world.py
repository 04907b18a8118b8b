"""The simulated world: the physics of `simulator.physics` on a heap-ordered event loop.

The loop owns time: events are (time, kind, seq, a, b) tuples, ties broken by
(time, kind, seq), dispatched by kind with no closure per request. Random draws
(service times, cloud jitter) come from the world's own seeded numpy Generator,
drawn in blocks, so the same scenario and seed give the same run. The router
under test sees this world only through `feed`, taken every `refresh_seconds`
of simulated time (health, compute score, slots, in-flight, VRAM, p95, each
node site's available uplink, prices) plus its own in-flight counts.

A request is `submit`ted with its row number and ends with `on_done(row,
latency_ms, warm)` (warm: whether an edge inference found its key warm, None
for the other modes). Edge requests run on their node; a cloud request's
payload crosses the gateway site's uplink, then the pool answers; a split
extracts features on a feature slot of its node, sends them over the node's
site uplink, and the pool infers on them. A node that is down, or a pool cut
off, answers nothing: the request times out.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from typing import Any, cast

import numpy as np

from router.core.feed import FeedSnapshot
from router.core.model import Policy
from simulator.physics import Link, Node, cloud_ms
from simulator.pools import Pool
from simulator.scenario import WorldConfig
from simulator.sites import site_links

EDGE_END, FEATURE_END, LINK_END, CLOUD_END, TIMEOUT, SWEEP, SAMPLE, REFRESH, EVENT = range(9)
SWEEP_S = 1.0  # how often requests past the deadline are given up on
BLOCK = 1 << 16  # random draws made at once


Done = Callable[[int, float, bool | None], None]


class World:
    """Nodes, pools, site uplinks and the clock; `submit` requests, hear `on_done`."""

    def __init__(self, policy: Policy, rng: np.random.Generator,
                 config: WorldConfig | None = None) -> None:
        """Build the world from the policy's nodes and pools and the scenario's `world`."""
        cfg = config if config is not None else WorldConfig()
        self.rng = rng
        self.now = 0.0
        self.timeout_s = cfg.timeout_ms / 1000.0
        self.deadline_ms = cfg.deadline_ms
        self._sweeping = False
        self.jitter = cfg.cloud_jitter
        self.shape = 1.0 / cfg.service_cv ** 2  # gamma shape; 1 is exponential
        self.heap: list[tuple[Any, ...]] = []
        self.seq = itertools.count()
        self.nodes = {n.id: Node(n, warm_keys=cfg.warm_keys_per_node,
                                 warm_speedup=cfg.warm_speedup, contention=cfg.contention,
                                 vram_idle=cfg.vram_idle, vram_busy=cfg.vram_busy)
                      for n in policy.nodes}
        self.pools = {p.id: Pool(p) for p in policy.pools}
        self.links, self.node_link, self.gateway = site_links(policy, cfg)
        self.feature_fraction = policy.split.payload_fraction
        self.compute_fraction = policy.split.cloud_compute_fraction
        self.on_done: Done = lambda row, ms, warm: None
        self.computing: dict[int, Pool] = {}  # row -> the pool computing it now
        self.preempted = 0  # requests caught in flight when spot capacity was reclaimed
        self._dead: set[int] = set()  # rows preempted whose pending events are ignored
        self.feed_late_until = -1.0  # no feed reaches the router before then (feed_delay)
        self._exp: list[float] = []
        self._ln: list[float] = []
        self._ei = self._li = 0
        # per row, a unit-mean service demand (a trace's tokens); None: every request alike
        self.demand: list[float] | None = None

    # -- the loop ---------------------------------------------------------------------------

    def at(self, t: float, kind: int, a: Any = None, b: Any = None) -> None:
        """Schedule an event of `kind` at time `t`."""
        heapq.heappush(self.heap, (t, kind, next(self.seq), a, b))

    def run_until(self, t: float) -> None:
        """Process every scheduled event up to time `t`."""
        heap = self.heap
        pop = heapq.heappop
        while heap and heap[0][0] <= t:
            event = pop(heap)
            self.now = event[0]
            if event[1] == EDGE_END:  # the common event, dispatched without a call
                _, _, _, n, (row, t0, _, quality), warm = event
                ms = (self.now - t0) * 1000.0
                nxt = n.end(self.now, quality, ms)
                if nxt is not None:
                    self._edge_start(n, nxt)
                # past the deadline its client has given up (the node's work is lost)
                self.on_done(row, ms if ms < self.deadline_ms else self.deadline_ms, warm)
            else:
                self._dispatch(event)
        self.now = max(self.now, t)

    def step(self) -> None:
        """Process the next event."""
        self.run_until(self.heap[0][0])

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        when, kind, _, a, b = event
        if kind == LINK_END:
            self._link_end(a, b)
        elif kind == FEATURE_END:
            self._feature_end(a, b)
        elif kind in (CLOUD_END, TIMEOUT):
            row, t0 = b
            pool = self.computing.pop(row, None)
            if pool is not None:
                pool.busy -= 1
            elif row in self._dead:  # caught by a reclaim, already ended there
                self._dead.discard(row)
                return
            self.on_done(row, min((when - t0) * 1000.0, self.deadline_ms), None)
        elif kind == SWEEP:
            self._sweep()
        else:  # SAMPLE, REFRESH, EVENT: a callback
            a()

    def _refill(self) -> list[float]:
        """A block of unit-mean service-time factors with the world's `service_cv`."""
        self._exp = self.rng.gamma(self.shape, 1.0 / self.shape, BLOCK).tolist()
        return self._exp

    def draw_service(self) -> float:
        """One unit-mean service-time factor (gamma with the world's `service_cv`)."""
        i = self._ei
        if i >= len(self._exp):
            self._refill()
            i = 0
        self._ei = i + 1
        return self._exp[i]

    def draw_jitter(self) -> float:
        """One log-normal factor on a pool's answer time (σ: the world's `cloud_jitter`)."""
        i = self._li
        if i >= len(self._ln):
            self._ln, i = self.rng.lognormal(0.0, self.jitter, BLOCK).tolist(), 0
        self._li = i + 1
        return self._ln[i]

    # -- requests ---------------------------------------------------------------------------

    def submit(self, row: int, mode: str, node: str | None, pool: str | None,
               quality: str | None, key: Hashable, payload_bytes: float) -> None:
        """Start request `row` as the router chose; `on_done` hears when it ends."""
        now = self.now
        if mode == "edge" or mode == "edge-degraded":
            n = self.nodes[node]  # type: ignore[index]
            if not n.up:
                self.at(now + self.timeout_s, TIMEOUT, None, (row, now))
                return
            req = (row, now, key, quality or "full")
            if n.busy < n.slots:
                self._edge_start(n, req)
            else:
                n.queue.append(req)
                self._watch()
        elif mode == "cloud":
            p = self.pools[pool]  # type: ignore[index]
            if now < p.partitioned_until:
                self.at(now + self.timeout_s, TIMEOUT, None, (row, now))
                return
            self._send(self.gateway, payload_bytes, (row, now, p, p.spec.compute_ms))
        elif mode == "split":
            n = self.nodes[node]  # type: ignore[index]
            p = self.pools[pool]  # type: ignore[index]
            if not n.up:
                self.at(now + self.timeout_s, TIMEOUT, None, (row, now))
                return
            split = (row, now, p, payload_bytes)
            if n.feature_arrive(split):
                self.at(now + self._feature_s(n, row), FEATURE_END, n, split)
            else:
                self._watch()
        else:
            self.on_done(row, 0.0, None)

    def _edge_start(self, n: Node, req: tuple[int, float, Hashable, str]) -> None:
        i = self._ei
        if i >= len(self._exp):
            self._refill()
            i = 0
        self._ei = i + 1
        now = self.now
        draw = self._exp[i] if self.demand is None else self._exp[i] * self.demand[req[0]]
        ms, warm = n.start(now, req[2], req[3], draw)
        heapq.heappush(self.heap, (now + ms / 1000.0, EDGE_END, next(self.seq), n, req, warm))

    def _feature_end(self, n: Node, req: tuple[int, float, Pool, float]) -> None:
        nxt = n.feature_end()
        if nxt is not None:
            self.at(self.now + self._feature_s(n, nxt[0]), FEATURE_END, n, nxt)  # type: ignore[index]
        row, t0, p, payload = req
        self._send(self.node_link[n.id], payload * self.feature_fraction,
                   (row, t0, p, p.spec.compute_ms * self.compute_fraction))

    def _feature_s(self, n: Node, row: int) -> float:
        """Seconds a feature extraction of request `row` takes on `n`."""
        demand = 1.0 if self.demand is None else self.demand[row]
        return n.feature_ms * self.draw_service() * demand / 1000.0

    def _send(self, link: Link, nbytes: float, token: tuple[int, float, Pool, float]) -> None:
        link.start(self.now, nbytes, token)
        self._schedule(link)
        self._watch()

    def _watch(self) -> None:
        """Make sure a sweep will give up on requests that wait past the deadline."""
        if not self._sweeping:
            self._sweeping = True
            self.at(self.now + SWEEP_S, SWEEP)

    def _sweep(self) -> None:
        """Requests queued or uploading for `deadline_ms` end there: their clients gave up
        (the upload stops; a queued request leaves the queue)."""
        cutoff = self.now - self.deadline_ms / 1000.0
        gone: list[int] = []
        waiting = False
        for link in self.links.values():
            expired = link.expire(self.now, cutoff)
            if expired:
                gone += [tok[0] for tok in expired]  # type: ignore[index]
                self._schedule(link)
            waiting = waiting or link.active > 0
        for n in self.nodes.values():
            for queue in (n.queue, n.fqueue):
                while queue and queue[0][1] <= cutoff:  # type: ignore[index]
                    gone.append(queue.popleft()[0])  # type: ignore[index]
                waiting = waiting or bool(queue)
        for row in gone:
            self.on_done(row, self.deadline_ms, None)
        self._sweeping = waiting
        if waiting:
            self.at(self.now + SWEEP_S, SWEEP)

    def _schedule(self, link: Link) -> None:
        link.stamp += 1
        end = link.next_end()
        if end is not None:
            self.at(end, LINK_END, link, link.stamp)

    def _link_end(self, link: Link, stamp: int) -> None:
        if stamp != link.stamp:
            return  # superseded: a transfer started or ended since this was scheduled
        now = self.now
        for token in link.finish(now):
            row, t0, p, compute = cast(tuple[int, float, Pool, float], token)
            if now < p.partitioned_until or p.full():
                self.at(max(now, t0 + self.timeout_s), TIMEOUT, None, (row, t0))
            else:
                self.computing[row] = p
                p.busy += 1
                if self.demand is not None:
                    compute *= self.demand[row]
                ms = cloud_ms(p.spec.latency_ms, compute, self.draw_jitter())
                self.at(now + ms / 1000.0, CLOUD_END, None, (row, t0))
        self._schedule(link)

    # -- spot preemption ------------------------------------------------------------------------

    def notice(self, pool: Pool, fraction: float, notice_s: float) -> None:
        """A spot reclaim notice: from now the feed offers only (1 - fraction) of the pool;
        `notice_s` later the instances go, with whatever they were computing."""
        pool.available = max(0.0, pool.available * (1.0 - fraction))
        self.at(self.now + notice_s, EVENT, lambda: self._reclaim(pool, fraction))

    def _reclaim(self, pool: Pool, fraction: float) -> None:
        """The reclaimed instances stop: the requests on them end unanswered (no latency)."""
        rows = sorted(r for r, q in self.computing.items() if q is pool)
        caught = pool.reclaim(fraction, len(rows))
        for row in self.rng.choice(rows, size=caught, replace=False).tolist() if caught else []:
            del self.computing[row]
            pool.busy -= 1
            self._dead.add(row)
            self.preempted += 1
            self.on_done(row, float("nan"), None)

    # -- what the router sees ---------------------------------------------------------------

    def feed(self, t_epoch: float) -> FeedSnapshot:
        """What a capacity feed reports now (each window starts over)."""
        now = self.now
        seen = {id(link): link.available_mbps(now) for link in self.links.values()}
        states = {nid: n.state(now, seen[id(self.node_link[nid])])
                  for nid, n in self.nodes.items()}
        prices = {p.spec.instance_type: p.price for p in self.pools.values()}
        left = {pid: p.available for pid, p in self.pools.items() if p.available < 1.0}
        return FeedSnapshot(generated_at=t_epoch, received_at=t_epoch, nodes=states,
                            prices=prices, pools=left)

    def utilization(self) -> dict[str, float]:
        """Busy slot-seconds per node since the last call."""
        return {nid: n.utilization(self.now) for nid, n in self.nodes.items()}
