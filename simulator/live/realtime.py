"""The simulator's world advanced in real time: asyncio timers where `simulator.world` has a heap.

Theory of operation
-------------------
`LiveWorld` holds a `simulator.world.World` (its nodes, pools, site uplinks and
seeded random draws, built exactly as the simulator builds them) and drives it
the way `simulator.physics`'s docstring says a driver does: the clock is the event
loop's, `origin` the loop time of scenario t=0, and every call into the model
passes the current t. An inference calls `Node.start` on a free slot (or joins the
node's queue) and a timer calls `Node.end` after the service time the model
returned, handing the slot to the queued request next. A transfer calls
`Link.start`; one timer per link is kept at `Link.next_end()` and moved on every
start or end. A pool answers after `cloud_ms` with the world's jitter. A node
that is down or a pool cut off answers nothing: the request ends at `timeout_ms`
(status 504). A sweep every second gives up on requests still queued or uploading
after `deadline_ms` (status 408), as the simulator's sweep does.

Nothing here blocks: each request is one coroutine awaiting futures that timers
resolve. Lateness of the loop shows up as real latency, which is what the
upstream measures and reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any, NamedTuple

import numpy as np

from router.core.feed import FeedSnapshot
from router.core.model import Policy
from simulator.physics import Link, Node, cloud_ms
from simulator.pools import Pool
from simulator.run import apply_world_event
from simulator.scenario import WorldConfig
from simulator.world import SWEEP_S, World

OK, GAVE_UP, TIMED_OUT = 200, 408, 504


class Outcome(NamedTuple):
    """How one request ended in the world."""

    status: int  # OK, TIMED_OUT (node down, pool cut off) or GAVE_UP (past the deadline)
    warm: bool | None = None  # edge inferences: whether the key was warm on the node
    late_ms: float = 0.0  # how much later than the model said its timers fired (the loop's lag)


class LiveWorld:
    """A `World` on the event loop's clock: `edge`, `split` and `cloud` are awaited."""

    def __init__(self, policy: Policy, config: WorldConfig, seed: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        """The world the simulator would build for this scenario's seed; t=0 is now."""
        self.world = World(policy, np.random.default_rng(seed + 1), config)
        self.loop = loop
        self.origin = loop.time()
        self.timeout_s = config.timeout_ms / 1000.0
        self.deadline_s = config.deadline_ms / 1000.0
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self.peak: dict[str, int] = {}  # per node: most inferences it held at once
        self.over: dict[str, int] = {}  # per node: inferences that came with every slot busy
        self._sweeper: asyncio.TimerHandle | None = None

    def tick(self) -> float:
        """Scenario time now (s); the world's clock is brought to it."""
        t = self.loop.time() - self.origin
        self.world.now = t
        return t

    def start_clock(self, origin: float) -> None:
        """Make loop time `origin` the scenario's t=0 and start the deadline sweep."""
        self.origin = origin
        if self._sweeper is None:
            self._sweeper = self.loop.call_at(origin + SWEEP_S, self._sweep)

    def stop(self) -> None:
        """Cancel every timer (the process is going away)."""
        for handle in [*self._timers.values(), self._sweeper]:
            if handle is not None:
                handle.cancel()

    # -- what the router and the scenario see -----------------------------------------------

    def feed(self, wall: float) -> FeedSnapshot:
        """The feed the simulator would take now (each window starts over)."""
        self.tick()
        return self.world.feed(wall)

    def apply(self, kind: str, args: dict[str, Any]) -> bool:
        """Apply a scenario event to the world now; False if it is not a world event."""
        self.tick()
        return apply_world_event(kind, args, self.world)

    # -- requests ---------------------------------------------------------------------------

    async def edge(self, node_id: str, key: Hashable, quality: str) -> Outcome:
        """One inference of `key` at `quality` on the node, queued while its slots are busy."""
        n = self.world.nodes[node_id]
        t0 = self.tick()
        if not n.up:
            await asyncio.sleep(self.timeout_s)
            return Outcome(TIMED_OUT)
        done: asyncio.Future[Outcome] = self.loop.create_future()
        req = (done, t0, key, quality)
        self._count(node_id, n)
        if n.busy < n.slots:
            self._edge_start(n, req)
        else:
            n.queue.append(req)
        return await done

    def _count(self, node_id: str, n: Node) -> None:
        held = n.busy + len(n.queue) + 1
        self.peak[node_id] = max(self.peak.get(node_id, 0), held)
        self.over[node_id] = self.over.get(node_id, 0) + (n.busy >= n.slots)

    def concurrency(self) -> dict[str, dict[str, int]]:
        """Per node, its own count: slots, most inferences held at once, arrivals over slots."""
        return {nid: {"slots": n.slots, "peak_inflight": self.peak.get(nid, 0),
                      "over_slots": self.over.get(nid, 0)}
                for nid, n in self.world.nodes.items()}

    def _edge_start(self, n: Node, req: tuple[Any, float, Hashable, str]) -> None:
        ms, warm = n.start(self.tick(), req[2], req[3], self.world.draw_service())
        due = self.loop.time() + ms / 1000.0
        self.loop.call_at(due, self._edge_end, n, req, warm, due)

    def _edge_end(self, n: Node, req: tuple[Any, float, Hashable, str], warm: bool,
                  due: float) -> None:
        late_ms = (self.loop.time() - due) * 1000.0
        now = self.tick()
        done, t0, _, quality = req
        nxt = n.end(now, quality, (now - t0) * 1000.0)
        if nxt is not None:
            self._edge_start(n, nxt)  # type: ignore[arg-type]
        if not done.done():
            done.set_result(Outcome(OK, warm, late_ms))

    async def cloud(self, pool_id: str, nbytes: float) -> Outcome:
        """A whole payload over the gateway site's uplink, then the pool's answer."""
        p = self.world.pools[pool_id]
        t0 = self.tick()
        if t0 < p.partitioned_until:
            await asyncio.sleep(self.timeout_s)
            return Outcome(TIMED_OUT)
        return await self._to_pool(self.world.gateway, nbytes, p, p.spec.compute_ms, t0)

    async def split(self, node_id: str, pool_id: str, nbytes: float) -> Outcome:
        """Features on a feature slot of the node, over its site's uplink, inferred in the pool."""
        w = self.world
        n, p = w.nodes[node_id], w.pools[pool_id]
        t0 = self.tick()
        if not n.up:
            await asyncio.sleep(self.timeout_s)
            return Outcome(TIMED_OUT)
        turn: asyncio.Future[bool] = self.loop.create_future()
        if not n.feature_arrive((turn, t0)) and not await turn:
            return Outcome(GAVE_UP)
        try:
            late_ms = await self._sleep(n.feature_ms * w.draw_service() / 1000.0)
        finally:
            nxt = n.feature_end()
            while nxt is not None and nxt[0].done():  # type: ignore[index]
                nxt = n.feature_end()  # its client went away while it queued: next one
            if nxt is not None:
                nxt[0].set_result(True)  # type: ignore[index]  # its turn on this slot
        out = await self._to_pool(w.node_link[n.id], nbytes * w.feature_fraction, p,
                                  p.spec.compute_ms * w.compute_fraction, t0)
        return out._replace(late_ms=out.late_ms + late_ms)

    async def _to_pool(self, link: Link, nbytes: float, p: Pool, compute_ms: float,
                       t0: float) -> Outcome:
        moved: asyncio.Future[bool] = self.loop.create_future()
        link.start(self.tick(), nbytes, (moved, t0))
        self._schedule(link)
        if not await moved:
            return Outcome(GAVE_UP)
        now = self.tick()
        if now < p.partitioned_until:
            await asyncio.sleep(max(0.0, t0 + self.timeout_s - now))
            return Outcome(TIMED_OUT)
        late_ms = await self._sleep(cloud_ms(p.spec.latency_ms, compute_ms,
                                             self.world.draw_jitter()) / 1000.0)
        return Outcome(OK, None, late_ms)

    async def _sleep(self, seconds: float) -> float:
        """Sleep `seconds`; how many ms later than asked the loop woke this coroutine."""
        due = self.loop.time() + seconds
        await asyncio.sleep(seconds)
        return max(0.0, (self.loop.time() - due) * 1000.0)

    # -- links and the deadline -------------------------------------------------------------

    def _schedule(self, link: Link) -> None:
        """Keep the link's one timer at its next end."""
        old = self._timers.pop(id(link), None)
        if old is not None:
            old.cancel()
        end = link.next_end()
        if end is not None:
            self._timers[id(link)] = self.loop.call_at(self.origin + end, self._link_end, link)

    def _link_end(self, link: Link) -> None:
        self._timers.pop(id(link), None)
        for token in link.finish(self.tick()):
            moved = token[0]  # type: ignore[index]
            if not moved.done():
                moved.set_result(True)
        self._schedule(link)

    def _sweep(self) -> None:
        """Give up on requests queued or uploading since before the deadline (as the
        simulator's sweep does); runs every SWEEP_S."""
        now = self.tick()
        cutoff = now - self.deadline_s
        for link in self.world.links.values():
            expired = link.expire(now, cutoff)
            for token in expired:
                _settle(token[0], False)  # type: ignore[index]
            if expired:
                self._schedule(link)
        for n in self.world.nodes.values():
            while n.queue and n.queue[0][1] <= cutoff:  # type: ignore[index]
                _settle(n.queue.popleft()[0], Outcome(GAVE_UP))  # type: ignore[index]
            while n.fqueue and n.fqueue[0][1] <= cutoff:  # type: ignore[index]
                _settle(n.fqueue.popleft()[0], False)  # type: ignore[index]
        self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)


def _settle(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)
