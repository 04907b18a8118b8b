"""The mode ladder as a pure plan: request + snapshot + budget view → ranked options.

Ladder: edge → edge-degraded → split → cloud (docs/reference.md, "Routing").
`plan` reads the snapshot once, does one bounded-load walk, builds every rung
with its latency estimate and cost, drops the rungs this request can never
take (over its max cost, a pool at its `max_inflight`), and ranks the rest:
first the rungs within the SLO (degraded ones within `degraded_slack` × SLO)
in ladder order; then, as best effort, the others fastest first, except that a
tenant over its soft budget gets pure cloud last. It changes nothing and reads
no clock: `router.core.admit` takes the first ranked option whose slots and
budget it can hold, `explain` and the simulator call exactly this.

A tenant the policy does not name shares the policy's default account, or is
refused (403) with `budgets.unknown_tenant: refuse`; that is decided here too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from router import wire
from router.core.budget import BudgetState, account_of
from router.core.decision import Candidate, Decision, refusal
from router.core.model import QUALITY_LEVELS, BudgetConfig
from router.core.pick import pick_edge
from router.core.request import RouteRequest
from router.core.table import ClassEntry, NodeRt, PoolRt, Snapshot

INF = float("inf")
# The split estimate of the first version, until the payload- and bandwidth-aware one lands.
_SPLIT_COST_FRACTION = 0.3
_SPLIT_EXTRA_MS = 15.0


class BudgetView(Protocol):
    """What the plan reads of spend: a tenant account's standing now (no I/O)."""

    def state(self, budgets: BudgetConfig, account: str, now: float) -> BudgetState:
        """Committed and reserved spend of `account` against its limits."""
        ...


@dataclass(frozen=True, slots=True)
class Option:
    """One rung the request could take, with its estimate and what it would cost."""

    mode: str
    reason: str
    est_ms: float
    cost_usd: float
    cloud_usd: float  # the part of the cost that draws on the tenant's cloud budget
    node: NodeRt | None
    pool: PoolRt | None
    quality: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    """Ranked options for one request, or why it must be refused before admission."""

    request: RouteRequest
    snapshot: Snapshot
    account: str | None  # budget account the request spends from (None: refused tenant)
    entry: ClassEntry | None
    options: tuple[Option, ...]  # in the order admission tries them
    cost_blocked: bool = False  # an option was dropped for the request's max cost
    refusal: Decision | None = None  # refused at plan time (unknown tenant)
    notes: tuple[Candidate, ...] = ()


def _edge_options(node: NodeRt, req: RouteRequest, snap: Snapshot, home: bool) -> list[Option]:
    """Edge rungs for the picked node: full, then each degraded quality."""
    quality = snap.policy.quality
    out: list[Option] = []
    if node.quality_floor == 0:
        out.append(Option(wire.MODE_EDGE, wire.R_AFFINITY if home else wire.R_BALANCE,
                          node.est_ms, node.cost_usd, 0.0, node, None, "full"))
    if req.accept_degradation:
        reason = wire.R_VRAM if node.quality_floor > 0 else wire.R_SLO
        for q in range(max(1, node.quality_floor), len(QUALITY_LEVELS)):
            level = QUALITY_LEVELS[q]
            out.append(Option(wire.MODE_DEGRADED, reason, node.est_ms * quality.factor(level),
                              node.cost_usd, 0.0, node, None, level))
    return out


def _cloud_options(entry: ClassEntry, node: NodeRt | None, req: RouteRequest, snap: Snapshot,
                   edge_why: str) -> list[Option]:
    """Split rungs (when a node was picked and degradation is accepted), then cloud rungs."""
    split = snap.policy.split
    out: list[Option] = []
    if node is not None and req.accept_degradation:
        features = int(req.payload_bytes * split.payload_fraction)
        for pool in entry.pools:
            cloud = pool.cost(features) * _SPLIT_COST_FRACTION
            out.append(Option(wire.MODE_SPLIT, wire.R_SLO, pool.est_ms + _SPLIT_EXTRA_MS,
                              node.cost_usd + cloud, cloud, node, pool, None))
    for pool in entry.pools:
        cloud = pool.cost(req.payload_bytes)
        out.append(Option(wire.MODE_CLOUD, edge_why, pool.est_ms, cloud, cloud, None, pool,
                          None))
    return out


def note(opt: Option, verdict: str) -> Candidate:
    """The explain line for one option."""
    target = opt.node.id if opt.node is not None else (opt.pool.id if opt.pool else "?")
    if opt.mode == wire.MODE_SPLIT and opt.pool is not None and opt.node is not None:
        target = f"{opt.node.id}+{opt.pool.id}"
    return Candidate(target, opt.mode, verdict, opt.est_ms, opt.cost_usd, opt.quality)


def plan(req: RouteRequest, snap: Snapshot, budget: BudgetView, *, now: float,
         notes: list[Candidate] | None = None) -> Plan:
    """Rank every option for `req` under `snap` (pure: nothing is held or changed).

    `notes`, when given, collects every exclusion, walk step and verdict (for explain).
    """
    policy = snap.policy
    budgets = policy.budgets
    account = account_of(budgets, req.tenant)
    if account is None:
        return Plan(req, snap, None, None, (), refusal=refusal(
            wire.STATUS_UNKNOWN_TENANT, wire.E_UNKNOWN_TENANT, wire.R_UNKNOWN_TENANT,
            f"tenant '{req.tenant}' is not named in the policy and budgets.unknown_tenant "
            "is refuse", policy.digest))
    entry = snap.entry(req.residency, req.model)
    if notes is not None:
        notes.extend(Candidate(t, "-", why) for t, why in entry.excluded)
    node, home = pick_edge(entry, snap, req.key if req.key is not None else req.request_id,
                           notes)
    if node is not None:
        edge_why = wire.R_SLO
    elif entry.members:
        edge_why = wire.R_CAPACITY
    else:
        edge_why = wire.R_RESIDENCY
    ladder = _edge_options(node, req, snap, home) if node is not None else []
    ladder += _cloud_options(entry, node, req, snap, edge_why)
    max_cost = INF if req.max_cost_usd is None else req.max_cost_usd
    slo = req.slo_ms
    slack = slo * policy.slo.degraded_slack
    loads = snap.tracker.loads
    within: list[Option] = []
    beyond: list[Option] = []
    cost_blocked = False
    for opt in ladder:
        if opt.cost_usd > max_cost + 1e-12:
            cost_blocked = True
            if notes is not None:
                notes.append(note(opt, f"cost {opt.cost_usd:.6f} over max {max_cost:.6f}"))
            continue
        pool = opt.pool
        if pool is not None and 0 < pool.max_inflight <= loads[pool.slot]:
            if notes is not None:
                notes.append(note(opt, "pool at max_inflight"))
            continue
        bound = slack if opt.mode == wire.MODE_DEGRADED else slo
        if opt.est_ms > bound:
            beyond.append(opt)
            if notes is not None:
                notes.append(note(opt, f"estimate {opt.est_ms:.0f} ms over {bound:.0f} ms"))
        else:
            within.append(opt)
    if beyond:
        within += _best_effort(beyond, budget, budgets, account, now)
    return Plan(req, snap, account, entry, tuple(within), cost_blocked,
                notes=tuple(notes) if notes is not None else ())


def _best_effort(beyond: list[Option], budget: BudgetView, budgets: BudgetConfig,
                 account: str, now: float) -> list[Option]:
    """Options missing the SLO, fastest first; over the soft budget, pure cloud last."""
    over_soft = any(o.cloud_usd > 0 for o in beyond) and \
        budget.state(budgets, account, now).over_soft
    ranked = sorted(beyond, key=lambda o: (over_soft and o.mode == wire.MODE_CLOUD, o.est_ms))
    soft_reason = wire.R_BUDGET_SOFT if over_soft else wire.R_BEST_EFFORT
    return [replace(o, reason=wire.R_BEST_EFFORT if o.mode == wire.MODE_CLOUD else soft_reason)
            for o in ranked]
