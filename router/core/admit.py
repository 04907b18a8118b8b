"""Admission: take the first ranked option of a plan whose slots and budget can be held.

`admit` is the one step that changes state: it acquires the chosen node/pool's
in-flight slots and reserves the cloud estimate from the tenant's local
budget account (`router.core.budget`: in memory, never the store itself), so
the request path never waits on I/O. A cloud option refused because this
router's lease is short (not the hard limit) gives a 429 `budget-throttled`
refusal with retry-after 1: the server may wait briefly for the lease's
top-up and plan once more. Its answer is a `Routed`: the route (what Envoy
gets), the hold, and the rung taken (`router.core.decision`). `finish` hands
the hold back when the HTTP request ends, however it ends, charging a request
the pool failed as the pool's `bill_failed` says. `preview` answers what
`admit` would, holding nothing (for explain). `decide` is plan then admit, the
request path of the server and the simulator alike.
"""

from __future__ import annotations

from collections.abc import Callable

from router import wire
from router.core.budget import HARD, THROTTLED, BudgetLedger, Reservation
from router.core.decision import Decision, Hold, Preview, Routed, refusal
from router.core.loads import LoadTracker
from router.core.pick import Walk
from router.core.plan import Plan, explained, note, plan
from router.core.request import RouteRequest
from router.core.rungs import Option
from router.core.table import Snapshot

# The ledger asked about an option's cloud estimate: why it cannot be held (a string), or
# the reservation held (None: fits, holding nothing).
Ask = Callable[[float], str | Reservation | None]


def decide(req: RouteRequest, snap: Snapshot, ledger: BudgetLedger, *, now: float) -> Routed:
    """Plan and admit one request (the request path)."""
    return admit(plan(req, snap, ledger, now=now), ledger, now=now)


def admit(p: Plan, ledger: BudgetLedger, *, now: float) -> Routed:
    """Hold the first option whose budget fits; acquire its slots."""
    if p.refusal is not None:
        return Routed(p.refusal)
    if p.home_slot >= 0:
        # the demand router.core.shed reads
        p.snapshot.tracker.arrive(p.home_slot, not p.request.accept_degradation, p.loose)
    walks = p.walks
    if walks and (walks[0].passed or len(walks) > 1):  # a walk passed nodes: any for lease?
        _count_unmet(walks, p.snapshot.tracker.blocked)
    options = p.options
    if options and options[0].cloud_usd <= 0:
        # the common case: the first option holds no budget, so it is taken as it is
        return _admitted(p, options[0], None)
    budgets = p.snapshot.policy.budgets
    account = p.account
    assert account is not None
    opt, held, blocked, _ = _choose(p, lambda usd: ledger.hold(budgets, account, usd, now))
    if opt is None:
        return Routed(_refuse(p, ledger, blocked, now))
    return _admitted(p, opt, held)


def _count_unmet(walks: tuple[Walk, ...], blocked: list[int]) -> None:
    """Each walk that found no room in this router's leases: its first node passed for want
    of lease only, counted in the tracker's `blocked` (the capacity keeper reads it as demand
    this router's lease did not meet). A walk that went on to leased room elsewhere counts
    nothing: its request was served on this router's own slots, and asking the fleet for the
    home's slot too would move a slot between routers for a request already placed. A walk
    that queued its request counts as one that found no room: its wait is demand the lease
    did not meet."""
    for walk in walks:
        pick = walk.pick
        if pick is not None and pick.wait_ms <= 0.0:
            continue
        for step in walk.passed:
            if step.short:
                blocked[step.slot] += 1
                break


def preview(p: Plan, ledger: BudgetLedger, *, now: float) -> Preview:
    """What `admit` would decide, holding nothing, and the trace of what the plan walked,
    dropped and tried (for explain)."""
    if p.refusal is not None:
        return Preview(p.refusal)
    budgets = p.snapshot.policy.budgets
    account = p.account
    assert account is not None
    opt, _, blocked, tried = _choose(p, lambda usd: ledger.check(budgets, account, usd, now))
    seen = (*explained(p), *(note(o, why) for o, why in tried))
    if opt is None:
        return Preview(_refuse(p, ledger, blocked, now), seen)
    return Preview(_route(p, opt), (*seen, note(opt, "chosen")))


def _choose(p: Plan, ask: Ask) -> tuple[Option | None, Reservation | None, set[str],
                                          list[tuple[Option, str]]]:
    """The first option that holds no budget or whose estimate the ledger (`ask`) can
    hold, and its hold; else None. Then why each option before it could not be held, as
    a set and in order."""
    blocked: set[str] = set()
    tried: list[tuple[Option, str]] = []
    for opt in p.options:
        got = ask(opt.cloud_usd) if opt.cloud_usd > 0 else None
        if not isinstance(got, str):
            return opt, got, blocked, tried
        blocked.add(got)
        tried.append((opt, got))
    return None, None, blocked, tried


def _admitted(p: Plan, opt: Option, held: Reservation | None) -> Routed:
    """`opt` taken: its slots acquired, its route, its hold."""
    node, pool = opt.node, opt.pool
    if pool is None:  # an edge rung holds the node's inference slot and no budget
        assert node is not None and held is None
        hold = node.hold  # built with the table: nothing to build per request
    elif node is None:  # the whole payload crosses the gateway's uplink
        nbytes = p.request.payload_bytes
        hold = Hold((pool.slot,), held, pool, nbytes)
        p.snapshot.tracker.uplink_bytes += nbytes
    else:  # a split holds a feature slot on the node, not an inference slot
        hold = Hold((node.feature_slot, pool.slot), held, pool)
    take = p.snapshot.tracker.acquire
    for s in hold.slots:
        take(s)
    return Routed(_route(p, opt), hold, opt)


def _route(p: Plan, opt: Option) -> Decision:
    """Where `opt` sends the request: the route Envoy gets."""
    node, pool = opt.node, opt.pool
    split = opt.mode == wire.MODE_SPLIT
    entry = p.entry
    if node is not None:
        target_address, target_id = node.address, node.id
        cluster = entry.cluster if entry is not None else wire.edge_cluster(p.request.residency)
    else:
        assert pool is not None
        target_address, target_id, cluster = pool.address, pool.id, pool.cluster
    split_pool = pool if split else None
    # positional, in field order: a named tuple built from keywords costs twice as much
    return Decision(
        200, opt.mode, opt.reason, p.snapshot.policy.digest, target_address, target_id,
        opt.quality, split_pool.address if split_pool is not None else None,
        split_pool.id if split_pool is not None else None, cluster, opt.cost_usd, opt.est_ms)


def _refuse(p: Plan, ledger: BudgetLedger, blocked: set[str], now: float) -> Decision:
    req, snap, entry = p.request, p.snapshot, p.entry
    budgets = snap.policy.budgets
    digest = snap.policy.digest
    shared = "" if p.account == req.tenant else f" (budget account '{p.account}')"
    if THROTTLED in blocked and p.account is not None:
        # the fleet still has headroom; this router's lease of it is short for now
        left = ledger.available(budgets, p.account, now)
        return refusal(wire.STATUS_BUDGET, wire.E_BUDGET_THROTTLED, wire.R_BUDGET_THROTTLED,
                       f"tenant '{req.tenant}'{shared}: this router's share of the cloud "
                       f"budget (${left:.4f} left) is being topped up from the budget store; "
                       "retry shortly", digest, retry_after=1)
    if HARD in blocked and p.account is not None:
        state = ledger.state(budgets, p.account, now)
        return refusal(wire.STATUS_BUDGET, wire.E_BUDGET, wire.R_BUDGET,
                       f"tenant '{req.tenant}'{shared} has used ${state.used_usd:.2f} of its "
                       f"${state.hard_usd:.2f} hard limit for {state.period}",
                       digest, retry_after=ledger.retry_after(budgets, now))
    if p.cost_blocked:
        return refusal(wire.STATUS_UNSERVABLE, wire.E_MAX_COST, wire.R_MAX_COST,
                       f"every eligible option costs more than x-affinity-max-cost "
                       f"{req.max_cost_usd}", digest)
    if entry is not None and not entry.ring.members and not entry.pools:
        tags = ",".join(sorted(req.residency)) or "none"
        return refusal(wire.STATUS_UNSERVABLE, wire.E_UNSERVABLE, wire.R_RESIDENCY,
                       f"no healthy node or pool satisfies residency [{tags}] and model "
                       f"{req.model or 'any'}", digest)
    return refusal(wire.STATUS_UNSERVABLE, wire.E_UNSERVABLE, wire.R_CAPACITY,
                   "every eligible edge node is at capacity and no cloud pool can take it",
                   digest, retry_after=1)


def finish(routed: Routed, tracker: LoadTracker, ledger: BudgetLedger,
           actual_usd: float | None = None, *, failed: bool = False) -> None:
    """Hand back what `routed` holds: its in-flight slots and its budget reservation.

    `failed`: the pool answered with a server error (or Envoy for it: reset, timeout);
    the hold is then charged as the pool's `bill_failed` says.
    """
    hold = routed.hold
    release = tracker.release
    for slot in hold.slots:
        release(slot)
    if hold.nbytes:
        tracker.uplink_bytes -= hold.nbytes
    if hold.reservation is not None:
        if failed and not bills_failed(hold):
            actual_usd = 0.0
        ledger.settle(hold.reservation, actual_usd)


def bills_failed(hold: Hold) -> bool:
    """Whether the pool a cloud or split request is held on charges for a failed request."""
    return hold.pool is None or hold.pool.spec.bill_failed == "full"
