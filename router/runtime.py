"""The routing state of one router, and the one facade the server, simulator and explain use.

`Runtime` owns what outlives a refresh — the load tracker, the ring point
cache, the budget ledger — and the current `Snapshot` (policy + feed + the
compiled table), replaced whole by `commit` and read once per request. The
policy and the feed in force are the snapshot's; nothing else keeps a copy.

A feed is `offer`ed: the runtime says what it asks for (an `Intake`: bills
to merge, and a rebuild or only a restamp); `tick` says when the feed in
force has aged past `stale_after_seconds` (a rebuild, with no new feed).
`apply` carries an intake out at once (the simulator, explain); the server's
refresher does the same with the build in a worker thread (`prepare`) and
the swap on its event loop (`commit`). Whoever needs each committed snapshot
(the xDS server) subscribes with `on_commit`.

A request is parsed (`parse`), planned against the snapshot (pure), then
admitted (slots and a budget hold, in memory): a `Routed`, its route apart
from its hold (`router.core.decision`). `route` does all three for the
server, `decide` the last two for the simulator, and `finish` hands the hold
back; `explain` calls `plan` and `preview`, which hold nothing. Times come from the caller (`now`)
or the runtime's clock, so the simulator runs the same code on simulated time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from router import wire
from router.core import admit as admission
from router.core.budget import BudgetLedger, account_of
from router.core.decision import Decision, Preview, Routed, refusal
from router.core.feedsnapshot import FeedSnapshot
from router.core.loads import LoadTracker
from router.core.outliers import Outliers
from router.core.plan import Plan, plan_whole
from router.core.policy import Policy
from router.core.request import RouteRequest, TagError
from router.core.ring import PointCache
from router.core.table import Snapshot, build_table
from router.core.tagmemo import TagMemo

WARM_CLASSES = 32  # request classes prebuilt on a swap; the rest build on first use
# Subscribed to commits: called where a snapshot is prepared (a worker thread), it returns
# what to run once that snapshot is committed (on the routing thread), or None.
CommitListener = Callable[[Snapshot], Callable[[], None] | None]


class Intake(NamedTuple):
    """What a feed offer or a tick asks of the runtime (`Runtime.offer`, `Runtime.tick`)."""

    feed: FeedSnapshot | None  # the new feed; None: a tick (the feed in force aged)
    rebuild: bool  # build and swap a table; False: only record the feed (restamp)
    bills: tuple[tuple[str, float], ...] = ()  # (account, usd) billed, to merge


class Prepared(NamedTuple):
    """A snapshot built off the routing thread, and what its listeners run once it is in."""

    snapshot: Snapshot
    then: tuple[Callable[[], None], ...] = ()


class Runtime:
    """Snapshot, loads and budget of one router; plan, admit and finish requests."""

    def __init__(self, policy: Policy, ledger: BudgetLedger | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        """Start with `policy`, no feed yet, and spend in `ledger` (a fresh in-memory one).

        A durable or shared store keeps `ledger` in step from its keeper's thread
        (`router.stores.keeper`); nothing here waits on it.
        """
        self.clock = clock
        self.tracker = LoadTracker()
        self.cache = PointCache()
        self.ledger = ledger if ledger is not None else BudgetLedger()
        self.snapshot = build_table(policy, None, self.tracker, self.cache, now=clock())
        self.outliers = Outliers()
        self.rebuilds = 0
        self._listeners: list[CommitListener] = []
        self._tags = TagMemo(policy.defaults, policy.slo.default_latency_ms)

    @property
    def policy(self) -> Policy:
        """The policy in force (the snapshot's)."""
        return self.snapshot.policy

    @property
    def feed(self) -> FeedSnapshot | None:
        """The feed snapshot in force (the snapshot's)."""
        return self.snapshot.feed

    def on_commit(self, listener: CommitListener) -> None:
        """Call `listener` with every snapshot prepared from now on (see `CommitListener`)."""
        self._listeners.append(listener)

    def install(self, policy: Policy | None = None, feed: FeedSnapshot | None = None, *,
                now: float | None = None) -> Snapshot:
        """Build the snapshot for a new policy and/or feed and swap it in."""
        prepared = self.prepare(policy, feed, now=now)
        self.commit(prepared)
        return prepared.snapshot

    def prepare(self, policy: Policy | None = None, feed: FeedSnapshot | None = None, *,
                now: float | None = None) -> Prepared:
        """Build, without swapping, the snapshot for a new policy and/or feed.

        Safe in a worker thread while requests run (it only allocates load
        slots for new targets), as long as one caller prepares at a time.
        """
        now = self.clock() if now is None else now
        current = self.snapshot
        snap = build_table(policy if policy is not None else current.policy,
                           feed if feed is not None else current.feed,
                           self.tracker, self.cache, now=now, previous=current,
                           ejected=self.outliers.ejected())
        snap.prebuild(current.class_keys()[:WARM_CLASSES])
        then = (listener(snap) for listener in self._listeners)
        return Prepared(snap, tuple(t for t in then if t is not None))

    def commit(self, prepared: Prepared) -> None:
        """Swap a prepared snapshot in, the classes in use finished first, then tell its
        listeners (call on the routing thread)."""
        snap = prepared.snapshot
        snap.warm(self.snapshot.class_keys()[:WARM_CLASSES])
        self.snapshot = snap
        self.rebuilds += 1
        for then in prepared.then:
            then()

    def offer(self, feed: FeedSnapshot, now: float) -> Intake:
        """What a new, decoded feed asks for: the bills to merge, and a rebuild unless only
        its timestamps moved (same nodes, prices and pool availability, same staleness)."""
        current = self.snapshot
        old = current.feed
        stale = feed.age(now) > current.policy.feed.stale_after_seconds
        same = (old is not None and feed.nodes == old.nodes and feed.prices == old.prices
                and feed.pools == old.pools and stale == current.stale)
        return Intake(feed, not same, self._bills(feed))

    def _bills(self, feed: FeedSnapshot) -> tuple[tuple[str, float], ...]:
        """Bills for the policy's own accounts; spend of tenants it does not name is not ours
        to merge (they share the default account, whose bill the feed reports as 'default')."""
        budgets = self.snapshot.policy.budgets
        return tuple((tenant, usd) for tenant, usd in feed.spend.items()
                     if account_of(budgets, tenant) == tenant)

    def tick(self, now: float) -> Intake | None:
        """A rebuild when the feed in force crossed `stale_after_seconds` since its table was
        built (its nodes weighted down, or back), or a node was taken out of the ring for
        failing or its time out has passed (`failed`); None: nothing to do. Call it on the
        routing thread."""
        current = self.snapshot
        outliers = self.outliers
        outliers.expire(now)
        if outliers.ejected() != current.ejected:
            outliers.forget(frozenset(spec.id for spec in current.policy.nodes))
        if outliers.ejected() != current.ejected:
            return Intake(None, True)
        feed = current.feed
        if feed is None:
            return None
        stale = feed.age(now) > current.policy.feed.stale_after_seconds
        return Intake(None, True) if stale != current.stale else None

    def failed(self, node_id: str, now: float) -> bool:
        """A request that ended on edge node `node_id` failed (an upstream failure or a 5xx
        Envoy reported); True: it took the node out of the ring, and `tick` now asks for
        the rebuild that homes its keys elsewhere (call it on the routing thread)."""
        policy = self.snapshot.policy
        spec = policy.node(node_id)
        if spec is None:
            return False  # a node a policy reload removed since
        ended = self.tracker.ended[self.tracker.slot(node_id)]

        def peers() -> list[frozenset[str]]:
            """The nodes that share each of its residency tags (all, for a node with none)."""
            return [frozenset(n.id for n in policy.nodes if tag in n.residency)
                    for tag in spec.residency] or [frozenset(n.id for n in policy.nodes)]

        return self.outliers.failed(node_id, ended, peers, policy.outliers, now)

    def merge_bills(self, intake: Intake) -> None:
        """Merge the bills an offered feed carries into the ledger."""
        if intake.feed is not None:
            budgets = self.snapshot.policy.budgets
            for account, usd in intake.bills:
                self.ledger.apply_billing(budgets, account, usd,
                                          as_of=intake.feed.generated_at)

    def apply(self, intake: Intake, now: float) -> None:
        """Carry an intake out here and now: bills, then a rebuild or a restamp."""
        self.merge_bills(intake)
        if intake.rebuild:
            self.install(feed=intake.feed, now=now)
        elif intake.feed is not None:
            self.restamp(intake.feed)

    def restamp(self, feed: FeedSnapshot) -> None:
        """Record a feed whose routing inputs did not change (only its timestamps moved)."""
        self.snapshot = dataclasses.replace(self.snapshot, feed=feed)

    def parse(self, headers: Mapping[str, str], *, payload_bytes: int | None = None,
              request_id: str = "") -> RouteRequest | Decision:
        """The request's tags under the policy in force, or its 400 refusal.

        `payload_bytes` None (no usable content-length) estimates the payload as the
        policy's `defaults.payload_kb`.
        """
        policy = self.snapshot.policy
        if payload_bytes is None:
            payload_bytes = int(policy.defaults.payload_kb * 1024)
        tags = self._tags
        if tags.defaults is not policy.defaults or \
                tags.default_slo_ms != policy.slo.default_latency_ms:  # a new policy's
            tags = self._tags = TagMemo(policy.defaults, policy.slo.default_latency_ms)
        try:
            return tags.parse(headers, payload_bytes=payload_bytes, request_id=request_id)
        except TagError as exc:
            return refusal(wire.STATUS_BAD_TAG, wire.E_BAD_TAG, wire.R_BAD_TAG,
                           f"{exc.tag}: {exc.detail}", policy.digest)

    def route(self, headers: Mapping[str, str], *, payload_bytes: int | None = None,
              request_id: str = "", now: float | None = None) -> Routed:
        """Parse, plan and admit one request from its (lower-case) headers."""
        snap = self.snapshot  # read the reference once
        req = self.parse(headers, payload_bytes=payload_bytes, request_id=request_id)
        if isinstance(req, Decision):
            return Routed(req)
        return self.decide(req, now=now, snapshot=snap)

    def decide(self, req: RouteRequest, *, now: float | None = None,
               snapshot: Snapshot | None = None) -> Routed:
        """Plan and admit one parsed request."""
        snap = self.snapshot if snapshot is None else snapshot
        now = self.clock() if now is None else now
        return admission.decide(req, snap, self.ledger, now=now)

    def plan(self, req: RouteRequest, *, now: float | None = None) -> Plan:
        """Every option for `req` ranked, and why the others were dropped, holding nothing
        (explain, what-ifs)."""
        now = self.clock() if now is None else now
        return plan_whole(req, self.snapshot, self.ledger, now=now)

    def preview(self, p: Plan, *, now: float | None = None) -> Preview:
        """What admission would decide for plan `p`, and its trace, holding nothing."""
        now = self.clock() if now is None else now
        return admission.preview(p, self.ledger, now=now)

    def finish(self, routed: Routed, actual_usd: float | None = None, *,
               failed: bool = False) -> None:
        """The HTTP request ended: release its slots and settle its budget hold
        (`failed`: the pool failed it, charged per the pool's `bill_failed`)."""
        admission.finish(routed, self.tracker, self.ledger, actual_usd, failed=failed)

    def inflight(self) -> dict[str, int]:
        """In-flight count per node and pool id."""
        return self.tracker.snapshot()
