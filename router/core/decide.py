"""The mode ladder: edge → edge-degraded → split → cloud → refusal (docs/reference.md).

`decide` is the one entry point the ext_proc server, the simulator and
`explain` share. It reads the table once, does one bounded-load walk, then
climbs the ladder taking the first rung that meets the SLO, the request's max
cost and the tenant's hard budget. When no rung meets the SLO it serves best
effort: the fastest affordable option, except that a tenant above its soft
budget is kept off pure cloud while an edge or split option exists. Only when
nothing is eligible, affordable or within budget is the request refused.

With `commit=True` the chosen node/pool slots are acquired and the cloud
estimate reserved; `finish` gives both back when the request ends.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from router import wire
from router.core.budget import BudgetLedger, Reservation
from router.core.decision import Candidate, Decision, refusal
from router.core.model import QUALITY_LEVELS
from router.core.request import RouteRequest
from router.core.ring import cap, hash64
from router.core.table import ClassEntry, NodeRt, PoolRt, RouteTable

INF = float("inf")
# The retired split.cloud_cost_fraction / split.extra_latency_ms, kept until the
# payload-aware split estimate (node feature_ms, uplinks, cloud_compute_fraction) lands.
_SPLIT_COST_FRACTION = 0.3
_SPLIT_EXTRA_MS = 15.0


@dataclass(slots=True)
class _Option:
    mode: str
    reason: str
    est_ms: float
    cost_usd: float
    cloud_usd: float
    node: NodeRt | None
    pool: PoolRt | None
    quality: str | None


def pick_edge(entry: ClassEntry, table: RouteTable, key: str,
              notes: list[Candidate] | None = None) -> tuple[NodeRt | None, bool]:
    """Bounded-load walk: (first eligible node under its cap, whether it is the key's home)."""
    keys = entry.ring.keys
    n = len(keys)
    if n == 0:
        return None, False
    nodes = table.nodes
    loads = table.tracker.loads
    total = table.tracker.total(entry.gid, entry.member_slots)
    eps = table.policy.balance_factor
    wsum = entry.weight_sum
    owners = entry.ring.owners
    start = bisect_right(keys, hash64(key))
    want = len(entry.members)
    seen: set[int] = set()
    first = True
    for pos in range(start, start + n):
        owner = owners[pos - n if pos >= n else pos]
        if owner in seen:
            continue
        seen.add(owner)
        node = nodes[owner]
        load = loads[node.slot]
        limit = cap(total, node.weight, wsum, eps)
        if load < node.slots and load < limit:
            if notes is not None:
                notes.append(Candidate(node.id, wire.MODE_EDGE, "picked by bounded-load walk",
                                       node.est_ms, node.cost_usd, load=load, cap=limit))
            return node, first
        if notes is not None:
            why = "out of slots" if load >= node.slots else "at its bounded-load cap"
            notes.append(Candidate(node.id, wire.MODE_EDGE, why, node.est_ms, node.cost_usd,
                                   load=load, cap=min(limit, node.slots)))
        first = False
        if len(seen) == want:
            break
    return None, False


def _edge_options(node: NodeRt, req: RouteRequest, table: RouteTable, home: bool
                  ) -> list[_Option]:
    """Edge rungs for the picked node: full, then each degraded quality."""
    policy = table.policy
    out: list[_Option] = []
    if node.quality_floor == 0:
        out.append(_Option(wire.MODE_EDGE, wire.R_AFFINITY if home else "balance", node.est_ms,
                           node.cost_usd, 0.0, node, None, "full"))
    if req.accept_degradation:
        for q in range(max(1, node.quality_floor), len(QUALITY_LEVELS)):
            quality = QUALITY_LEVELS[q]
            est = node.est_ms * policy.quality.factor(quality)
            reason = wire.R_VRAM if node.quality_floor > 0 else wire.R_SLO
            out.append(_Option(wire.MODE_DEGRADED, reason, est, node.cost_usd, 0.0, node, None,
                               quality))
    return out


def _pool_free(pool: PoolRt, table: RouteTable) -> bool:
    return pool.max_inflight <= 0 or table.tracker.loads[pool.slot] < pool.max_inflight


def _cloud_options(entry: ClassEntry, node: NodeRt | None, req: RouteRequest,
                   table: RouteTable, edge_why: str) -> list[_Option]:
    """Split rungs (when a node was picked and degradation is accepted), then cloud rungs."""
    split = table.policy.split
    out: list[_Option] = []
    if node is not None and req.accept_degradation:
        features = int(req.payload_bytes * split.payload_fraction)
        for pool in entry.pools:
            cloud = pool.cost(features) * _SPLIT_COST_FRACTION
            out.append(_Option(wire.MODE_SPLIT, wire.R_SLO, pool.est_ms + _SPLIT_EXTRA_MS,
                               node.cost_usd + cloud, cloud, node, pool, None))
    for pool in entry.pools:
        cloud = pool.cost(req.payload_bytes)
        out.append(_Option(wire.MODE_CLOUD, edge_why, pool.est_ms, cloud, cloud, None, pool,
                           None))
    return out


def decide(req: RouteRequest, table: RouteTable, ledger: BudgetLedger, *, now: float,
           commit: bool = True, explain: bool = False) -> Decision:
    """Route one request; see the module docstring for the ladder."""
    policy = table.policy
    notes: list[Candidate] | None = [] if explain else None
    entry = table.entry(req.residency, req.model)
    if notes is not None:
        notes.extend(Candidate(t, "-", why) for t, why in entry.excluded)
    key = req.key if req.key is not None else req.request_id
    node, home = pick_edge(entry, table, key, notes)
    if node is not None:
        edge_why = wire.R_SLO
    elif entry.members:
        edge_why = wire.R_CAPACITY
    else:
        edge_why = wire.R_RESIDENCY
    options = _edge_options(node, req, table, home) if node is not None else []
    options += _cloud_options(entry, node, req, table, edge_why)
    max_cost = INF if req.max_cost_usd is None else req.max_cost_usd
    slo = req.slo_ms
    slack = slo * policy.slo.degraded_slack
    blocked = {"budget": False, "cost": False, "pool": False}

    def admissible(opt: _Option) -> tuple[bool, Reservation | None, str]:
        if opt.cost_usd > max_cost + 1e-12:
            blocked["cost"] = True
            return False, None, f"cost {opt.cost_usd:.6f} over max {max_cost:.6f}"
        if opt.pool is not None and not _pool_free(opt.pool, table):
            blocked["pool"] = True
            return False, None, "pool at max_inflight"
        if opt.cloud_usd <= 0:
            return True, None, ""
        if not commit:
            if ledger.state(req.tenant, now).fits(opt.cloud_usd):
                return True, None, ""
        else:
            held = ledger.reserve(req.tenant, opt.cloud_usd, now)
            if held is not None:
                return True, held, ""
        blocked["budget"] = True
        return False, None, "hard budget reached"

    chosen: _Option | None = None
    held: Reservation | None = None
    for opt in options:
        bound = slack if opt.mode == wire.MODE_DEGRADED else slo
        if opt.est_ms > bound:
            if notes is not None:
                notes.append(_note(opt, f"estimate {opt.est_ms:.0f} ms over {bound:.0f} ms"))
            continue
        ok, held, why = admissible(opt)
        if ok:
            chosen = opt
            break
        if notes is not None:
            notes.append(_note(opt, why))
    if chosen is None:
        chosen, held = _best_effort(options, req, ledger, now, admissible, notes)
    if chosen is None:
        return _refuse(req, table, ledger, entry, node, blocked, now,
                       tuple(notes) if notes is not None else ())
    if notes is not None:
        notes.append(_note(chosen, "chosen"))
    slots: tuple[int, ...] = ()
    if commit:
        slots = tuple(x.slot for x in (chosen.node, chosen.pool) if x is not None)
        acquire = table.tracker.acquire
        for s in slots:
            acquire(s)
    target = chosen.node if chosen.node is not None else chosen.pool
    assert target is not None
    return Decision(
        status=200, mode=chosen.mode, reason=chosen.reason, policy=policy.digest,
        target=target.address, node=target.id, quality=chosen.quality,
        split_cloud=chosen.pool.address if chosen.mode == wire.MODE_SPLIT and chosen.pool
        else None,
        split_pool=chosen.pool.id if chosen.mode == wire.MODE_SPLIT and chosen.pool else None,
        cost_usd=chosen.cost_usd, est_ms=chosen.est_ms, slots=slots, reservation=held,
        candidates=tuple(notes) if notes is not None else (),
    )


def _note(opt: _Option, verdict: str) -> Candidate:
    target = opt.node.id if opt.node is not None else (opt.pool.id if opt.pool else "?")
    if opt.mode == wire.MODE_SPLIT and opt.pool is not None and opt.node is not None:
        target = f"{opt.node.id}+{opt.pool.id}"
    return Candidate(target, opt.mode, verdict, opt.est_ms, opt.cost_usd, opt.quality)


def _best_effort(options: list[_Option], req: RouteRequest, ledger: BudgetLedger, now: float,
                 admissible: object, notes: list[Candidate] | None
                 ) -> tuple[_Option | None, Reservation | None]:
    """Nothing meets the SLO: fastest affordable option; over soft budget, cloud last."""
    if not options:
        return None, None
    check = admissible  # typed loosely to keep the closure local to decide()
    over_soft = any(o.cloud_usd > 0 for o in options) and ledger.state(req.tenant, now).over_soft
    ranked = sorted(options, key=lambda o: ((over_soft and o.mode == wire.MODE_CLOUD), o.est_ms))
    for opt in ranked:
        ok, held, why = check(opt)  # type: ignore[operator]
        if ok:
            opt.reason = wire.R_BUDGET_SOFT if over_soft and opt.mode != wire.MODE_CLOUD \
                else wire.R_BEST_EFFORT
            return opt, held
        if notes is not None:
            notes.append(_note(opt, f"best effort: {why}"))
    return None, None


def _refuse(req: RouteRequest, table: RouteTable, ledger: BudgetLedger, entry: ClassEntry,
            node: NodeRt | None, blocked: dict[str, bool], now: float,
            notes: tuple[Candidate, ...]) -> Decision:
    digest = table.policy.digest
    if blocked["budget"]:
        state = ledger.state(req.tenant, now)
        return refusal(wire.STATUS_BUDGET, wire.E_BUDGET, wire.R_BUDGET,
                       f"tenant '{req.tenant}' has used ${state.used_usd:.2f} of its "
                       f"${state.hard_usd:.2f} hard limit for {state.period}",
                       digest, retry_after=ledger.retry_after(now), candidates=notes)
    if blocked["cost"]:
        return refusal(wire.STATUS_UNSERVABLE, wire.E_MAX_COST, wire.R_MAX_COST,
                       f"every eligible option costs more than x-affinity-max-cost "
                       f"{req.max_cost_usd}", digest, candidates=notes)
    if not entry.members and not entry.pools:
        tags = ",".join(sorted(req.residency)) or "none"
        return refusal(wire.STATUS_UNSERVABLE, wire.E_UNSERVABLE, wire.R_RESIDENCY,
                       f"no healthy node or pool satisfies residency [{tags}] and model "
                       f"{req.model or 'any'}", digest, candidates=notes)
    return refusal(wire.STATUS_UNSERVABLE, wire.E_UNSERVABLE, wire.R_CAPACITY,
                   "every eligible edge node is at capacity and no cloud pool can take it",
                   digest, retry_after=1, candidates=notes)


def finish(decision: Decision, table: RouteTable, ledger: BudgetLedger,
           actual_usd: float | None = None) -> None:
    """Hand back what `decision` holds: its in-flight slots and its budget reservation."""
    release = table.tracker.release
    for slot in decision.slots:
        release(slot)
    if decision.reservation is not None:
        ledger.settle(decision.reservation, actual_usd)
