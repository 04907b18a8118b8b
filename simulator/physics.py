"""The world's physics, free of any clock: nodes, warm keys, shared uplinks, VRAM, cloud.

Theory of operation
-------------------
Everything here is a plain state machine that the caller advances with its own
`now` (seconds) and its own random draws, so the heap-ordered simulator
(`simulator.world`) and the live twin's real-time one can both drive it and agree.
Nothing reads a clock, sleeps or draws a random number.

Edge node. `slots` inference servers and a FIFO queue, and apart from them
`feature_slots` servers (with their own queue) for a split's feature
extraction. An inference of key k at quality q that starts while n requests
are in service (itself included) takes

    base_latency_ms / compute_score × LATENCY_FACTOR[q]
        × (1 - warm_speedup if k is warm else 1)
        × (1 + contention × (n - 1) / max(1, slots - 1))  × u

with u a unit-mean draw (gamma with the world's `service_cv`; the caller
draws it): with service_cv 1 (exponential) and contention 0 a node is an
M/M/c queue. A key is warm on a node if it is among the last `warm_keys_per_node`
distinct keys the node started serving (LRU); serving it makes it warm.

VRAM. A running request holds memory in proportion to QUALITY_MEMORY[q]; the
node's VRAM use is vram_idle (the loaded weights) plus (vram_busy -
vram_idle) × Σ QUALITY_MEMORY / slots: vram_busy with every slot busy at
full quality. The feed reports its time average over the window, so
degrading quality lowers it — the feedback the router's hysteresis is for.

Shared uplink. A site's uplink carries concurrent transfers under processor
sharing: with n transfers each gets mbps / n. Virtual time V (bytes delivered
to each active transfer) advances at rate / n; a transfer of b bytes started
at V0 ends when V reaches V0 + b, so the next end is known in O(1) and a
start or end costs O(log n). Available bandwidth, as the feed reports it, is
mbps / (1 + mean concurrent transfers over the window): what a new transfer
would have had.

Cloud. A pool answers after (round trip + compute) × a log-normal jitter;
its payload first crosses an uplink (the gateway site's, or the node site's
for a split's features).

Driving it (what `simulator.lifecycle` does, for the simulator's heap and the
live twin's timers alike): an inference arriving at a node with `busy < slots`
calls `start(now, key, quality, draw)` and ends after the returned
milliseconds with `end(now, quality, latency_ms)`, which hands back the queued
request to start next; otherwise it joins `node.queue`. Features take
`feature_arrive`/`feature_end` the same way. A transfer calls
`link.start(now, nbytes, token)`, and whenever `link.next_end()` comes (or
after any start), `link.finish(now)` names the transfers done. Every
`refresh_seconds`, `node.state(now, link.available_mbps(now))` is the node's
feed entry.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

from router.core.feedsnapshot import NodeState
from router.core.policy import LATENCY_FACTOR, EdgeNode

QUALITY_MEMORY = {"full": 1.0, "constrained": 0.75, "minimal": 0.5}
FACTOR = dict(LATENCY_FACTOR)  # plain dicts: read once or twice per request
MEMORY = dict(QUALITY_MEMORY)
MIN_P95_SAMPLES = 5  # fewer completions in a window: the feed states no p95

T = TypeVar("T")  # a transfer's token (the driver's)
Q = TypeVar("Q")  # a queued inference's token
F = TypeVar("F")  # a queued feature extraction's token


class WarmKeys:
    """The last `capacity` distinct keys a node served (LRU)."""

    __slots__ = ("capacity", "keys")

    def __init__(self, capacity: int) -> None:
        """Start cold."""
        self.capacity = capacity
        self.keys: OrderedDict[Hashable, None] = OrderedDict()

    def touch(self, key: Hashable) -> bool:
        """Serve `key`: whether it was warm; it is warm (most recent) afterwards."""
        keys = self.keys
        if key in keys:
            keys.move_to_end(key)
            return True
        if self.capacity > 0:
            keys[key] = None
            if len(keys) > self.capacity:
                keys.popitem(last=False)
        return False

    def __len__(self) -> int:
        """Keys warm now."""
        return len(self.keys)


class Link(Generic[T]):
    """A shared uplink under processor sharing (see the module docstring); tokens of type T."""

    __slots__ = ("_heap", "_seq", "area", "last", "mbps", "rate", "since", "stamp", "vtime")

    def __init__(self, mbps: float, now: float = 0.0) -> None:
        """An idle link of `mbps` megabits per second."""
        self.mbps = mbps
        self.rate = mbps * 1e6 / 8.0  # bytes per second
        self.vtime = 0.0
        self.last = now
        self.since = now  # start of the feed window
        self.area = 0.0  # ∫ active transfers dt over the window
        self._heap: list[tuple[float, int, T, float]] = []  # (end V, seq, token, start)
        self._seq = 0
        self.stamp = 0  # the driver's: bumped whenever the next end may have moved

    @property
    def active(self) -> int:
        """Transfers in progress."""
        return len(self._heap)

    def _advance(self, now: float) -> None:
        n = len(self._heap)
        if n and now > self.last:
            self.vtime += (now - self.last) * self.rate / n
            self.area += (now - self.last) * n
        self.last = max(self.last, now)

    def start(self, now: float, nbytes: float, token: T) -> None:
        """Begin moving `nbytes` for `token`."""
        self._advance(now)
        self._seq += 1
        heapq.heappush(self._heap, (self.vtime + max(nbytes, 0.0), self._seq, token, now))

    def next_end(self) -> float | None:
        """When the next transfer ends if nothing starts before (None: idle)."""
        if not self._heap:
            return None
        left = self._heap[0][0] - self.vtime
        return self.last + max(left, 0.0) * len(self._heap) / self.rate

    def finish(self, now: float) -> list[T]:
        """Advance to `now`; the tokens whose transfers have ended, in order."""
        self._advance(now)
        heap = self._heap
        done: list[T] = []
        # a transfer due now may sit a rounding error above vtime
        limit = self.vtime + 1e-9 * max(1.0, abs(self.vtime))
        while heap and heap[0][0] <= limit:
            done.append(heapq.heappop(heap)[2])
        return done

    def expire(self, now: float, cutoff: float) -> list[T]:
        """Stop every transfer started at or before `cutoff` (its client gave up); their tokens."""
        self._advance(now)
        keep: list[tuple[float, int, T, float]] = []
        gone: list[tuple[float, int, T, float]] = []
        for entry in self._heap:
            (gone if entry[3] <= cutoff else keep).append(entry)
        if gone:
            heapq.heapify(keep)
            self._heap = keep
        return [entry[2] for entry in sorted(gone)]

    def available_mbps(self, now: float) -> float:
        """Bandwidth a new transfer would have had over the window; starts a new window."""
        self._advance(now)
        span = now - self.since
        mean = self.area / span if span > 0 else float(len(self._heap))
        self.since, self.area = now, 0.0
        return self.mbps / (1.0 + mean)


def transfer_s(nbytes: float, mbps: float) -> float:
    """Seconds to move `nbytes` alone over `mbps`."""
    return nbytes * 8.0 / (mbps * 1e6)


class Node(Generic[Q, F]):
    """One edge node's physics (module docstring): servers, queues, warm keys, VRAM; the
    driver's tokens of type Q wait for an inference slot, of type F for a feature slot."""

    __slots__ = ("area_t", "base_ms", "busy", "busy_area", "crowd", "fbusy", "feature_ms",
                 "fqueue", "id", "mem", "mem_area", "queue", "score", "since", "slots", "spec",
                 "unit_ms", "up", "vram_busy", "vram_idle", "warm", "warm_factor", "window")

    def __init__(self, spec: EdgeNode, *, warm_keys: int, warm_speedup: float,
                 contention: float, vram_idle: float, vram_busy: float) -> None:
        """A node of `spec`, idle, cold and up."""
        self.spec = spec
        self.id = spec.id
        self.slots = spec.slots
        self.base_ms = spec.base_latency_ms
        self.feature_ms = spec.feature_ms
        self.score = 1.0
        self.unit_ms = self.base_ms  # base_ms / score: the cold, lone, full-quality mean
        self.up = True
        self.busy = 0  # inferences in service
        self.queue: deque[Q] = deque()
        self.fbusy = 0  # feature extractions in service
        self.fqueue: deque[F] = deque()
        self.warm = WarmKeys(warm_keys)
        self.warm_factor = 1.0 - warm_speedup
        self.crowd = contention / (spec.slots - 1 if spec.slots > 1 else 1)
        self.vram_idle, self.vram_busy = vram_idle, vram_busy
        self.mem = 0.0  # Σ QUALITY_MEMORY of inferences in service
        self.area_t = 0.0  # when the integrals below were last brought up to date
        self.since = 0.0  # start of the feed window
        self.mem_area = 0.0  # ∫ mem dt over the window
        self.busy_area = 0.0  # ∫ busy dt since the last sample (utilization)
        self.window: list[float] = []  # latencies, full-quality equivalent, this window

    def throttle(self, score: float) -> None:
        """The node's compute score changes (thermal throttling, or back to normal)."""
        self.score = score
        self.unit_ms = self.base_ms / max(score, 1e-3)

    def _integrate(self, now: float) -> None:
        dt = now - self.area_t
        if dt > 0:
            self.mem_area += self.mem * dt
            self.busy_area += self.busy * dt
            self.area_t = now

    def service_ms(self, quality: str, warm: bool, draw: float) -> float:
        """Service time of one inference starting now, `busy` counting it (`draw`: mean 1)."""
        return (self.unit_ms * FACTOR[quality] * (1.0 + self.crowd * (self.busy - 1))
                * (self.warm_factor if warm else 1.0) * draw)

    def start(self, now: float, key: Hashable, quality: str, draw: float) -> tuple[float, bool]:
        """Start serving `key` at `quality` on a free slot: (service ms, whether it was warm).

        One call does the whole start (the simulator makes one per request).
        """
        dt = now - self.area_t
        if dt > 0:
            self.mem_area += self.mem * dt
            self.busy_area += self.busy * dt
            self.area_t = now
        busy = self.busy = self.busy + 1
        self.mem += MEMORY[quality]
        keys = self.warm.keys  # WarmKeys.touch, inline: this runs once per request
        warm = key in keys
        if warm:
            keys.move_to_end(key)
        elif self.warm.capacity > 0:
            keys[key] = None
            if len(keys) > self.warm.capacity:
                keys.popitem(last=False)
        ms = self.unit_ms * FACTOR[quality] * (1.0 + self.crowd * (busy - 1)) * draw
        return (ms * self.warm_factor if warm else ms), warm

    def end(self, now: float, quality: str, latency_ms: float) -> Q | None:
        """An inference ended after `latency_ms`; the queued token to start next, if any."""
        dt = now - self.area_t
        if dt > 0:
            self.mem_area += self.mem * dt
            self.busy_area += self.busy * dt
            self.area_t = now
        self.busy -= 1
        self.mem -= MEMORY[quality]
        self.window.append(latency_ms / FACTOR[quality])
        return self.queue.popleft() if self.queue else None

    def feature_arrive(self, token: F) -> bool:
        """A split's extraction arrives: True if a feature slot is free, else it queues."""
        if self.fbusy < self.spec.feature_slots:
            self.fbusy += 1
            return True
        self.fqueue.append(token)
        return False

    def feature_end(self) -> F | None:
        """An extraction ended; the queued one that takes its slot, if any."""
        if self.fqueue:
            return self.fqueue.popleft()
        self.fbusy -= 1
        return None

    def utilization(self, now: float) -> float:
        """Busy slot-seconds since the last call (which starts a new period)."""
        self._integrate(now)
        area, self.busy_area = self.busy_area, 0.0
        return area

    def state(self, now: float, uplink_mbps: float | None) -> NodeState:
        """What this node's feed entry says now; starts a new window."""
        self._integrate(now)
        span = now - self.since
        mem = self.mem_area / span if span > 0 else self.mem
        vram = self.vram_idle + (self.vram_busy - self.vram_idle) * mem / self.slots
        window = self.window
        state = NodeState(
            healthy=self.up, compute_score=self.score, slots=self.slots,
            inflight=self.busy + len(self.queue),
            vram_used_fraction=min(1.0, max(0.0, vram)),
            p95_ms=percentile(window, 95.0) if len(window) >= MIN_P95_SAMPLES else None,
            uplink_mbps=uplink_mbps)
        self.window = []
        self.since, self.mem_area = now, 0.0
        return state


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default), without numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def cloud_ms(latency_ms: float, compute_ms: float, jitter: float) -> float:
    """A pool's answer time once the payload is there: (round trip + compute) × jitter."""
    return (latency_ms + compute_ms) * jitter
