"""A request's way through the world, written once, as timed actions two drivers schedule.

Theory of operation
-------------------
A request enters with `start_edge`, `start_cloud` or `start_split` as a typed token
(`simulator.jobs`) and ends exactly once, with `on_done(row, ms, warm, status)`. In
between, the steps of `simulator.physics` are taken here and nowhere else: an inference
starts on a free slot or joins its node's queue, and its end hands the slot on; a
split's features are extracted on a feature slot and cross its node's site uplink, a
cloud request's payload the gateway's; the pool answers after `cloud_ms`, unless it is
cut off or full. A node down or a pool cut off answers nothing: the request ends at
`timeout_ms`. While anything waits in a queue or on an uplink, a sweep every SWEEP_S
gives up on what has waited `deadline_ms`. A spot reclaim ends what the instances that
went held.

Whatever happens later is an action: `at(t, kind, a, b)` asks the driver to call
`fire(kind, a, b)` at time t, `now` set to it; the lifecycle keeps no clock and no
timers. The simulator's driver (`simulator.world.World`) keeps actions on a heap in
simulated time, ties broken by (time, kind, seq); the live twin's
(`simulator.live.realtime.LiveWorld`) on asyncio timers. Random draws come from the
world's seeded numpy Generator in blocks: the same scenario and seed, the same run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import Policy
from simulator.jobs import EdgeJob, Job, PoolJob
from simulator.physics import Node, cloud_ms
from simulator.pools import Pool
from simulator.scenario import WorldConfig
from simulator.sites import Uplink, site_links

# action kinds, in the order the simulator breaks ties in time
EDGE_END, FEATURE_END, LINK_END, CLOUD_END, TIMEOUT, SWEEP, SAMPLE, REFRESH, EVENT = range(9)
SWEEP_S = 1.0  # how often requests past the deadline are given up on
BLOCK = 1 << 16  # random draws made at once
# how a request ended, as the live twin's upstream answers it
OK, GAVE_UP, LOST, TIMED_OUT = 200, 408, 502, 504

Done = Callable[[int, float, bool | None, int], None]
EdgeNode = Node[EdgeJob, PoolJob]
J = TypeVar("J", bound=Job)


def _unheard(row: int, ms: float, warm: bool | None, status: int) -> None:
    """The `on_done` of a world nobody listens to yet."""


class Lifecycle:
    """Nodes, pools and site uplinks, and every rule of a request's way through them;
    a driver implements `at` and sets `now` (module docstring)."""

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
        self.nodes: dict[str, EdgeNode] = {
            n.id: Node(n, warm_keys=cfg.warm_keys_per_node, warm_speedup=cfg.warm_speedup,
                       contention=cfg.contention, vram_idle=cfg.vram_idle,
                       vram_busy=cfg.vram_busy)
            for n in policy.nodes}
        self.pools = {p.id: Pool(p) for p in policy.pools}
        self.links, self.node_link, self.gateway = site_links(policy, cfg)
        self.feature_fraction = policy.split.payload_fraction
        self.compute_fraction = policy.split.cloud_compute_fraction
        self.on_done: Done = _unheard
        self.computing: dict[int, Pool] = {}  # row -> the pool computing it now
        self.preempted = 0  # requests caught in flight when spot capacity was reclaimed
        self._dead: set[int] = set()  # rows preempted whose pending actions are ignored
        self.feed_late_until = -1.0  # no feed reaches the router before then (feed_delay)
        self._exp: list[float] = []
        self._ln: list[float] = []
        self._ei = self._li = 0
        # per row, a unit-mean service demand (a trace's tokens); None: every request alike
        self.demand: list[float] | None = None

    def at(self, t: float, kind: int, a: Any = None, b: Any = None) -> None:
        """Have `fire(kind, a, b)` called at time `t` (the driver's)."""
        raise NotImplementedError

    def fire(self, kind: int, a: Any, b: Any) -> None:
        """Carry out an action whose time has come; `now` is that time."""
        if kind == EDGE_END:
            self.edge_end(a, b)
        elif kind == LINK_END:
            self._link_end(a, b)
        elif kind == FEATURE_END:
            self._feature_end(a, b)
        elif kind == CLOUD_END:
            self._cloud_end(b)
        elif kind == TIMEOUT:
            self.on_done(b.row, min((self.now - b.t0) * 1000.0, self.deadline_ms), None,
                         TIMED_OUT)
        elif kind == SWEEP:
            self._sweep()
        else:  # SAMPLE, REFRESH, EVENT: a callback
            a()

    # -- random draws -----------------------------------------------------------------------

    def draw_service(self) -> float:
        """One unit-mean service-time factor (gamma with the world's `service_cv`)."""
        i = self._ei
        if i >= len(self._exp):
            self._exp, i = self.rng.gamma(self.shape, 1.0 / self.shape, BLOCK).tolist(), 0
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

    def start_edge(self, row: int, node_id: str, key: Hashable, quality: str) -> None:
        """An inference of `key` at `quality` on the node, queued while its slots are busy."""
        n = self.nodes[node_id]
        if not n.up:
            self._unanswered(row)
            return
        job = EdgeJob(row, self.now, key, quality)
        if n.busy < n.slots:
            self._serve(n, job)
        else:
            n.queue.append(job)
            self._watch()

    def start_cloud(self, row: int, pool_id: str, nbytes: float) -> None:
        """A whole payload over the gateway site's uplink, then the pool's answer."""
        p = self.pools[pool_id]
        if self.now < p.partitioned_until:
            self._unanswered(row)
            return
        self._send(self.gateway, nbytes, PoolJob(row, self.now, p, nbytes, p.spec.compute_ms))

    def start_split(self, row: int, node_id: str, pool_id: str, nbytes: float) -> None:
        """Features on a feature slot of the node, over its site's uplink, inferred in the pool."""
        n, p = self.nodes[node_id], self.pools[pool_id]
        if not n.up:
            self._unanswered(row)
            return
        job = PoolJob(row, self.now, p, nbytes, p.spec.compute_ms * self.compute_fraction)
        if n.feature_arrive(job):
            self.at(self.now + self._feature_s(n, row), FEATURE_END, n, job)
        else:
            self._watch()

    def _unanswered(self, row: int) -> None:
        """Request `row` reached a node that is down or a pool cut off: it ends at the timeout."""
        self.at(self.now + self.timeout_s, TIMEOUT, None, Job(row, self.now))

    def _serve(self, n: EdgeNode, job: EdgeJob) -> None:
        """Start `job` on a free slot of `n`; it ends after the service time the node gives."""
        draw = self.draw_service()
        if self.demand is not None:
            draw *= self.demand[job.row]
        ms, job.warm = n.start(self.now, job.key, job.quality, draw)
        self.at(self.now + ms / 1000.0, EDGE_END, n, job)

    def edge_end(self, n: EdgeNode, job: EdgeJob) -> None:
        """An inference ended: its slot goes to the next in line, and it ends."""
        now = self.now
        ms = (now - job.t0) * 1000.0
        nxt = n.end(now, job.quality, ms)
        if nxt is not None:
            self._serve(n, nxt)
        # past the deadline its client has given up (the node's work is lost)
        self.on_done(job.row, ms if ms < self.deadline_ms else self.deadline_ms, job.warm, OK)

    def _feature_end(self, n: EdgeNode, job: PoolJob) -> None:
        nxt = n.feature_end()
        if nxt is not None:
            self.at(self.now + self._feature_s(n, nxt.row), FEATURE_END, n, nxt)
        self._send(self.node_link[n.id], job.nbytes * self.feature_fraction, job)

    def _feature_s(self, n: EdgeNode, row: int) -> float:
        """Seconds a feature extraction of request `row` takes on `n`."""
        demand = 1.0 if self.demand is None else self.demand[row]
        return n.feature_ms * self.draw_service() * demand / 1000.0

    def _send(self, link: Uplink, nbytes: float, job: PoolJob) -> None:
        link.start(self.now, nbytes, job)
        self._schedule(link)
        self._watch()

    def _schedule(self, link: Uplink) -> None:
        """An action at the link's next end; any earlier one is superseded (its stamp)."""
        link.stamp += 1
        end = link.next_end()
        if end is not None:
            self.at(end, LINK_END, link, link.stamp)

    def _link_end(self, link: Uplink, stamp: int) -> None:
        if stamp != link.stamp:
            return  # superseded: a transfer started or ended since this was scheduled
        now = self.now
        for job in link.finish(now):
            p = job.pool
            if now < p.partitioned_until or p.full():
                self.at(max(now, job.t0 + self.timeout_s), TIMEOUT, None, job)
                continue
            self.computing[job.row] = p
            p.busy += 1
            compute = job.compute_ms if self.demand is None else \
                job.compute_ms * self.demand[job.row]
            ms = cloud_ms(p.spec.latency_ms, compute, self.draw_jitter())
            self.at(now + ms / 1000.0, CLOUD_END, None, job)
        self._schedule(link)

    def _cloud_end(self, job: PoolJob) -> None:
        pool = self.computing.pop(job.row, None)
        if pool is not None:
            pool.busy -= 1
        elif job.row in self._dead:  # caught by a reclaim, already ended there
            self._dead.discard(job.row)
            return
        self.on_done(job.row, min((self.now - job.t0) * 1000.0, self.deadline_ms), None, OK)

    # -- the deadline -----------------------------------------------------------------------

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
                gone += [job.row for job in expired]
                self._schedule(link)
            waiting = waiting or link.active > 0
        for n in self.nodes.values():
            gone += _given_up(n.queue, cutoff) + _given_up(n.fqueue, cutoff)
            waiting = waiting or bool(n.queue) or bool(n.fqueue)
        for row in gone:
            self.on_done(row, self.deadline_ms, None, GAVE_UP)
        self._sweeping = waiting
        if waiting:
            self.at(self.now + SWEEP_S, SWEEP)

    # -- spot preemption --------------------------------------------------------------------

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
            self.on_done(row, float("nan"), None, LOST)

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


def _given_up(queue: deque[J], cutoff: float) -> list[int]:
    """Take the requests queued at or before `cutoff` off the front of `queue`: their rows."""
    rows = []
    while queue and queue[0].t0 <= cutoff:
        rows.append(queue.popleft().row)
    return rows
