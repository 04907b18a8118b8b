"""The capacity keeper: one thread that keeps this router's slot leases in step with the store.

Theory of operation
-------------------
The request path admits onto a node only within `tracker.held` (the walk in
`router.core.pick`, the pool check in `router.core.plan`) and never calls the
store. Every `period` seconds this thread:

1. reads, per leased resource (`router.core.capacity.resources` of the
   snapshot in force), what is in flight, what is held and the requests
   that found no leased room since last time, and turns them into
   (capacity, keep, demand);
2. makes one call to the store for all of them (`router.stores.capacity`);
3. sets `held` to the new lease, or to the fair target if that is less.

A lease is good until `ttl − margin` seconds after the call that renewed it
was sent (the store lets it lapse `ttl` after it answered, later). When the
store does not answer, the router keeps what it holds until then, and after it
admits on the lesser of that and its *safe share*, floor(capacity / N), N the
fleet's size when the store last answered (a router that never reached the
store: the safe share with N = `routers`, default 2). The store does not count
time in which no router reached it towards any heartbeat (`capacity_lua`), so
if every router loses the store together, the leases it holds still bound them
all when it answers again: 0 over any node's slots. If only some do, the store
hands their lapsed leases to the others, and a node can hold up to their safe
shares more than its slots (docs/operations.md, "Many routers, one fleet").
`close` gives every lease back.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from router.core.capacity import Resource, demand, held_after, keep, resources, safe_share
from router.core.loads import LoadTracker
from router.core.table import Snapshot
from router.stores.capacity import Ask, CapacityBackend, Grant

log = logging.getLogger(__name__)


@dataclass
class CapacityStats:
    """What the metrics read (at scrape time, from another thread: plain values only)."""

    members: int = 0
    syncs: int = 0
    errors: int = 0
    grants: int = 0  # slots granted by grows
    returns: int = 0  # slots handed back
    last_ok: float = -math.inf  # monotonic time of the last answered sync
    lag: float = 0.0  # seconds the last answered sync took
    per: dict[str, tuple[int, int, int, int, int]] = field(default_factory=dict)
    # resource -> (held, in flight, unmet demand, leased by the fleet, capacity)


class CapacityKeeper:
    """Owns the store's capacity leases for one router; see the module docstring."""

    def __init__(self, backend: CapacityBackend, tracker: LoadTracker,
                 snapshot: Callable[[], Snapshot], *, period: float = 0.25, ttl: float = 3.0,
                 routers: int = 2, on_members: Callable[[int], None] | None = None) -> None:
        """Lease `tracker`'s slots for the resources of `snapshot()` from `backend`."""
        self.backend, self.tracker, self.snapshot = backend, tracker, snapshot
        self.period, self.ttl = period, ttl
        self.margin = min(0.5, ttl / 4)
        self.member = secrets.token_hex(8)
        self.on_members = on_members
        self.stats = CapacityStats(members=max(1, routers))
        self._valid_until = -math.inf
        self._fallen_back = False
        self._names: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CapacityKeeper:
        """Lease every slot from now on, sync once (before serving), then run the thread."""
        self.tracker.lease_all()
        self.cycle()
        self._thread = threading.Thread(target=self._run, name="capacity-keeper", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.cycle()
            except Exception:  # whatever goes wrong, keep the thread
                log.exception("capacity keeper cycle failed")

    def cycle(self) -> bool:
        """One sync with the store; False (and the fallback when due) when it did not answer."""
        res = resources(self.snapshot())
        tracker = self.tracker
        loads, held, blocked = tracker.loads, tracker.held, tracker.blocked
        asks = []
        for r in res:
            load = loads[r.slot]
            asks.append(Ask(r.name, r.capacity, keep(held[r.slot], load),
                            demand(load, blocked[r.slot])))
            blocked[r.slot] = 0
        sent = time.monotonic()
        try:
            members, grants = self.backend.sync(self.member, self.ttl, asks)
        except Exception as exc:
            self._lost(res, exc)
            return False
        self._apply(res, asks, grants, members, sent)
        return True

    def _apply(self, res: list[Resource], asks: list[Ask], grants: list[Grant], members: int,
               sent: float) -> None:
        stats, tracker = self.stats, self.tracker
        per: dict[str, tuple[int, int, int, int, int]] = {}
        for r, ask, g in zip(res, asks, grants, strict=True):
            before = tracker.held[r.slot]
            tracker.held[r.slot] = now_held = held_after(g.lease, g.target)
            if now_held > before:
                stats.grants += now_held - before
            elif now_held < before:
                stats.returns += before - now_held
            per[r.name] = (now_held, tracker.loads[r.slot], max(0, ask.demand - g.lease),
                           g.leased, r.capacity)
        self._names.update(per)
        done = time.monotonic()
        stats.per, stats.syncs, stats.last_ok, stats.lag = per, stats.syncs + 1, done, done - sent
        self._valid_until = sent + self.ttl - self.margin
        if members != stats.members and self.on_members is not None:
            self.on_members(members)
        stats.members = members
        if self._fallen_back:
            self._fallen_back = False
            log.warning("capacity store answers again: admitting within leases")

    def _lost(self, res: list[Resource], exc: Exception) -> None:
        self.stats.errors += 1
        if time.monotonic() < self._valid_until:
            return  # what is held stays good until its TTL
        if not self._fallen_back:
            self._fallen_back = True
            log.warning("%s; leases lapsed: admitting on a safe share (slots / %d routers)",
                        exc, self.stats.members)
        held, ever = self.tracker.held, self.stats.syncs > 0
        for r in res:
            share = safe_share(r.capacity, self.stats.members)
            # never above the lease it had: the store still counts that lease (its clock
            # stops for an outage every router sees), so together they stay within slots
            held[r.slot] = min(held[r.slot], share) if ever else share

    def close(self) -> None:
        """Stop the thread and give every lease back (at exit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.backend.release(self.member, sorted(self._names))
        except Exception as exc:
            log.warning("capacity leases not given back (they lapse at their TTL): %s", exc)
        self.backend.close()


def open_capacity(spec: str, tracker: LoadTracker, snapshot: Callable[[], Snapshot], *,
                  on_members: Callable[[int], None] | None = None) -> CapacityKeeper | None:
    """The keeper of a shared store's slot leases, started (None: a store one router owns).

    `spec` is `budgets.store` (`redis://…`: the fleet's Redis) or `sqlite:PATH` (the
    host-local file `serve --workers N` shares between its workers).
    """
    if spec.startswith("redis://"):
        from router.stores.capacity import RedisCapacity
        from router.stores.redis_options import split_options

        url, opts = split_options(spec)
        if opts["capacity_sync"] <= 0:
            return None  # leases off: this router holds every slot (one router on the store)
        backend: CapacityBackend = RedisCapacity(url, timeout=opts["timeout"])
        keeper = CapacityKeeper(backend, tracker, snapshot, period=opts["capacity_sync"],
                                ttl=opts["capacity_ttl"], routers=int(opts["replicas"]),
                                on_members=on_members)
    elif spec.startswith("sqlite:"):
        from router.stores.capacity import SqliteCapacity

        keeper = CapacityKeeper(SqliteCapacity(spec.removeprefix("sqlite:")), tracker,
                                snapshot, on_members=on_members)
    else:
        return None
    return keeper.start()
