"""The mode ladder as a pure plan: request + snapshot + budget view → ranked options.

Ladder: edge → edge-degraded → split → cloud (docs/reference.md, "Routing").
`plan` reads the snapshot once, does one bounded-load walk, builds every rung
with its latency estimate and cost (`router.core.estimate`: payload- and
bandwidth-aware, with the live in-flight count; a split's node comes from a
second walk over feature slots, so a full edge still splits), drops the rungs this request can never
take (over its max cost, a pool at its `max_inflight`), and ranks the rest:
first the rungs within the SLO (degraded ones within `degraded_slack` × SLO)
in ladder order; then, as best effort, the others fastest first, except that a
tenant over its soft budget gets pure cloud last. It changes nothing and reads
no clock: `router.core.admit` takes the first ranked option whose slots and
budget it can hold, `explain` and the simulator call exactly this.

A tenant the policy does not name shares the policy's default account, or is
refused (403) with `budgets.unknown_tenant: refuse`; that is decided here too,
and so are the account's rules (`router.core.tenancy`: residency floor, max cost,
allowed models), before anything is ranked.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from router import wire
from router.core import estimate
from router.core.budget import BudgetState, account_of
from router.core.decision import Candidate, Decision, refusal
from router.core.pick import Pick, Walk, home_of, notes_of, pick_edge, pick_feature
from router.core.policy import QUALITY_LEVELS, BudgetConfig
from router.core.request import RouteRequest
from router.core.shed import moving, tier
from router.core.table import ClassEntry, NodeRt, PoolRt, Snapshot
from router.core.tenancy import narrow

INF = float("inf")


class BudgetView(Protocol):
    """What the plan reads of spend: a tenant account's standing now (no I/O)."""

    def state(self, budgets: BudgetConfig, account: str, now: float) -> BudgetState:
        """Committed and reserved spend of `account` against its limits."""
        ...


class Option(NamedTuple):
    """One rung the request could take, with its estimate and what it would cost.

    Named tuples (here and `Plan`): immutable like a frozen dataclass, several
    times cheaper to build, and a few are built for every request.
    """

    mode: str
    reason: str
    est_ms: float
    cost_usd: float
    cloud_usd: float  # the part of the cost that draws on the tenant's cloud budget
    node: NodeRt | None
    pool: PoolRt | None
    quality: str | None
    home: bool = False  # the node is the key's home (first on its ring)
    fill: float = 0.0  # (load + 1) / cap of the node when it was picked
    held: bool = False  # over its estimate's bound, but the key is not among those shed


# Why a rung is not tried (or is tried late): over max cost, its pool full, over its bound,
# or over its bound but kept (the key is not among those shed from its node).
COST, POOL_FULL, SLOW, HELD = "cost", "pool-full", "slow", "held"


class Plan(NamedTuple):
    """Ranked options for one request, or why it must be refused before admission."""

    request: RouteRequest
    snapshot: Snapshot
    account: str | None  # budget account the request spends from (None: refused tenant)
    entry: ClassEntry | None
    options: tuple[Option, ...]  # in the order admission tries them
    cost_blocked: bool = False  # an option was dropped for the request's max cost
    refusal: Decision | None = None  # refused at plan time (unknown tenant)
    home_slot: int = -1  # load slot of the key's home node, where admission counts it
    walks: tuple[Walk, ...] = ()  # the edge walk, then the feature walk if one was made
    dropped: tuple[Drop, ...] = ()  # (rung, why, its bound) for each rung not tried


Drop = tuple["Option", str, float]


def _full_option(pick: Pick, req: RouteRequest, key: str, demoted: bool) -> Option | None:
    """The full-quality edge rung on the picked node (None when VRAM forbids full quality,
    or the key's home serves it degraded and it accepts that)."""
    node = pick.node
    if node.quality_floor != 0 or not estimate.full_quality(key, node) or \
            (demoted and req.accept_degradation):
        return None
    full_ms = estimate.edge_ms(node, pick.load)
    fill = (pick.load + 1) / pick.cap if pick.cap else 1.0
    held = False
    if full_ms > req.slo_ms:  # over its bound: held only if this key is not among those shed
        held = estimate.stays(key, node, estimate.shed_fraction(node.est_ms, req.slo_ms,
                                                                node.base_ms))
    return Option(wire.MODE_EDGE, wire.R_AFFINITY if pick.home else wire.R_BALANCE,
                  full_ms, node.cost_usd, 0.0, node, None, "full", pick.home, fill, held)


def _degraded_options(pick: Pick, req: RouteRequest, snap: Snapshot, key: str) -> list[Option]:
    """Edge rungs on the picked node at each quality below full (degradation accepted)."""
    if not req.accept_degradation:
        return []
    node = pick.node
    quality = snap.policy.quality
    full_ms = estimate.edge_ms(node, pick.load)
    fill = (pick.load + 1) / pick.cap if pick.cap else 1.0
    vram = node.quality_floor > 0 or not estimate.full_quality(key, node)
    reason = wire.R_VRAM if vram else wire.R_SLO
    return [Option(wire.MODE_DEGRADED, reason, full_ms * quality.factor(level), node.cost_usd,
                   0.0, node, None, level, pick.home, fill)
            for level in QUALITY_LEVELS[max(1, node.quality_floor):]]


def _cloud_options(entry: ClassEntry, req: RouteRequest, snap: Snapshot, key: str,
                   edge_why: str) -> tuple[list[Option], Walk | None]:
    """Split rungs (degradation accepted, a node with a free feature slot), then cloud rungs;
    and the walk over feature slots, if one was made."""
    out: list[Option] = []
    payload = req.payload_bytes
    walk = None
    if req.accept_degradation and entry.pools:
        # features need the residency, not the model: the pool does the inference
        walk = pick_feature(snap.entry(req.residency, None), snap, key)
        pick = walk.pick
        if pick is not None:
            fill = (pick.load + 1) / pick.cap if pick.cap else 1.0
            for pool in entry.pools:
                ms, usd, cloud_usd = estimate.split(pick.node, pool, payload, snap.policy.split)
                out.append(Option(wire.MODE_SPLIT, edge_why, ms, usd, cloud_usd, pick.node,
                                  pool, None, pick.home, fill))
    for pool in entry.pools:
        ms, usd = estimate.cloud(pool, payload, snap.cloud_uplink_mbps)
        out.append(Option(wire.MODE_CLOUD, edge_why, ms, usd, usd, None, pool, None))
    return out, walk


def _tier(key: str, home: NodeRt, now: float, span: float) -> int:
    """The key's tier at its home now, the home's shares moving since its last refresh."""
    since = home.seen_at
    full_from, keep_from = home.shares_from
    return tier(key, home.id, moving(full_from, home.full_keep, since, now, span),
                moving(keep_from, home.keep_share, since, now, span))


def note(opt: Option, verdict: str) -> Candidate:
    """The explain line for one option."""
    target = opt.node.id if opt.node is not None else (opt.pool.id if opt.pool else "?")
    if opt.mode == wire.MODE_SPLIT and opt.pool is not None and opt.node is not None:
        target = f"{opt.node.id}+{opt.pool.id}"
    return Candidate(target, opt.mode, verdict, opt.est_ms, opt.cost_usd, opt.quality)


def plan(req: RouteRequest, snap: Snapshot, budget: BudgetView, *, now: float) -> Plan:
    """Rank the options for `req` under `snap` (pure: nothing is held or changed).

    The common case — the key's node at full quality, within the SLO and max cost — is
    taken as it is, before the other rungs are even built.
    """
    start = _start(req, snap, now)
    if isinstance(start, Plan):
        return start
    req, account, entry, _key, walk, first, home_slot, shed = start
    if first is not None and not shed and (first.est_ms <= req.slo_ms or first.held) and \
            first.cost_usd <= (INF if req.max_cost_usd is None else req.max_cost_usd) + 1e-12:
        # positional: a named tuple built from keywords costs twice as much
        return Plan(req, snap, account, entry, (first,), False, None, home_slot, (walk,))
    return _rank(start, snap, budget, now)


def plan_whole(req: RouteRequest, snap: Snapshot, budget: BudgetView, *, now: float) -> Plan:
    """`plan` with every rung built and ranked even when the first would do (explain):
    its `dropped` says why each rung admission will not try was dropped."""
    start = _start(req, snap, now)
    return start if isinstance(start, Plan) else _rank(start, snap, budget, now)


Start = tuple[RouteRequest, str, ClassEntry, str, Walk, "Option | None", int, bool]


def _start(req: RouteRequest, snap: Snapshot, now: float) -> Plan | Start:
    """The tenant's account and rules, the request's class, its walk, its first rung, its
    home's load slot and whether its tier there sends it off the edge first; or the plan
    that refuses it (unknown tenant, model not allowed)."""
    policy = snap.policy
    budgets = policy.budgets
    account = account_of(budgets, req.tenant)
    if account is None:
        return Plan(req, snap, None, None, (), refusal=refusal(
            wire.STATUS_UNKNOWN_TENANT, wire.E_UNKNOWN_TENANT, wire.R_UNKNOWN_TENANT,
            f"tenant '{req.tenant}' is not named in the policy and budgets.unknown_tenant "
            "is refuse", policy.digest))
    rules = budgets.tenant(account)
    if rules is not None and rules.restricts:
        held = narrow(req, rules)
        if isinstance(held, str):
            return Plan(req, snap, account, None, (), refusal=refusal(
                wire.STATUS_FORBIDDEN, wire.E_MODEL_NOT_ALLOWED, wire.R_TENANT_MODEL, held,
                policy.digest))
        req = held
    entry = snap.entry(req.residency, req.model)
    key = req.key if req.key is not None else req.request_id
    walk = pick_edge(entry, snap, key)
    pick = walk.pick
    home = pick.node if pick is not None and pick.home else home_of(entry, snap, key)
    home_slot = home.slot if home is not None else -1
    # the key's tier at its home (router.core.shed): degraded first, or split and cloud first
    # (when they meet its SLO)
    level = _tier(key, home, now, snap.policy.refresh_seconds) if home is not None else 0
    shed = level == 2 and bool(entry.pools)
    first = _full_option(pick, req, key, level > 0) if pick is not None else None
    return req, account, entry, key, walk, first, home_slot, shed


def _rank(start: Start, snap: Snapshot, budget: BudgetView, now: float) -> Plan:
    """Every rung built, the ones this request can never take dropped, the rest ranked."""
    req, account, entry, key, walk, first, home_slot, shed = start
    pick = walk.pick
    ladder: list[Option] = []
    if pick is not None:
        if first is not None:
            ladder.append(first)
        ladder += _degraded_options(pick, req, snap, key)
    if pick is not None and not shed:
        edge_why = wire.R_SLO
    elif entry.ring.members:
        edge_why = wire.R_CAPACITY
    else:
        edge_why = wire.R_RESIDENCY
    off_edge, features = _cloud_options(entry, req, snap, key, edge_why)
    ladder = off_edge + ladder if shed else ladder + off_edge
    max_cost = INF if req.max_cost_usd is None else req.max_cost_usd
    within, beyond, dropped = _sort(ladder, snap, req.slo_ms, max_cost)
    if beyond:
        within += _best_effort(beyond, budget, snap.policy.budgets, account, now)
    return Plan(req, snap, account, entry, tuple(within),
                any(why == COST for _, why, _b in dropped), None, home_slot,
                (walk,) if features is None else (walk, features), tuple(dropped))


def _sort(ladder: list[Option], snap: Snapshot, slo: float, max_cost: float
          ) -> tuple[list[Option], list[Option], list[Drop]]:
    """(options within their bound, options beyond it, why the others were dropped — and
    which ones are kept though over their bound); options over max cost or on a pool at
    max_inflight are dropped."""
    slack = slo * snap.policy.slo.degraded_slack
    loads, held = snap.tracker.loads, snap.tracker.held
    within: list[Option] = []
    beyond: list[Option] = []
    dropped: list[Drop] = []
    for opt in ladder:
        if opt.cost_usd > max_cost + 1e-12:
            dropped.append((opt, COST, max_cost))
            continue
        pool = opt.pool
        if pool is not None and pool.max_inflight > 0 and (
                pool.max_inflight <= loads[pool.slot] or held[pool.slot] <= loads[pool.slot]):
            dropped.append((opt, POOL_FULL, 0.0))
            continue
        bound = slack if opt.mode == wire.MODE_DEGRADED else slo
        if opt.est_ms > bound and not opt.held:
            beyond.append(opt)
            dropped.append((opt, SLOW, bound))
        else:
            within.append(opt)
            if opt.held:
                dropped.append((opt, HELD, bound))
    return within, beyond, dropped


def explained(p: Plan) -> list[Candidate]:
    """What explain says of a plan: the class's exclusions, each walk's steps, each rung
    dropped or ranked late and why."""
    out = [Candidate(t, "-", why) for t, why in p.entry.excluded] if p.entry else []
    for i, walk in enumerate(p.walks):
        out += notes_of(walk, i == 1)
    for opt, why, bound in p.dropped:
        if why == COST:
            text = f"cost {opt.cost_usd:.6f} over max {bound:.6f}"
        elif why == POOL_FULL:
            text = "pool at max_inflight"
        else:
            text = f"estimate {opt.est_ms:.0f} ms over {bound:.0f} ms"
            if why == HELD:
                text += ", but this key is not among the share shed from the node"
        out.append(note(opt, text))
    return out


def _best_effort(beyond: list[Option], budget: BudgetView, budgets: BudgetConfig,
                 account: str, now: float) -> list[Option]:
    """Options missing the SLO, fastest first; over the soft budget, pure cloud last."""
    over_soft = any(o.cloud_usd > 0 for o in beyond) and \
        budget.state(budgets, account, now).over_soft
    ranked = sorted(beyond, key=lambda o: (over_soft and o.mode == wire.MODE_CLOUD, o.est_ms))
    soft_reason = wire.R_BUDGET_SOFT if over_soft else wire.R_BEST_EFFORT
    return [o._replace(reason=wire.R_BEST_EFFORT if o.mode == wire.MODE_CLOUD else soft_reason)
            for o in ranked]
