"""The simulator's fast path: a request the edge keeps, decided without the server's whole way.

Most requests of a run are one decision: the walk finds a node with room (the key's home,
or the next under its cap, or a queue place), the key's tier at its home (`router.core.shed`)
keeps it on the edge at full quality or degraded, and that rung's estimate meets its bound.
The core reaches it through the whole request path (`RequestControl.decide`: plan, admission,
the route Envoy would get); here the core's own functions decide it (`pick_edge`,
`home_tier`, `full_option`, `degraded_options`) without what cannot change the answer: the
tenant's account and rules, the class entry and whether the class meets its SLO off the edge
are read once per table, and no plan, ranking of the rungs off the edge, route or `Decision`
is built. Anything else goes the core's whole way (`decide` answers None): a walk that finds
no room, a key its home sheds, an edge rung over its bound, a tenant's rules, a refusal, and
under slot leases a queue place or a degraded rung (admission then counts a walk's unmet
demand). tests/simulator/test_fastpath.py runs scenarios with and without it and finds every
request decided alike.
"""

from __future__ import annotations

from collections.abc import Hashable

from router.control import RequestControl
from router.core.budget import account_of
from router.core.decision import Hold
from router.core.loads import UNLEASED
from router.core.pick import home_queue, pick_edge
from router.core.plan import home_tier
from router.core.request import RouteRequest
from router.core.rungs import Option, degraded_options, full_option, off_edge_meets
from router.core.table import ClassEntry, Snapshot
from router.runtime import Runtime

INF = float("inf")

# What a class decides alike for every key under one table: its entry, its max cost, and
# per home node (its index) whether the class meets its SLO off the edge
Facts = tuple[ClassEntry, float, dict[int, bool]]


class FastPath:
    """Decides the common request as the core would, with the core's state changed alike."""

    def __init__(self, runtime: Runtime, control: RequestControl) -> None:
        """Decide for `runtime`'s tables, open and held requests counted on `control`."""
        self.runtime = runtime
        self.control = control
        self.taken = 0  # requests it decided (the rest went to the core)
        self._snap: Snapshot | None = None
        self._facts: dict[Hashable, Facts | None] = {}  # per class and payload (None: not fast)

    def decide(self, req: RouteRequest, kind: Hashable, now: float) -> Option | None:
        """The edge rung an opened request takes, when the fast path decides it (its slot
        held and its arrival counted as admission does; `Option.node.hold` is what it
        holds); None: the core decides it. `kind`: the same for every request of one class
        and payload, whatever its key."""
        control = self.control
        if control.open > control.max_open:
            return None
        snap = self.runtime.snapshot
        if snap is not self._snap:
            self._snap, self._facts = snap, {}
        try:
            facts = self._facts[kind]
        except KeyError:
            facts = self._facts[kind] = self._class_facts(req, snap)
        if facts is None:
            return None
        entry, max_cost, loose_at = facts
        key = req.key
        assert key is not None
        walk = pick_edge(entry, snap, key)
        pick = walk.pick
        # without slot leases, admission counts no unmet demand (`router.core.admit`)
        unleased = snap.tracker.default_held == UNLEASED
        if pick is None or (pick.wait_ms > 0.0 and not unleased):
            return None
        # the key's home full but for its queue: the core decides whether it waits there
        if not pick.home and snap.queue_per_slot > 0.0 and \
                home_queue(walk, snap.queue_per_slot) is not None:
            return None
        # the key's home: where the walk began (`home_of`), the first node it passed if any
        home = pick.node if pick.home else walk.passed[0].node
        loose = False
        if home.degrading and entry.pools:
            found = loose_at.get(home.idx)
            if found is None:
                found = loose_at[home.idx] = off_edge_meets(entry, req, home, snap)
            loose = found
        level = home_tier(key, home, now, snap.policy.refresh_seconds, loose)
        if level == 2:  # shed: the rungs off the edge first
            return None
        opt = None
        if level == 0 or not req.accept_degradation:
            opt = full_option(pick, req, key, level > 0)
            if opt is not None and opt.est_ms > req.slo_ms and not opt.held:
                opt = None
        if opt is None:
            # the plan ranks every rung: the first degraded one within its bound comes first
            # (its walk over feature slots counts unmet demand only under slot leases)
            if not req.accept_degradation or not unleased:
                return None
            if entry.pools:  # the class its walk over feature slots takes, built as there
                snap.entry(req.residency, None)
            bound = req.slo_ms * snap.policy.slo.degraded_slack
            for opt in degraded_options(pick, req, snap, key):
                if opt.est_ms <= bound or opt.held:
                    break
            else:
                return None
        if opt.cost_usd > max_cost + 1e-12:
            return None
        tracker = snap.tracker
        tracker.arrive(home.slot, not req.accept_degradation, loose)
        hold = pick.node.hold
        for slot in hold.slots:
            tracker.acquire(slot)
        control.held += 1
        self.taken += 1
        return opt

    def done(self, hold: Hold) -> None:
        """A request it decided ended: its slot handed back and it closes, as
        `RequestControl.end` and `router.core.admit.finish` do for the core's."""
        release = self.runtime.tracker.release
        for slot in hold.slots:
            release(slot)
        self.control.held -= 1
        self.control.open -= 1

    def _class_facts(self, req: RouteRequest, snap: Snapshot) -> Facts | None:
        """What the core's plan reads of `req`'s tenant and class before its walk, when it
        changes nothing about the request (None: an unknown tenant, or rules that narrow
        it, a key-less request)."""
        budgets = snap.policy.budgets
        account = account_of(budgets, req.tenant)
        if account is None or req.key is None:
            return None
        rules = budgets.tenant(account)
        if rules is not None and rules.restricts:
            return None
        entry = snap.entry(req.residency, req.model)
        max_cost = INF if req.max_cost_usd is None else req.max_cost_usd
        return entry, max_cost, {}

