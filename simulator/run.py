"""One simulation: scenario traffic and events through a router, recorded per request."""

from __future__ import annotations

import gc
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from router.core.policy import Policy
from simulator.lifecycle import EVENT, LOST, REFRESH, SAMPLE, TIMED_OUT, Lifecycle
from simulator.routers import EPOCH, WAIT, Choice, Router, resume
from simulator.scenario import Scenario
from simulator.traffic import Arrivals, draw
from simulator.world import World

SAMPLE_S = 10.0  # utilization and caps are sampled this often (the report's steady windows)
TICK_S = 1.0  # the server's refresher tick: how soon it sees the feed in force go stale


@dataclass
class Result:
    """Per-request columns (one entry per request, in arrival order) plus time series."""

    router: str
    t: list[float] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    tenant: list[str] = field(default_factory=list)
    cls: list[str] = field(default_factory=list)
    mode: list[str] = field(default_factory=list)
    node: list[str] = field(default_factory=list)  # node, or pool for cloud; '' when refused
    latency_ms: list[float] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)
    slo_ms: list[float] = field(default_factory=list)
    quality: list[str | None] = field(default_factory=list)
    home: list[bool] = field(default_factory=list)
    fill: list[float | None] = field(default_factory=list)  # None: no cap (cloud, baselines)
    cloud_usd: list[float] = field(default_factory=list)
    warm: list[bool | None] = field(default_factory=list)  # edge inferences only
    pool: list[str | None] = field(default_factory=list)  # a split's pool
    violations: int = 0
    limits: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    util: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # slot-seconds
    caps: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # per node, inference requests in flight (queued included) at the same instants as caps
    loads: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)
    event_times: list[float] = field(default_factory=list)
    settle_s: float = 30.0  # after an event, how long until windows count as steady
    preempted: int = 0  # requests caught in flight when spot capacity was reclaimed
    owns_edge: bool = True  # whether the edge fleet's fixed cost is this run's (not cloud-only's)
    wall_seconds: float = 0.0


def _prefill(out: Result, scenario: Scenario, times: np.ndarray, cls_idx: np.ndarray,
             key_idx: np.ndarray) -> tuple[list[float], list[int], list[int], list[str]]:
    """The columns the arrivals decide, and (times, class and key indexes, key names)."""
    n = len(times)
    classes = scenario.classes
    tl, cl, kl = times.tolist(), cls_idx.tolist(), key_idx.tolist()
    names = [f"k{i}" for i in range(scenario.keys)]
    out.t = tl
    out.key = [names[k] for k in kl]
    out.cls = [classes[c].name for c in cl]
    out.tenant = [classes[c].tenant for c in cl]
    out.slo_ms = [float(classes[c].slo_ms) for c in cl]
    out.mode = [""] * n
    out.node = [""] * n
    out.latency_ms = [math.nan] * n
    out.cost_usd = [0.0] * n
    out.cloud_usd = [0.0] * n
    out.quality = [None] * n
    out.home = [False] * n
    out.fill = [None] * n
    out.warm = [None] * n
    out.pool = [None] * n
    return tl, cl, kl, names


def simulate(scenario: Scenario, policy: Policy, router: Router, *,
             requests: int | None = None, progress: bool = False,
             arrivals: Arrivals | None = None) -> Result:
    """Run the scenario through `router`; same scenario and seed, same result.

    `arrivals`: run these instead of drawing the scenario's own (`draw` with the
    scenario's seed draws what a run would), e.g. the same requests after a warm-up;
    `requests` does not cut them.
    """
    wall = time.perf_counter()
    drawn = arrivals if arrivals is not None else \
        draw(scenario, np.random.default_rng(scenario.seed), requests)
    times, cls_idx, key_idx = drawn.times, drawn.cls, drawn.keys
    world = World(policy, np.random.default_rng(scenario.seed + 1), scenario.world)
    if drawn.demand is not None:
        world.demand = drawn.demand.tolist()
    out = Result(router.name, settle_s=policy.refresh_seconds + SAMPLE_S)
    out.slots = {n.id: n.slots for n in policy.nodes}
    out.owns_edge = getattr(router, "owns_edge", True)
    out.event_times = [0.0] + [float(e.at_s) for e in scenario.events]
    tl, cl, kl, names = _prefill(out, scenario, times, cls_idx, key_idx)
    for tenant, tb in policy.budgets.tenants.items():
        out.limits[tenant] = [(0.0, tb.limit_usd)]
    horizon = (tl[-1] if tl else 0.0) + 5.0
    _schedule(world, scenario, policy, router, out, horizon)
    router.refresh(world.feed(EPOCH), 0.0)
    choices: list[Choice | None] = [None] * len(tl)
    waited: dict[int, float] = {}  # rows that waited, and how long (ms)
    world.on_done = partial(_done, out.latency_ms, out.warm, choices, router, world, waited)
    collecting = gc.isenabled()
    # A request's objects form no reference cycles, but the cyclic collector still walks the
    # growing result columns again and again: off for the run, it costs a tenth of the time.
    gc.disable()
    try:
        scale = None if drawn.payload is None else drawn.payload.tolist()
        _loop(world, scenario, policy, router, out, (tl, cl, kl, names), choices, waited,
              progress, scale)
        world.run_until(math.inf)
    finally:
        if collecting:
            gc.enable()
    out.preempted = world.preempted
    out.wall_seconds = time.perf_counter() - wall
    return out


UPSTREAM_FAILED = (LOST, TIMED_OUT)  # a 502 or 504 from upstream; a client giving up is not


def _done(latency: list[float], warm: list[bool | None], choices: list[Choice | None],
          router: Router, world: World, waited: dict[int, float], row: int, ms: float,
          was_warm: bool | None, status: int) -> None:
    latency[row] = ms + waited.pop(row, 0.0) if waited else ms
    warm[row] = was_warm
    choice = choices[row]
    choices[row] = None
    if choice is None:
        return
    router.done(choice)
    if status in UPSTREAM_FAILED:  # as Envoy's access log reports it to the server
        router.failed(choice, world.now)


def _loop(world: World, scenario: Scenario, policy: Policy, router: Router, out: Result,
          cols: tuple[list[float], list[int], list[int], list[str]],
          choices: list[Choice | None], waited: dict[int, float], progress: bool,
          scale: list[float] | None = None) -> None:
    """Every arrival in order: the events due before it, then its decision and its start
    (`scale`: per arrival, a factor on its class's payload)."""
    tl, cl, kl, names = cols
    classes = scenario.classes
    payloads = [int(c.payload_kb * 1024) for c in classes]
    allowed = _residency(scenario, policy)
    heap, run_until, submit, route = world.heap, world.run_until, world.submit, router.route
    mode_col, node_col, pool_col, quality_col = out.mode, out.node, out.pool, out.quality
    cost_col, cloud_col, home_col, fill_col = out.cost_usd, out.cloud_usd, out.home, out.fill

    def start(i: int, choice: Choice) -> None:
        """Record request `i`'s choice and start it in the world (or let it wait)."""
        mode, node, pool = choice[0], choice[1], choice[2]
        if mode == WAIT:
            wait_then(world, i, choice, start, waited)
            return
        mode_col[i] = mode
        node_col[i] = (pool if mode == "cloud" else node) or ""
        pool_col[i] = pool
        quality_col[i] = choice[3]
        cost_col[i] = choice[4]
        cloud_col[i] = choice[5]
        home_col[i] = choice[6]
        fill_col[i] = choice[7]
        if mode == "refused":
            waited.pop(i, None)
            return
        c = cl[i]
        if not (allowed[c][node] if node is not None else True) or \
                not (allowed[c][pool] if pool is not None else True):
            out.violations += 1
        choices[i] = choice
        submit(i, mode, node, pool, choice[3], kl[i],
               payloads[c] if scale is None else int(payloads[c] * scale[i]))

    n = len(tl)
    step = max(1, n // 50)
    for i in range(n):
        t = tl[i]
        if heap and heap[0][0] <= t:
            run_until(t)
        world.now = t
        c = cl[i]
        size = payloads[c] if scale is None else int(payloads[c] * scale[i])
        start(i, route(classes[c], names[kl[i]], t, size))
        if progress and i % step == 0:
            print(f"\r{router.name}: {100 * i / n:5.1f}%", end="", file=sys.stderr, flush=True)
    if progress:
        print(f"\r{router.name}: 100.0%", file=sys.stderr)


def wait_then(world: World, row: int, choice: Choice, start: Callable[[int, Choice], None],
              waited: dict[int, float]) -> None:
    """A WAIT choice: decided again `wait_s` later on the world's clock, then `start`ed; the
    wait counts in the request's latency, as it does in production."""
    waited[row] = waited.get(row, 0.0) + choice.wait_s * 1000.0
    world.at(world.now + choice.wait_s, EVENT,
             lambda: start(row, resume(choice, world.now)))


def _residency(scenario: Scenario, policy: Policy) -> list[dict[str, bool]]:
    """Per class, per node and pool id: whether it satisfies the class's residency."""
    where = {**{n.id: n.residency for n in policy.nodes},
             **{p.id: p.residency for p in policy.pools}}
    return [{t: c.residency <= tags for t, tags in where.items()} for c in scenario.classes]


def _schedule(world: World, scenario: Scenario, policy: Policy, router: Router, out: Result,
              horizon: float) -> None:
    """Feed refreshes, 10-s samples and the scenario's events on the world's clock."""
    schedule_refreshes(world, policy, router, out, horizon)
    for ev in scenario.events:
        world.at(ev.at_s, EVENT, partial(_apply, ev.kind, ev.args, world, router, out))


def schedule_refreshes(world: World, policy: Policy, router: Router, out: Result,
                       horizon: float) -> None:
    """The world's feed to `router` every refresh_seconds and the report's 10-s samples,
    up to `horizon` (a scenario run and a trace replay alike). While the feed is late
    (`feed_delay`) the router is only ticked, every TICK_S, as the server's refresher is."""

    ticking = [False]  # a tick chain runs (only while the feed is late)

    def refresh() -> None:
        if world.now >= world.feed_late_until:
            router.refresh(world.feed(EPOCH + world.now), world.now)
        elif not ticking[0]:  # the feed is late: the router only ages what it has
            ticking[0] = True
            tick()
        if world.now + policy.refresh_seconds <= horizon:
            world.at(world.now + policy.refresh_seconds, REFRESH, refresh)

    def tick() -> None:
        """As the server's refresher: every TICK_S, staleness applied, until the feed is back."""
        router.tick(world.now)
        ticking[0] = world.now + TICK_S < min(world.feed_late_until, horizon)
        if ticking[0]:
            world.at(world.now + TICK_S, REFRESH, tick)

    def sample() -> None:
        out.util.append((world.now, world.utilization()))
        for node, limit in router.caps().items():
            out.caps.setdefault(node, []).append((world.now, limit))
        for nid, n in world.nodes.items():
            out.loads.setdefault(nid, []).append((world.now, float(n.busy + len(n.queue))))
        if world.now + SAMPLE_S <= horizon:
            world.at(world.now + SAMPLE_S, SAMPLE, sample)

    world.at(policy.refresh_seconds, REFRESH, refresh)
    world.at(SAMPLE_S, SAMPLE, sample)


def apply_world_event(kind: str, args: dict[str, Any], world: Lifecycle) -> bool:
    """Apply a scenario event that changes the world itself; False for any other kind.

    The heap loop here and the live twin's real-time driver (`simulator.live`) both call it,
    so an event means the same in both.
    """
    if kind in ("node_down", "node_up"):
        node = world.nodes.get(str(args["node"]))
        if node is not None:
            node.up = kind == "node_up"
    elif kind == "throttle":
        node = world.nodes.get(str(args["node"]))
        if node is not None:
            node.throttle(float(args["compute_score"]))
    elif kind == "spot_price":
        prices = args["prices"]
        for pool in world.pools.values():
            if pool.spec.instance_type in prices:
                pool.price = float(prices[pool.spec.instance_type])
    elif kind == "partition":
        pool_ = world.pools.get(str(args["pool"]))
        if pool_ is not None:
            pool_.partitioned_until = world.now + float(args["for_s"])
    elif kind == "preempt":
        pool_ = world.pools.get(str(args["pool"]))
        if pool_ is not None:
            world.notice(pool_, float(args["fraction"]), float(args["notice_s"]))
    elif kind == "feed_delay":
        world.feed_late_until = world.now + float(args["for_s"])
    else:
        return False
    return True


def _apply(kind: str, args: dict[str, Any], world: World, router: Router, out: Result) -> None:
    if kind in ("gateway_down", "gateway_up"):
        switch = getattr(router, "gateway", None)  # only a gateways run has them
        if switch is not None:
            switch(int(args["gateway"]), kind == "gateway_up", world.now)
    elif kind == "preempt" and apply_world_event(kind, args, world):
        # the feed pushes a reclaim notice the moment it has one (a gRPC Watch does)
        router.refresh(world.feed(EPOCH + world.now), world.now)
    elif not apply_world_event(kind, args, world) and kind == "budget":
        tenant, limit = str(args["tenant"]), float(args["limit_usd"])
        router.set_limit(tenant, limit)
        out.limits.setdefault(tenant, [(0.0, limit)]).append((world.now, limit))
