"""Routers under test, as plug-ins: the real core (`Adaptive`) here, baselines in `baselines`.

Every router answers `route(cls, key, now, payload_bytes)` with a `Choice` and
hears `done` when the request ends. `Adaptive` drives hybrid-router's own core
through the same `RequestControl` the server uses: the open-request bound, plan
and admission, and the budget-throttle wait — a `WAIT` choice, which the driver
resumes `wait_s` later on its own clock, as the server awaits the keeper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from typing import NamedTuple, Protocol, cast

from router import wire
from router.control import MAX_OPEN, RequestControl
from router.core.budget import BudgetLedger
from router.core.decision import Hold, Routed
from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import CloudPool, EdgeNode, Policy, TenantBudget
from router.core.pools import marginal_usd_per_hour
from router.core.request import RouteRequest
from router.core.ring import cap
from router.runtime import Runtime
from simulator.fastpath import FastPath
from simulator.scenario import TrafficClass

EPOCH = 1_790_000_000.0  # simulated t=0 (2026-09-21T00:00Z): budgets roll over in UTC periods


class Choice(NamedTuple):
    """Where a router sent one request."""

    mode: str  # edge | edge-degraded | split | cloud | refused
    node: str | None = None  # the edge node (edge modes, split)
    pool: str | None = None  # the cloud pool (cloud, split)
    quality: str | None = None  # edge modes: full | constrained | minimal
    cost_usd: float = 0.0  # the whole request, edge amortized cost included
    cloud_usd: float = 0.0  # the part billed by a pool (what budgets count)
    home: bool = False  # edge modes and split: the node is the key's home
    fill: float | None = None  # (in flight + 1) / cap at the pick; None: no cap
    token: object = None  # the router's own handle, given back on completion
    wait_s: float = 0.0  # a WAIT choice: resume it this much later


REFUSED = Choice("refused")
WAIT = "wait"  # not decided yet: `resume(choice, now)` it `wait_s` later


def resume(choice: Choice, now: float) -> Choice:
    """A WAIT choice decided again, at `now` (simulated seconds)."""
    return cast(Callable[[float], Choice], choice.token)(now)


class Router(Protocol):
    """What the simulator drives."""

    name: str

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """A new feed snapshot arrived."""

    def tick(self, now: float) -> None:
        """Time passed with no feed (a late feed): age what the router holds."""

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """Where this request goes."""

    def done(self, choice: Choice) -> None:
        """The request ended."""

    def failed(self, choice: Choice, now: float) -> None:
        """The request, ended (`done`), failed upstream: its node or pool answered nothing
        or an error, as Envoy's access log reports it."""

    def set_limit(self, tenant: str, limit: float) -> None:
        """A budget change event."""

    def caps(self) -> dict[str, float]:
        """Per node, the largest bounded-load cap over request classes now ({}: no caps)."""


class Adaptive:
    """hybrid-router's own core through the same `Runtime` facade the server uses."""

    def __init__(self, policy: Policy, name: str = "hybrid-router", *,
                 ledger: BudgetLedger | None = None, max_open: int = MAX_OPEN,
                 fast: bool = True) -> None:
        """Compile the policy with no feed yet; `max_open` as `serve --max-streams`;
        `fast`: `route` decides a request the edge keeps on the fast path
        (`simulator.fastpath`), as the core alone would."""
        self.name = name
        self.runtime = Runtime(policy, ledger, clock=lambda: EPOCH)
        self.control = RequestControl(self.runtime, max_open=max_open)
        self._back_at = math.inf  # simulated time the first node out for failing comes back
        # The same request value for the same class, key and size: building one is most of
        # the cost of a request outside the core, and the core never keeps or changes it.
        self._requests: dict[tuple[int, str, int], RouteRequest] = {}
        # the common request decided as the core would, without its whole path (`fast`)
        self.fast: FastPath | None = FastPath(self.runtime, self.control) if fast else None

    def refresh(self, feed: FeedSnapshot, now: float) -> None:
        """Offer the feed and do what the runtime asks, as the server's refresher does."""
        rt = self.runtime
        rt.apply(rt.offer(feed, EPOCH + now), EPOCH + now)

    def tick(self, now: float) -> None:
        """The server's refresher tick: a rebuild once the feed in force has gone stale, or
        a node was taken out of the ring for failing or is back."""
        intake = self.runtime.tick(EPOCH + now)
        if intake is not None:
            self.runtime.apply(intake, EPOCH + now)
        self._back_at = self.runtime.outliers.next_back() - EPOCH

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        """One decision through the shared plan and admission."""
        ck = (id(cls), key, payload_bytes)
        req = self._requests.get(ck)
        if req is None:
            req = self._requests[ck] = RouteRequest(
                key=key, tenant=cls.tenant, residency=cls.residency, slo_ms=cls.slo_ms,
                model=cls.model, accept_degradation=cls.degrade, max_cost_usd=cls.max_cost_usd,
                payload_bytes=payload_bytes)
        return self.decide(req, now, (ck[0], payload_bytes))

    def decide(self, req: RouteRequest, now: float, kind: Hashable | None = None) -> Choice:
        """One request opens and is decided as the server decides it; with `kind` (the same
        for every request of one class and payload), a request the edge keeps is decided on
        the fast path, as the core would."""
        if now >= self._back_at:  # the server's refresher ticks every second; here, exactly
            self.tick(now)
        self.control.begin()
        if kind is not None and self.fast is not None:
            opt = self.fast.decide(req, kind, EPOCH + now)
            if opt is not None:
                node = opt.node
                assert node is not None
                # as `choice_of` answers for the core's route; the node's hold is the token
                return Choice(opt.mode, node.id, None, opt.quality, opt.cost_usd, 0.0,
                              opt.home, opt.fill, node.hold)
        return self._decide(req, True, now)

    def _decide(self, req: RouteRequest, first: bool, now: float) -> Choice:
        control = self.control
        routed = control.decide(req, now=EPOCH + now)
        if routed.decision.status == 200:
            return choice_of(routed)
        wait = control.wait_s(routed) if first else None
        if wait is not None:
            return Choice(WAIT, token=partial(self._decide, req, False), wait_s=wait)
        control.end()  # a refusal closes the request at once
        return REFUSED

    def done(self, choice: Choice) -> None:
        """Release slots and settle the budget."""
        token = choice.token
        if isinstance(token, Routed):
            self.control.end(token)
        elif isinstance(token, Hold) and self.fast is not None:
            self.fast.done(token)

    def failed(self, choice: Choice, now: float) -> None:
        """Passive health, as the server hears Envoy's access log: an edge request that
        failed counts against its node, and a node it takes out of the ring is out from
        the next request on (the server rebuilds at once, off the request path)."""
        if choice.mode in wire.EDGE_MODES and choice.node is not None and \
                self.runtime.failed(choice.node, EPOCH + now):
            self.tick(now)

    def set_limit(self, tenant: str, limit: float) -> None:
        """A budget event: the policy in force, with this tenant's limit changed."""
        policy = self.runtime.policy
        budgets = policy.budgets
        tenants = dict(budgets.tenants)
        old = tenants.get(tenant)
        tenants[tenant] = TenantBudget(limit_usd=limit) if old is None else \
            old.model_copy(update={"limit_usd": limit})
        changed = policy.model_copy(update={
            "budgets": budgets.model_copy(update={"tenants": tenants})})
        self.runtime.install(policy=changed, now=self.runtime.snapshot.built_at)

    def caps(self) -> dict[str, float]:
        """Per node, the largest cap any request class in use would give it at its next pick."""
        snap = self.runtime.snapshot
        tracker = snap.tracker
        eps = snap.policy.hashing.balance_factor
        out: dict[str, float] = {}
        for residency, model in snap.class_keys():
            entry = snap.entry(residency, model)
            total = tracker.total(entry.gid, entry.member_slots)
            for idx in entry.ring.members:
                node = snap.nodes[idx]
                limit = cap(total, node.weight, entry.weight_sum, eps, node.min_cap)
                out[node.id] = max(out.get(node.id, 0.0), float(limit))
        return out


def choice_of(routed: Routed) -> Choice:
    """A `Runtime.decide` answer as a `Choice` (the routed answer kept as its token): where
    from its route, what is billed from its hold, home and fill from the rung it took."""
    d, rung = routed.decision, routed.rung
    if rung is None:
        return REFUSED
    mode = d.mode
    if mode == wire.MODE_CLOUD:
        return Choice(mode, None, d.node, None, d.cost_usd, d.cost_usd, False, None, routed)
    if mode == wire.MODE_SPLIT:
        held = routed.hold.reservation
        billed = held.amount if held is not None else 0.0
        return Choice(mode, d.node, d.split_pool, None, d.cost_usd, billed, rung.home, rung.fill,
                      routed)
    return Choice(mode, d.node, None, d.quality, d.cost_usd, 0.0, rung.home, rung.fill, routed)


def edge_cost(node: EdgeNode, policy: Policy) -> float:
    """The node's marginal cost of one inference (its fixed cost is the fleet's, per hour)."""
    return policy.edge_marginal_usd(node)


def pool_cost(pool: CloudPool, prices: Mapping[str, float], compute_ms: float,
              payload_bytes: float) -> float:
    """What `pool` bills for `compute_ms` of inference on `payload_bytes` sent to it."""
    price = marginal_usd_per_hour(pool, prices)
    return price / 3600 * compute_ms / 1000 + pool.egress_usd_per_gb * payload_bytes / 1e9
