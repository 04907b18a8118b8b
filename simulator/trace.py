"""`simulate --trace`: production's logged requests replayed through a candidate policy.

Each logged request arrives again at its own time (relative to the log's first
line), with the affinity tags it sent, parsed by the server's own
`Runtime.parse` under the candidate policy, and its logged content length. The
candidate decides it through `RequestControl`, exactly as in a scenario run, in
the simulated world of `simulator.world` built from the candidate's nodes and
pools; the log holds no feed, so the router hears that world's own feed every
`refresh_seconds`. Requests production refused while parsing (400) are counted,
not replayed: their tags are broken under any policy.

The log is streamed (`simulator.tracestream`): each line is parsed, folded into
production's `Tally` (its logged decision and duration) and handed to the
candidate as it arrives; no line of the log is kept. The candidate's side is a
`Result`, summarized by `summarize` as a scenario run is. Each request keeps
one SLO on both sides: the one its tags give under the candidate policy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from router import wire
from router.core.decision import Decision
from router.core.model import Policy
from router.core.request import RouteRequest
from router.logline import LogEntry
from simulator.routers import EPOCH, REFUSED, WAIT, Adaptive, Choice
from simulator.run import SAMPLE_S, Result, schedule_refreshes, wait_then
from simulator.scenario import WorldConfig
from simulator.tally import Tally
from simulator.tracelog import Trace, TraceError
from simulator.tracestream import entries
from simulator.world import World


@dataclass
class Replay:
    """Production's side and the candidate's, over the same replayed requests."""

    trace: Trace
    production: Tally
    candidate: Result
    parse_refused: int = 0  # production's 400s, counted and not replayed
    policies: set[str] = field(default_factory=set)  # production policy versions seen
    failed: int = 0  # routed requests production's client got a 5xx for
    start_epoch_s: float = 0.0  # the first line's arrival
    first_row_t: float | None = None  # the first replayed request's, s after it


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


def _blank(name: str, policy: Policy) -> Result:
    """The candidate's result before the run: no rows yet."""
    out = Result(name, settle_s=policy.refresh_seconds + SAMPLE_S)
    out.slots = {nd.id: nd.slots for nd in policy.nodes}
    out.event_times = [0.0]
    for tenant, tb in policy.budgets.tenants.items():
        out.limits[tenant] = [(0.0, tb.limit_usd)]
    return out


def _append(out: Result, t: float, e: LogEntry, req: RouteRequest | Decision,
            default_slo: float, shared: dict[object, object]) -> None:
    """A new row: its arrival, key, tenant and SLO, refused until decided. A key, tenant or
    SLO repeats over many rows: each row holds the one copy in `shared`, not its own."""
    if isinstance(req, RouteRequest):
        key, tenant, slo = req.key or "", req.tenant, req.slo_ms
    else:
        key, tenant = e.tags.get(wire.H_KEY, ""), e.tags.get(wire.H_TENANT, "default")
        slo = default_slo
    key, tenant = cast(str, shared.setdefault(key, key)), cast(str, shared.setdefault(tenant,
                                                                                     tenant))
    slo = cast(float, shared.setdefault(("slo", slo), slo))
    out.t.append(t)
    out.key.append(key)
    out.tenant.append(tenant)
    out.cls.append(tenant)  # a trace has no classes; a tenant is the nearest grouping
    out.slo_ms.append(slo)
    out.mode.append("refused")
    out.node.append("")
    out.latency_ms.append(math.nan)
    out.cost_usd.append(0.0)
    out.cloud_usd.append(0.0)
    out.quality.append(None)
    out.home.append(False)
    out.fill.append(None)
    out.warm.append(None)
    out.pool.append(None)


class _Candidate:
    """The candidate policy in the simulated world, fed one request at a time."""

    def __init__(self, policy: Policy, adaptive: Adaptive, horizon: float, seed: int,
                 world_config: WorldConfig | None) -> None:
        self.world = World(policy, np.random.default_rng(seed), world_config)
        self.adaptive, self.out = adaptive, _blank(adaptive.name, policy)
        schedule_refreshes(self.world, policy, adaptive, self.out, horizon)
        adaptive.refresh(self.world.feed(EPOCH), 0.0)
        self.choices: dict[int, Choice] = {}  # rows in flight
        self.waited: dict[int, float] = {}  # rows that waited for a budget top-up (ms)
        self.reqs: dict[int, RouteRequest] = {}  # rows decided and not yet started
        self.world.on_done = self._done
        self.where = {**{nd.id: nd.residency for nd in policy.nodes},
                      **{p.id: p.residency for p in policy.pools}}

    def arrive(self, i: int, t: float, req: RouteRequest | Decision) -> None:
        """Row `i` arrives at `t`: the world catches up, then the candidate decides it."""
        world = self.world
        if world.heap and world.heap[0][0] <= t:
            world.run_until(t)
        world.now = t
        if isinstance(req, RouteRequest):  # else the candidate refuses its tags (400)
            self.reqs[i] = req
            self.start(i, self.adaptive.decide(req, t))

    def start(self, i: int, choice: Choice) -> None:
        """Record request `i`'s choice and start it in the world (or let it wait)."""
        if choice.mode == WAIT:
            wait_then(self.world, i, choice, self.start, self.waited)
            return
        _record(self.out, i, choice)
        req = self.reqs.pop(i)
        if choice is REFUSED:
            self.waited.pop(i, None)
            return
        self.out.violations += _violates(req, choice, self.where)
        self.choices[i] = choice
        key = req.key if req.key else -1 - i  # a keyless request shares no warm state
        self.world.submit(i, choice[0], choice[1], choice[2], choice[3], key, req.payload_bytes)

    def _done(self, row: int, ms: float, warm: bool | None) -> None:
        out = self.out
        out.latency_ms[row] = ms + self.waited.pop(row, 0.0) if self.waited else ms
        out.warm[row] = warm
        choice = self.choices.pop(row, None)
        if choice is not None:
            self.adaptive.done(choice)


def replay(trace: Trace, policy: Policy, *, seed: int = 1,
           world_config: WorldConfig | None = None, name: str = "candidate",
           lines: Iterable[LogEntry] | None = None) -> Replay:
    """Both sides of a trace: production as logged, the candidate simulated.

    `lines`: the trace's lines in arrival order (default: streamed from its files).
    """
    wall = time.perf_counter()
    adaptive = Adaptive(policy, name=name)
    parse, default_slo = adaptive.runtime.parse, policy.slo.default_latency_ms
    rep: Replay | None = None
    shared: dict[object, object] = {}
    cand: _Candidate | None = None
    for e in entries(trace) if lines is None else lines:
        if rep is None or cand is None:
            cand = _Candidate(policy, adaptive, trace.newest - e.t + 5.0, seed, world_config)
            rep = Replay(trace, Tally("production"), cand.out, start_epoch_s=e.t)
        rep.failed += e.mode != "refused" and e.status >= 500
        if e.policy:
            rep.policies.add(e.policy)
        if e.status == wire.STATUS_BAD_TAG:
            rep.parse_refused += 1
            continue
        t, req = e.t - rep.start_epoch_s, parse(e.tags, payload_bytes=e.content_length)
        rep.first_row_t = t if rep.first_row_t is None else rep.first_row_t
        rep.production.add_logged(t, e, req.slo_ms if isinstance(req, RouteRequest)
                                  else default_slo)
        _append(cand.out, t, e, req, default_slo, shared)
        cand.arrive(len(cand.out.t) - 1, t, req)
    if rep is None or cand is None:
        raise TraceError("no usable request-log line")
    cand.world.run_until(math.inf)
    cand.out.wall_seconds = time.perf_counter() - wall
    return rep
