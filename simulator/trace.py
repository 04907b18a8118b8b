"""`simulate --trace`: production's logged requests replayed through a candidate policy.

Each logged request arrives again at its own time (relative to the log's first
line), with the affinity tags it sent, parsed by the server's own
`Runtime.parse` under the candidate policy, and its logged content length. The
candidate decides it through `RequestControl`, exactly as in a scenario run, in
the simulated world of `simulator.world` built from the candidate's nodes and
pools; the log holds no feed, so the router hears that world's own feed every
`refresh_seconds`. Requests production refused while parsing (400) are counted,
not replayed: their tags are broken under any policy.

Both sides become a `Result` with the same columns, so `summarize` computes
production's numbers (from the logged decisions and durations) and the
candidate's (from the simulation) with one definition. Each request keeps one
SLO on both sides: the one its tags give under the candidate policy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from router import wire
from router.core.decision import Decision
from router.core.model import Policy
from router.core.request import RouteRequest
from router.logline import LogEntry
from simulator.routers import EPOCH, REFUSED, WAIT, Adaptive, Choice
from simulator.run import SAMPLE_S, Result, schedule_refreshes, wait_then
from simulator.scenario import WorldConfig
from simulator.tracelog import Trace
from simulator.world import World


@dataclass
class Replay:
    """Production's side and the candidate's, over the same replayed requests."""

    trace: Trace
    production: Result
    candidate: Result
    parse_refused: int  # production's 400s, counted and not replayed
    policies: list[str] = field(default_factory=list)  # production policy versions seen


def _parse(adaptive: Adaptive, rows: list[LogEntry]) -> list[RouteRequest | Decision]:
    """Each row's tags under the candidate, with its logged content length."""
    parse = adaptive.runtime.parse
    return [parse(e.tags, payload_bytes=e.content_length) for e in rows]


def _columns(out: Result, rows: list[LogEntry], reqs: list[RouteRequest | Decision],
             base: float, default_slo: float) -> None:
    """The columns both sides share: arrival, key, tenant, class and SLO."""
    out.t = [e.t - base for e in rows]
    out.key = [r.key or "" if isinstance(r, RouteRequest) else
               e.tags.get(wire.H_KEY, "") for e, r in zip(rows, reqs, strict=True)]
    out.tenant = [r.tenant if isinstance(r, RouteRequest) else
                  e.tags.get(wire.H_TENANT, "default") for e, r in zip(rows, reqs, strict=True)]
    out.cls = list(out.tenant)  # a trace has no classes; a tenant is the nearest grouping
    out.slo_ms = [r.slo_ms if isinstance(r, RouteRequest) else default_slo for r in reqs]


def production(rows: list[LogEntry], reqs: list[RouteRequest | Decision], base: float,
               policy: Policy) -> Result:
    """What the log says production decided, and how long each request took."""
    out = Result("production")
    _columns(out, rows, reqs, base, policy.slo.default_latency_ms)
    n = len(rows)
    out.mode = [e.mode for e in rows]
    out.node = [(e.node or "") if e.status == 200 else "" for e in rows]
    out.latency_ms = [e.duration_ms if e.status == 200 else math.nan for e in rows]
    out.cost_usd = [e.cost_usd if e.status == 200 else 0.0 for e in rows]
    out.quality = [e.quality for e in rows]
    out.home, out.fill, out.warm, out.pool = [False] * n, [None] * n, [None] * n, [None] * n
    return out


def _record(out: Result, i: int, choice: Choice) -> None:
    mode, node, pool = choice[0], choice[1], choice[2]
    out.mode[i] = mode
    out.node[i] = (pool if mode == "cloud" else node) or ""
    out.pool[i] = pool
    out.quality[i] = choice[3]
    out.cost_usd[i] = choice[4]
    out.cloud_usd[i] = choice[5]
    out.home[i] = choice[6]
    out.fill[i] = choice[7]


def _violates(req: RouteRequest, choice: Choice, where: dict[str, frozenset[str]]) -> bool:
    return any(t is not None and not req.residency <= where[t] for t in (choice[1], choice[2]))


def _blank(name: str, rows: list[LogEntry], reqs: list[RouteRequest | Decision], base: float,
           policy: Policy) -> Result:
    """The candidate's columns before the run: every request refused until decided."""
    out = Result(name, settle_s=policy.refresh_seconds + SAMPLE_S)
    _columns(out, rows, reqs, base, policy.slo.default_latency_ms)
    n = len(rows)
    out.mode, out.node, out.latency_ms = ["refused"] * n, [""] * n, [math.nan] * n
    out.cost_usd, out.cloud_usd, out.quality = [0.0] * n, [0.0] * n, [None] * n
    out.home, out.fill, out.warm, out.pool = [False] * n, [None] * n, [None] * n, [None] * n
    out.slots = {nd.id: nd.slots for nd in policy.nodes}
    out.event_times = [0.0]
    for tenant, tb in policy.budgets.tenants.items():
        out.limits[tenant] = [(0.0, tb.limit_usd)]
    return out


def candidate(rows: list[LogEntry], reqs: list[RouteRequest | Decision], base: float,
              policy: Policy, adaptive: Adaptive, *, seed: int,
              world_config: WorldConfig | None = None) -> Result:
    """The replayed requests through the candidate in the simulated world."""
    wall = time.perf_counter()
    world = World(policy, np.random.default_rng(seed), world_config)
    out = _blank(adaptive.name, rows, reqs, base, policy)
    n = len(rows)
    schedule_refreshes(world, policy, adaptive, out, (out.t[-1] if out.t else 0.0) + 5.0)
    adaptive.refresh(world.feed(EPOCH), 0.0)
    choices: list[Choice | None] = [None] * n
    waited: dict[int, float] = {}  # rows that waited for a budget top-up, and how long (ms)
    world.on_done = partial(_done, out, choices, adaptive, waited)
    where = {**{nd.id: nd.residency for nd in policy.nodes},
             **{p.id: p.residency for p in policy.pools}}

    def start(i: int, choice: Choice) -> None:
        """Record request `i`'s choice and start it in the world (or let it wait)."""
        if choice.mode == WAIT:
            wait_then(world, i, choice, start, waited)
            return
        _record(out, i, choice)
        req = reqs[i]
        assert isinstance(req, RouteRequest)
        if choice is REFUSED:
            waited.pop(i, None)
            return
        out.violations += _violates(req, choice, where)
        choices[i] = choice
        key = req.key if req.key else -1 - i  # a keyless request shares no warm state
        world.submit(i, choice[0], choice[1], choice[2], choice[3], key, req.payload_bytes)

    for i, req in enumerate(reqs):
        t = out.t[i]
        if world.heap and world.heap[0][0] <= t:
            world.run_until(t)
        world.now = t
        if isinstance(req, RouteRequest):  # else the candidate refuses its tags (400)
            start(i, adaptive.decide(req, t))
    world.run_until(math.inf)
    out.wall_seconds = time.perf_counter() - wall
    return out


def _done(out: Result, choices: list[Choice | None], adaptive: Adaptive,
          waited: dict[int, float], row: int, ms: float, warm: bool | None) -> None:
    out.latency_ms[row] = ms + waited.pop(row, 0.0) if waited else ms
    out.warm[row] = warm
    choice, choices[row] = choices[row], None
    if choice is not None:
        adaptive.done(choice)


def replay(trace: Trace, policy: Policy, *, seed: int = 1,
           world_config: WorldConfig | None = None, name: str = "candidate") -> Replay:
    """Both sides of a trace: production as logged, the candidate simulated."""
    rows = [e for e in trace.entries if e.status != wire.STATUS_BAD_TAG]
    base = trace.entries[0].t
    adaptive = Adaptive(policy, name=name)
    reqs = _parse(adaptive, rows)
    prod = production(rows, reqs, base, policy)
    cand = candidate(rows, reqs, base, policy, adaptive, seed=seed, world_config=world_config)
    return Replay(trace, prod, cand, len(trace.entries) - len(rows),
                  sorted({e.policy for e in trace.entries if e.policy}))
