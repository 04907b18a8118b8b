"""Several gateways in front of one edge fleet, each a router leasing node slots (simulated).

A scenario's `gateways: [{share: 0.7}, {share: 0.2}, {share: 0.1}]` runs one
`Adaptive` router per gateway, each with its own loads and budget ledger, and a
lease table standing in for the shared store: every `lease_sync_s` each live
gateway makes the same sync a real router's keeper makes, through the same core
(`router.core.capacity`: demand, settle, held_after). Syncs run at the first
arrival after each period, on the simulated clock.

Traffic: a key belongs to one gateway (its clients connect there), drawn by the
shares from the key's hash; while a gateway is down (`gateway_down: INDEX`) its
keys hash over the gateways that are up. A downed gateway's requests in flight
finish; its leases lapse `ttl_s` after its last sync, as in the store. Budgets
are one ledger for all (a shared store, without its leases' granularity).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from router.core.budget import BudgetLedger
from router.core.capacity import demand, held_after, keep, resources, settle
from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import Policy
from router.core.ring import hash64
from simulator.routers import WAIT, Adaptive, Choice
from simulator.scenario import TrafficClass

TTL_S = 3.0


def pick(key: str, bounds: list[float], live: list[int]) -> int:
    """The gateway of `key` among `live` (cumulative shares `bounds`); -1 when none is up."""
    if not live:
        return -1
    point = (hash64("gw:" + key) / 2.0**64) * bounds[-1]
    return live[min(bisect.bisect_right(bounds, point), len(live) - 1)]


def cumulative(shares: Sequence[float], up: Sequence[bool]) -> tuple[list[float], list[int]]:
    """(cumulative shares, indices) of the gateways that are up: what `pick` takes."""
    live = [i for i, u in enumerate(up) if u]
    return list(itertools.accumulate(shares[i] for i in live)), live


@dataclass
class _Table:
    """The shared store's lease table: per resource, lease and demand by gateway."""

    leases: dict[str, dict[str, int]] = field(default_factory=dict)
    demands: dict[str, dict[str, int]] = field(default_factory=dict)

    def drop(self, gateway: str) -> None:
        """A gateway's leases lapsed: they no longer count."""
        for table in (*self.leases.values(), *self.demands.values()):
            table.pop(gateway, None)


class Gateways:
    """N gateways' routers over one lease table; a `Router` to the simulator."""

    def __init__(self, policy: Policy, shares: Sequence[float], *, sync_s: float = 0.25,
                 ttl_s: float = TTL_S, name: str = "hybrid-router") -> None:
        """One router per share (shares need not add up to 1)."""
        self.name = name
        ledger = BudgetLedger()  # budgets are one store's for every gateway, as with Redis
        self.routers = [Adaptive(policy, name=f"{name}[{i}]", ledger=ledger)
                        for i in range(len(shares))]
        for r in self.routers:
            r.runtime.tracker.lease_all()
        self.shares = list(shares)
        self.sync_s, self.ttl_s = sync_s, ttl_s
        self.up = [True] * len(shares)
        self.table = _Table()
        self.next_sync = 0.0
        self.lapse: dict[int, float] = {}  # downed gateway -> when its leases lapse
        self._edges = self._cumulative()

    def _cumulative(self) -> tuple[list[float], list[int]]:
        return cumulative(self.shares, self.up)

    def gateway_of(self, key: str) -> int:
        """The gateway `key`'s clients use now (by the shares of the gateways that are up)."""
        return pick(key, *self._edges)

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """Every gateway's router gets the feed."""
        for r in self.routers:
            r.refresh(feed, now)

    def tick(self, now: float) -> None:
        """No feed came: every gateway's router ages the one it has."""
        for r in self.routers:
            r.tick(now)

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """Sync leases when due, then route through the key's gateway."""
        if now >= self.next_sync:
            self.sync(now)
        g = self.gateway_of(key)
        if g < 0:
            return Choice("refused")
        return self._wrap(g, self.routers[g].route(cls, key, now, payload_bytes))

    def _wrap(self, g: int, choice: Choice) -> Choice:
        if choice.mode == WAIT:
            return choice._replace(token=partial(self._resume, g, choice.token))
        return choice._replace(token=(g, choice.token))

    def _resume(self, g: int, resume: Any, now: float) -> Choice:
        return self._wrap(g, resume(now))

    def done(self, choice: Choice) -> None:
        """Hand the request back to the gateway that routed it."""
        if isinstance(choice.token, tuple):
            g, token = choice.token
            self.routers[g].done(choice._replace(token=token))

    def failed(self, choice: Choice, now: float) -> None:
        """A failure reaches the gateway that routed the request (each Envoy logs to its
        own router)."""
        if isinstance(choice.token, tuple):
            g, token = choice.token
            self.routers[g].failed(choice._replace(token=token), now)

    def sync(self, now: float) -> None:
        """Each live gateway's lease sync, in order (as their keepers' calls reach the store)."""
        self.next_sync = now + self.sync_s
        for g, at in list(self.lapse.items()):
            if now >= at:
                self.table.drop(str(g))
                del self.lapse[g]
        for g, router in enumerate(self.routers):
            if self.up[g]:
                self._sync_one(g, router)

    def _sync_one(self, g: int, router: Adaptive) -> None:
        tracker, me = router.runtime.tracker, str(g)
        for r in resources(router.runtime.snapshot):
            leases = self.table.leases.setdefault(r.name, {})
            demands = self.table.demands.setdefault(r.name, {})
            load, held = tracker.loads[r.slot], tracker.held[r.slot]
            demands[me] = demand(load, tracker.blocked[r.slot])
            tracker.blocked[r.slot] = 0
            lease, target = settle(r.capacity, leases, demands, me, keep(held, load))
            leases[me] = lease
            tracker.held[r.slot] = held_after(lease, target)

    def gateway(self, index: int, up: bool, now: float) -> None:
        """A `gateway_down` / `gateway_up` event."""
        if not 0 <= index < len(self.routers):
            return
        self.up[index] = up
        if up:
            self.lapse.pop(index, None)
        else:
            self.lapse[index] = now + self.ttl_s
        self._edges = self._cumulative()

    def set_limit(self, tenant: str, limit: float) -> None:
        """A budget event reaches every gateway."""
        for r in self.routers:
            r.set_limit(tenant, limit)

    def caps(self) -> dict[str, float]:
        """Per node, the largest cap any gateway's router would give it."""
        out: dict[str, float] = {}
        for r in self.routers:
            for node, value in r.caps().items():
                out[node] = max(out.get(node, 0.0), value)
        return out
