"""One simulation: scenario traffic and events through a router, recorded per request."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from router.core.model import Policy
from simulator.routers import EPOCH, Router
from simulator.scenario import Scenario
from simulator.world import EVENT, REFRESH, Choice, World, arrivals


@dataclass
class Result:
    """Per-request columns plus time series for the report."""

    router: str
    t: list[float] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    tenant: list[str] = field(default_factory=list)
    cls: list[str] = field(default_factory=list)
    mode: list[str] = field(default_factory=list)
    node: list[str] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)
    slo_ms: list[float] = field(default_factory=list)
    violations: int = 0
    load_samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    limits: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    wall_seconds: float = 0.0


def simulate(scenario: Scenario, policy: Policy, router: Router, *,
             requests: int | None = None, progress: bool = False) -> Result:
    """Run the scenario through `router`; same scenario and seed, same result."""
    wall = time.perf_counter()
    rng = np.random.default_rng(scenario.seed)
    times, cls_idx, key_idx = arrivals(scenario, rng, requests)
    world = World(policy, np.random.default_rng(scenario.seed + 1))
    out = Result(router.name)
    where = {**{n.id: n.residency for n in policy.nodes},
             **{p.id: p.residency for p in policy.pools}}
    for tenant, tb in policy.budgets.tenants.items():
        out.limits[tenant] = [(0.0, tb.limit_usd)]
    router.refresh(world.feed(EPOCH), 0.0)

    def refresh() -> None:
        router.refresh(world.feed(EPOCH + world.now), world.now)
        out.load_samples.append((world.now, {n: x.busy for n, x in world.nodes.items()}))
        if world.now + policy.refresh_seconds <= horizon:
            world.at(world.now + policy.refresh_seconds, REFRESH, refresh)

    horizon = (float(times[-1]) if len(times) else 0.0) + 5.0
    world.at(policy.refresh_seconds, REFRESH, refresh)
    for ev in scenario.events:
        world.at(ev.at_s, EVENT, partial(_apply, ev.kind, ev.args, world, router, out))
    classes = scenario.classes
    n = len(times)
    step = max(1, n // 50)
    for i in range(n):
        t = float(times[i])
        world.run_until(t)
        c = classes[int(cls_idx[i])]
        key = f"k{int(key_idx[i])}"
        payload = int(c.payload_kb * 1024)
        choice = router.route(c, key, t, payload)
        row = len(out.t)
        out.t.append(t)
        out.key.append(key)
        out.tenant.append(c.tenant)
        out.cls.append(c.name)
        out.mode.append(choice.mode)
        out.node.append((choice.pool if choice.mode == "cloud" else choice.node) or "")
        out.cost_usd.append(choice.cost_usd)
        out.slo_ms.append(c.slo_ms)
        out.latency_ms.append(float("nan"))
        for target in (choice.node, choice.pool):
            if target is not None and not c.residency <= where.get(target, frozenset()):
                out.violations += 1
        if choice.mode == "refused":
            continue

        def done(ms: float, row: int = row, choice: Choice = choice) -> None:
            out.latency_ms[row] = ms
            router.done(choice)

        world.submit(choice, c.payload_kb, done)
        if progress and i % step == 0:
            print(f"\r{router.name}: {100 * i / n:5.1f}%", end="", file=sys.stderr, flush=True)
    world.run_until(float("inf"))
    if progress:
        print(f"\r{router.name}: 100.0%", file=sys.stderr)
    out.wall_seconds = time.perf_counter() - wall
    return out


def _apply(kind: str, args: dict[str, object], world: World, router: Router,
           out: Result) -> None:
    if kind in ("node_down", "node_up"):
        node = world.nodes.get(str(args["node"]))
        if node is not None:
            node.up = kind == "node_up"
    elif kind == "throttle":
        node = world.nodes.get(str(args["node"]))
        if node is not None:
            node.score = float(args["compute_score"])  # type: ignore[arg-type]
    elif kind == "spot_price":
        prices = args["prices"]
        assert isinstance(prices, dict)
        for pool in world.pools.values():
            if pool.spec.instance_type in prices:
                pool.price = float(prices[pool.spec.instance_type])
    elif kind == "partition":
        pool_ = world.pools.get(str(args["pool"]))
        if pool_ is not None:
            pool_.partitioned_until = world.now + float(args["for_s"])  # type: ignore[arg-type]
    elif kind == "budget":
        tenant, limit = str(args["tenant"]), float(args["limit_usd"])  # type: ignore[arg-type]
        router.set_limit(tenant, limit)
        out.limits.setdefault(tenant, [(0.0, limit)]).append((world.now, limit))
