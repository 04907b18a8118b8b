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
candidate as it arrives; no line of the log is kept. Nor is a candidate's
request: once it and every earlier one ended (`simulator.row.Commit`), it is
folded into the totals `summarize` reads (`simulator.fold`), the charts' tallies
(`simulator.report.binstream`) and the decisions files, and dropped. Each
request keeps one SLO on both sides: the one its tags give under the candidate
policy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from router import wire
from router.core.decision import Decision
from router.core.policy import Policy
from router.core.request import RouteRequest
from router.logline import LogEntry
from simulator.fold import RunFold
from simulator.report.binned import bins_for
from simulator.report.binstream import BinStream
from simulator.routers import EPOCH, REFUSED, WAIT, Adaptive, Choice
from simulator.row import Commit, Row, Sink
from simulator.run import SAMPLE_S, Result, schedule_refreshes, wait_then
from simulator.scenario import WorldConfig
from simulator.tally import Tally
from simulator.tracelog import Trace, TraceError
from simulator.tracestream import entries
from simulator.world import World


@dataclass
class Replay:
    """Production's side and the candidate's, over the same replayed requests.

    `candidate`: the candidate run's time series (samples, caps, limits, counts); its
    requests were folded as they ended into `fold` (its summary's totals) and `bins` (its
    charts' tallies), and written to the decisions files, not kept.
    """

    trace: Trace
    production: Tally
    candidate: Result
    fold: RunFold
    bins: BinStream
    parse_refused: int = 0  # production's 400s, counted and not replayed
    policies: set[str] = field(default_factory=set)  # production policy versions seen
    failed: int = 0  # routed requests production's client got a 5xx for
    start_epoch_s: float = 0.0  # the first line's arrival
    first_row_t: float | None = None  # the first replayed request's, s after it


def _record(row: Row, choice: Choice) -> None:
    mode, node, pool = choice[0], choice[1], choice[2]
    row.mode = mode
    row.node = (pool if mode == "cloud" else node) or ""
    row.pool = pool
    row.quality = choice[3]
    row.cost = choice[4]
    row.cloud = choice[5]
    row.home = choice[6]
    row.fill = choice[7]


def _violates(req: RouteRequest, choice: Choice, where: dict[str, frozenset[str]]) -> bool:
    return any(t is not None and not req.residency <= where[t] for t in (choice[1], choice[2]))


def _blank(name: str, policy: Policy) -> Result:
    """The candidate's result before the run: its time series only, no rows."""
    out = Result(name, settle_s=policy.refresh_seconds + SAMPLE_S)
    out.slots = {nd.id: nd.slots for nd in policy.nodes}
    out.event_times = [0.0]
    for tenant, tb in policy.budgets.tenants.items():
        out.limits[tenant] = [(0.0, tb.limit_usd)]
    return out


def _row(t: float, e: LogEntry, req: RouteRequest | Decision, default_slo: float) -> Row:
    """A new row: its arrival, key, tenant and SLO, refused until decided."""
    if isinstance(req, RouteRequest):
        key, tenant, slo = req.key or "", req.tenant, req.slo_ms
    else:
        key, tenant = e.tags.get(wire.H_KEY, ""), e.tags.get(wire.H_TENANT, "default")
        slo = default_slo
    return Row(t, key, tenant, tenant, slo)  # a trace has no classes; a tenant is the nearest


class _Candidate:
    """The candidate policy in the simulated world, fed one request at a time; each request
    handed on (`commit`) once it and every earlier one ended."""

    def __init__(self, policy: Policy, adaptive: Adaptive, span: float, seed: int,
                 world_config: WorldConfig | None, sinks: Sequence[Sink]) -> None:
        self.world = World(policy, np.random.default_rng(seed), world_config)
        self.adaptive, self.out = adaptive, _blank(adaptive.name, policy)
        self.fold = RunFold(self.out.event_times, self.out.settle_s)
        self.bins = BinStream(bins_for(max(span, 1e-3)), [nd.id for nd in policy.nodes])
        self.commit = Commit([self.fold.add, self.bins.add, *sinks])
        schedule_refreshes(self.world, policy, adaptive, self.out, span + 5.0)
        adaptive.refresh(self.world.feed(EPOCH), 0.0)
        self.choices: dict[int, Choice] = {}  # rows in flight
        self.waited: dict[int, float] = {}  # rows that waited for a budget top-up (ms)
        self.reqs: dict[int, RouteRequest] = {}  # rows decided and not yet started
        self.world.on_done = self._done
        self.where = {**{nd.id: nd.residency for nd in policy.nodes},
                      **{p.id: p.residency for p in policy.pools}}
        self.arrived = 0

    def arrive(self, t: float, row: Row, req: RouteRequest | Decision) -> None:
        """The next row arrives at `t`: the world catches up, then the candidate decides it."""
        i, world = self.arrived, self.world
        self.arrived += 1
        self.commit.open(i, row)
        if world.heap and world.heap[0][0] <= t:
            world.run_until(t)
        world.now = t
        if isinstance(req, RouteRequest):  # else the candidate refuses its tags (400)
            self.reqs[i] = req
            self.start(i, self.adaptive.decide(req, t))
        else:
            row.done = True
        self.commit.flush()

    def start(self, i: int, choice: Choice) -> None:
        """Record request `i`'s choice and start it in the world (or let it wait)."""
        if choice.mode == WAIT:
            wait_then(self.world, i, choice, self.start, self.waited)
            return
        row = self.commit.rows[i]
        _record(row, choice)
        req = self.reqs.pop(i)
        if choice is REFUSED:
            self.waited.pop(i, None)
            row.done = True
            return
        self.out.violations += _violates(req, choice, self.where)
        self.choices[i] = choice
        key = req.key if req.key else -1 - i  # a keyless request shares no warm state
        self.world.submit(i, choice[0], choice[1], choice[2], choice[3], key, req.payload_bytes)

    def _done(self, i: int, ms: float, warm: bool | None, _status: int) -> None:
        row = self.commit.rows[i]
        row.latency = ms + self.waited.pop(i, 0.0) if self.waited else ms
        row.warm = warm
        row.done = True
        choice = self.choices.pop(i, None)
        if choice is not None:
            self.adaptive.done(choice)

    def finish(self) -> None:
        """Run the world until every request has ended, and hand the last ones on."""
        self.world.run_until(math.inf)
        self.commit.flush()


def replay(trace: Trace, policy: Policy, *, seed: int = 1,
           world_config: WorldConfig | None = None, name: str = "candidate",
           lines: Iterable[LogEntry] | None = None, sinks: Sequence[Sink] = ()) -> Replay:
    """Both sides of a trace: production as logged, the candidate simulated.

    `lines`: the trace's lines in arrival order (default: streamed from its files).
    `sinks`: also handed each of the candidate's requests once it ended, in arrival order
    (the decisions files).
    """
    wall = time.perf_counter()
    adaptive = Adaptive(policy, name=name)
    parse, default_slo = adaptive.runtime.parse, policy.slo.default_latency_ms
    rep: Replay | None = None
    cand: _Candidate | None = None
    for e in entries(trace) if lines is None else lines:
        if rep is None or cand is None:
            # pass one knows the newest line: the span, and so the charts' time bins
            cand = _Candidate(policy, adaptive, trace.newest - e.t, seed, world_config, sinks)
            rep = Replay(trace, Tally("production"), cand.out, cand.fold, cand.bins,
                         start_epoch_s=e.t)
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
        cand.arrive(t, _row(t, e, req, default_slo), req)
    if rep is None or cand is None:
        raise TraceError("no usable request-log line")
    cand.finish()
    cand.out.wall_seconds = time.perf_counter() - wall
    return rep
