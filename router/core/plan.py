"""The mode ladder as a pure plan: request + snapshot + budget view → ranked options.

Ladder: edge → edge-degraded → split → cloud (docs/reference.md, "Routing").
`plan` reads the snapshot once, does one bounded-load walk, builds every rung
with its latency estimate and cost (`router.core.estimate`: payload- and
bandwidth-aware, with the live in-flight count; a split's node comes from a
second walk over feature slots, so a full edge still splits), drops the rungs this request can never
take (over its max cost, a pool at its `max_inflight`), and ranks the rest:
first the rungs within the SLO (degraded ones within `degraded_slack` × SLO)
in ladder order; then, as best effort, the others fastest first, except that a
tenant over its soft budget gets pure cloud last. A key its home sheds
(`router.core.shed`) gets the rungs off the edge first, within the SLO or not.
It changes nothing and reads no clock: `router.core.admit` takes the first
ranked option whose slots and budget it can hold, `explain` and the simulator
call exactly this.

A tenant the policy does not name shares the policy's default account, or is
refused (403) with `budgets.unknown_tenant: refuse`; that is decided here too,
and so are the account's rules (`router.core.tenancy`: residency floor, max cost,
allowed models), before anything is ranked.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from router import wire
from router.core.budget import BudgetState, account_of
from router.core.decision import Candidate, Decision, refusal
from router.core.pick import Pick, Walk, home_of, home_queue, notes_of, pick_edge
from router.core.policy import BudgetConfig
from router.core.request import RouteRequest
from router.core.rungs import (
    COST,
    HELD,
    POOL_FULL,
    SLOW,
    Option,
    cloud_options,
    degraded_options,
    full_option,
    off_edge_meets,
)
from router.core.shed import moving, tier
from router.core.table import ClassEntry, NodeRt, Snapshot
from router.core.tenancy import narrow

INF = float("inf")


class BudgetView(Protocol):
    """What the plan reads of spend: a tenant account's standing now (no I/O)."""

    def state(self, budgets: BudgetConfig, account: str, now: float) -> BudgetState:
        """Committed and reserved spend of `account` against its limits."""
        ...


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
    loose: bool = False  # its home degrades keys and a rung off the edge meets its SLO


Drop = tuple["Option", str, float]


def home_tier(key: str, home: NodeRt, now: float, span: float, loose: bool) -> int:
    """The key's tier at its home now, the home's shares moving since its last refresh
    (`loose`: its class meets its SLO off the edge, so it is among the keys shed first)."""
    since = home.seen_at
    full_from, tight_from, loose_from = home.shares_from
    keep = moving(loose_from, home.keep_loose, since, now, span) if loose else \
        moving(tight_from, home.keep_share, since, now, span)
    return tier(key, home.id, moving(full_from, home.full_keep, since, now, span), keep)


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
    req, account, entry, _key, walk, first, home_slot, shed, loose = start
    if first is not None and not shed and (first.est_ms <= req.slo_ms or first.held) and \
            first.cost_usd <= (INF if req.max_cost_usd is None else req.max_cost_usd) + 1e-12:
        # positional: a named tuple built from keywords costs twice as much
        return Plan(req, snap, account, entry, (first,), False, None, home_slot, (walk,), (),
                    loose)
    return _rank(start, snap, budget, now)


def plan_whole(req: RouteRequest, snap: Snapshot, budget: BudgetView, *, now: float) -> Plan:
    """`plan` with every rung built and ranked even when the first would do (explain):
    its `dropped` says why each rung admission will not try was dropped."""
    start = _start(req, snap, now)
    return start if isinstance(start, Plan) else _rank(start, snap, budget, now)


Start = tuple[RouteRequest, str, ClassEntry, str, Walk, "Option | None", int, int, bool]

# A key's standing at its home (its tier, router.core.shed): kept on the edge; shed, off the
# edge first where that meets its SLO; shed anyway, nothing off the edge meeting its SLO.
KEPT, SHED, SHED_ANYWAY = 0, 1, 2


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
    # (within its SLO first; when nothing off the edge can meet it, off the edge all the same)
    # whether its class meets its SLO off the edge: asked only where the home degrades its
    # keys, as only there are keys shed (those first) and is this demand counted apart
    loose = home is not None and bool(entry.pools) and home.degrading and \
        off_edge_meets(entry, req, home, snap)
    level = home_tier(key, home, now, snap.policy.refresh_seconds, loose) \
        if home is not None else 0
    shed = KEPT
    if level == 2 and entry.pools and home is not None:
        meets = loose if home.degrading else off_edge_meets(entry, req, home, snap)
        shed = SHED if meets else SHED_ANYWAY
    first = full_option(pick, req, key, level > 0) if pick is not None else None
    if pick is not None and shed == KEPT and snap.queue_per_slot > 0.0:
        # the key's home full but for its queue: wait there, warm, when that meets the SLO
        at_home = home_queue(walk, snap.queue_per_slot)
        if at_home is not None:
            waited = full_option(at_home, req, key, level > 0)
            if _meets_at(at_home, waited, req, snap, key):
                walk, pick, first = Walk(at_home, walk.passed[:1], True), at_home, waited
    return req, account, entry, key, walk, first, home_slot, shed, loose


def _meets_at(pick: Pick, first: Option | None, req: RouteRequest, snap: Snapshot,
              key: str) -> bool:
    """Whether the key's first edge rung on `pick` meets its bound, the pick's wait included:
    `first`, its full-quality rung there (`full_option`), or where that is None (its home
    serves it degraded, or VRAM forbids full quality) the first degraded one."""
    if first is not None:
        return first.est_ms <= req.slo_ms
    bound = req.slo_ms * snap.policy.slo.degraded_slack
    return any(o.est_ms <= bound for o in degraded_options(pick, req, snap, key)[:1])


def _rank(start: Start, snap: Snapshot, budget: BudgetView, now: float) -> Plan:
    """Every rung built, the ones this request can never take dropped, the rest ranked."""
    req, account, entry, key, walk, first, home_slot, shed, loose = start
    pick = walk.pick
    ladder: list[Option] = []
    if pick is not None:
        if first is not None:
            ladder.append(first)
        ladder += degraded_options(pick, req, snap, key)
    if pick is not None and not shed:
        edge_why = wire.R_SLO
    elif entry.ring.members:
        edge_why = wire.R_CAPACITY
    else:
        edge_why = wire.R_RESIDENCY
    off_edge, features = cloud_options(entry, req, snap, key, edge_why)
    max_cost = INF if req.max_cost_usd is None else req.max_cost_usd
    within: list[Option] = []
    dropped: list[Drop] = []
    if shed == SHED_ANYWAY:  # off the edge, though it misses the SLO; the edge as a fallback
        within, beyond, dropped = _sort(off_edge, snap, req.slo_ms, max_cost)
        within += _steady_first(_best_effort(beyond, budget, snap.policy.budgets, account,
                                             now), req.slo_ms)
        off_edge = []
    kept, beyond, more = _sort(off_edge + ladder if shed else ladder + off_edge, snap,
                               req.slo_ms, max_cost)
    within += kept
    dropped += more
    if beyond:
        within += _best_effort(beyond, budget, snap.policy.budgets, account, now)
    return Plan(req, snap, account, entry, tuple(within),
                any(why == COST for _, why, _b in dropped), None, home_slot,
                (walk,) if features is None else (walk, features), tuple(dropped), loose)


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


def _steady_first(ranked: list[Option], slo: float) -> list[Option]:
    """A shed key's rungs off the edge, all missing its SLO and ranked fastest first: a pool
    goes before a split, whose free feature slot comes and goes (so the key would hop
    between them), unless the split is faster by more than the SLO (the pool's gateway
    queue costs more than a hop); as they are when the budget ranks them (over the soft
    budget, pure cloud last)."""
    if not ranked or ranked[0].mode != wire.MODE_SPLIT or \
            any(o.reason == wire.R_BUDGET_SOFT for o in ranked):
        return ranked
    pool_ms = min((o.est_ms for o in ranked if o.mode == wire.MODE_CLOUD), default=INF)
    if ranked[0].est_ms + slo < pool_ms:
        return ranked
    return sorted(ranked, key=lambda o: o.mode == wire.MODE_SPLIT)


def _best_effort(beyond: list[Option], budget: BudgetView, budgets: BudgetConfig,
                 account: str, now: float) -> list[Option]:
    """Options missing the SLO, fastest first; over the soft budget, pure cloud last."""
    over_soft = any(o.cloud_usd > 0 for o in beyond) and \
        budget.state(budgets, account, now).over_soft
    ranked = sorted(beyond, key=lambda o: (over_soft and o.mode == wire.MODE_CLOUD, o.est_ms))
    soft_reason = wire.R_BUDGET_SOFT if over_soft else wire.R_BEST_EFFORT
    return [o._replace(reason=wire.R_BEST_EFFORT if o.mode == wire.MODE_CLOUD else soft_reason)
            for o in ranked]
