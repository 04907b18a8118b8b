"""The simulator's world advanced in real time: asyncio timers where `simulator.world` has a heap.

Theory of operation
-------------------
`LiveWorld` is the world's lifecycle (`simulator.lifecycle`: its nodes, pools, site
uplinks and seeded random draws, built exactly as the simulator builds them, and
every rule of a request's way through them) with a second driver: the clock is the
event loop's, `origin` the loop time of scenario t=0, `now` is brought to the loop's
time before every call into the lifecycle, and each action it asks for is a timer at
`origin + t`. So an inference queues, is served, hands its slot on; a transfer shares
its uplink; a pool answers or is full; a node down or a pool cut off ends the
request at `timeout_ms` (status 504); a request still queued or uploading after
`deadline_ms` is given up (408); a request a spot reclaim caught is lost (502) —
the same rules as the simulator's, not a copy of them.

Nothing here blocks: each request is one coroutine awaiting a future that the
lifecycle's end of it resolves. Lateness of the loop shows up as real latency, which
is what the upstream measures and reports; how late the request's own timers fired
is reported with it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Hashable
from typing import Any, NamedTuple

import numpy as np

from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import Policy
from simulator.lifecycle import CLOUD_END, EDGE_END, FEATURE_END, EdgeNode, Lifecycle
from simulator.run import apply_world_event
from simulator.scenario import WorldConfig

LATE_KINDS = (EDGE_END, FEATURE_END, CLOUD_END)  # a request's own timers: service, answer


class Outcome(NamedTuple):
    """How one request ended in the world."""

    status: int  # OK, TIMED_OUT, GAVE_UP or LOST (simulator.lifecycle)
    warm: bool | None = None  # edge inferences: whether the key was warm on the node
    late_ms: float = 0.0  # how much later than the model said its timers fired (the loop's lag)


class LiveWorld(Lifecycle):
    """The world's lifecycle on the event loop's clock: `edge`, `split` and `cloud` are
    awaited."""

    def __init__(self, policy: Policy, config: WorldConfig, seed: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        """The world the simulator would build for this scenario's seed; t=0 is now."""
        super().__init__(policy, np.random.default_rng(seed + 1), config)
        self.loop = loop
        self.origin = loop.time()
        self.on_done = self._ended
        self._rows = itertools.count()  # a row number per request, as the simulator's
        self._waiting: dict[int, asyncio.Future[Outcome]] = {}
        self._late: dict[int, float] = {}  # per row: ms its timers fired past their time
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._ids = itertools.count()
        self.peak: dict[str, int] = {}  # per node: most inferences it held at once
        self.over: dict[str, int] = {}  # per node: inferences that came with every slot busy

    def tick(self) -> float:
        """Scenario time now (s); the world's clock is brought to it."""
        self.now = self.loop.time() - self.origin
        return self.now

    def start_clock(self, origin: float) -> None:
        """Make loop time `origin` the scenario's t=0."""
        self.origin = origin

    def forget_every(self, every_s: float) -> None:
        """Start the feed windows over every `every_s`, as a feed reader would: a world
        whose feed nobody reads keeps its memory flat however long it runs."""
        self.feed(time.time())
        self.loop.call_later(every_s, self.forget_every, every_s)

    def stop(self) -> None:
        """Cancel every timer (the process is going away)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def at(self, t: float, kind: int, a: Any = None, b: Any = None) -> None:
        """A timer at scenario time `t` that fires the action."""
        k = next(self._ids)
        self._timers[k] = self.loop.call_at(self.origin + t, self._fire, k, t, kind, a, b)

    def _fire(self, k: int, t: float, kind: int, a: Any, b: Any) -> None:
        del self._timers[k]
        now = self.tick()
        if kind in LATE_KINDS:
            self._late[b.row] = self._late.get(b.row, 0.0) + max(0.0, (now - t) * 1000.0)
        self.fire(kind, a, b)

    # -- what the router and the scenario see -----------------------------------------------

    def feed(self, t_epoch: float) -> FeedSnapshot:
        """The feed the simulator would take now (each window starts over)."""
        self.tick()
        return super().feed(t_epoch)

    def apply(self, kind: str, args: dict[str, Any]) -> bool:
        """Apply a scenario event to the world now; False if it is not a world event."""
        self.tick()
        return apply_world_event(kind, args, self)

    # -- requests ---------------------------------------------------------------------------

    async def edge(self, node_id: str, key: Hashable, quality: str) -> Outcome:
        """One inference of `key` at `quality` on the node, queued while its slots are busy."""
        n = self.nodes[node_id]
        if n.up:
            self._count(node_id, n)
        row, done = self._enter()
        self.start_edge(row, node_id, key, quality)
        return await done

    async def cloud(self, pool_id: str, nbytes: float) -> Outcome:
        """A whole payload over the gateway site's uplink, then the pool's answer."""
        row, done = self._enter()
        self.start_cloud(row, pool_id, nbytes)
        return await done

    async def split(self, node_id: str, pool_id: str, nbytes: float) -> Outcome:
        """Features on a feature slot of the node, over its site's uplink, inferred in the pool."""
        row, done = self._enter()
        self.start_split(row, node_id, pool_id, nbytes)
        return await done

    def _enter(self) -> tuple[int, asyncio.Future[Outcome]]:
        """A row for a new request and the future its end resolves; the clock brought to now."""
        row = next(self._rows)
        done = self._waiting[row] = self.loop.create_future()
        self.tick()
        return row, done

    def _ended(self, row: int, ms: float, warm: bool | None, status: int) -> None:
        """The lifecycle ended request `row` (its awaiting client may have gone since)."""
        late_ms = self._late.pop(row, 0.0)
        done = self._waiting.pop(row, None)
        if done is not None and not done.done():
            done.set_result(Outcome(status, warm, late_ms))

    def _count(self, node_id: str, n: EdgeNode) -> None:
        held = n.busy + len(n.queue) + 1
        self.peak[node_id] = max(self.peak.get(node_id, 0), held)
        self.over[node_id] = self.over.get(node_id, 0) + (n.busy >= n.slots)

    def concurrency(self) -> dict[str, dict[str, int]]:
        """Per node, its own count: slots, most inferences held at once, arrivals over slots."""
        return {nid: {"slots": n.slots, "peak_inflight": self.peak.get(nid, 0),
                      "over_slots": self.over.get(nid, 0)}
                for nid, n in self.nodes.items()}
