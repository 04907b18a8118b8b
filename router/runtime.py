"""The live routing state of one router process.

`Runtime` owns the pieces that outlive a refresh — the load tracker, the ring
point cache, the budget ledger — and the current `RouteTable`, which is
replaced whole by `install` (new policy and/or feed) and read once per request.
Everything here is synchronous and runs on the server's event loop, so a
request sees either the old table or the new one, never a mix, and a request
admitted under the old table releases the same load counters (slots are
stable across tables).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from router import wire
from router.core.budget import BudgetLedger, BudgetStore
from router.core.decide import decide, finish
from router.core.decision import Decision, refusal
from router.core.feed import FeedSnapshot
from router.core.loads import LoadTracker
from router.core.model import Policy
from router.core.request import TagError, parse_request
from router.core.ring import PointCache
from router.core.table import RouteTable, build_table

WARM_CLASSES = 32  # request classes prebuilt on a swap; the rest build on first use


@dataclass(frozen=True, slots=True)
class Routed:
    """A decision plus the table it was made under (needed to finish it)."""

    decision: Decision
    table: RouteTable


class Runtime:
    """Policy, feed, table, loads and budget of one router process."""

    def __init__(self, policy: Policy, store: BudgetStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        """Start with `policy`, no feed yet, and spend in `store`."""
        self.clock = clock
        self.tracker = LoadTracker()
        self.cache = PointCache()
        self.ledger = BudgetLedger(policy.budgets, store)
        self.policy = policy
        self.feed: FeedSnapshot | None = None
        self.table = build_table(policy, None, self.tracker, self.cache, now=clock())
        self.rebuilds = 0

    def install(self, policy: Policy | None = None, feed: FeedSnapshot | None = None, *,
                now: float | None = None) -> RouteTable:
        """Rebuild the table from a new policy and/or feed and swap it in atomically."""
        table = self.prepare(policy, feed, now=now)
        self.commit(table)
        return table

    def prepare(self, policy: Policy | None = None, feed: FeedSnapshot | None = None, *,
                now: float | None = None) -> RouteTable:
        """Build, without swapping, the table for a new policy and/or feed.

        Safe in a worker thread while requests run (it only allocates load
        slots for new targets), as long as one caller prepares at a time.
        """
        now = self.clock() if now is None else now
        table = build_table(policy if policy is not None else self.policy,
                            feed if feed is not None else self.feed,
                            self.tracker, self.cache, now=now)
        table.prebuild(self.table.class_keys()[:WARM_CLASSES])
        return table

    def commit(self, table: RouteTable) -> None:
        """Swap `table` in, the classes in use finished first (call on the event loop)."""
        table.warm(self.table.class_keys()[:WARM_CLASSES])
        self.policy = table.policy
        self.ledger.config = table.policy.budgets
        self.feed = table.feed
        self.table = table
        self.rebuilds += 1

    def route(self, headers: Mapping[str, str], *, payload_bytes: int = 0,
              request_id: str = "", now: float | None = None) -> Routed:
        """Decide one request from its (lower-case) headers; bad tags give a 400 decision."""
        table = self.table  # read the reference once
        policy = table.policy
        now = self.clock() if now is None else now
        try:
            req = parse_request(headers, policy.defaults, policy.slo.default_latency_ms,
                                payload_bytes=payload_bytes, request_id=request_id)
        except TagError as exc:
            return Routed(refusal(wire.STATUS_BAD_TAG, wire.E_BAD_TAG, wire.R_BAD_TAG,
                                  f"{exc.tag}: {exc.detail}", policy.digest), table)
        return Routed(decide(req, table, self.ledger, now=now), table)

    def finish(self, routed: Routed, actual_usd: float | None = None) -> None:
        """The HTTP request ended: release its slots and settle its budget hold."""
        finish(routed.decision, routed.table, self.ledger, actual_usd)

    def inflight(self) -> dict[str, int]:
        """In-flight count per node and pool id."""
        return self.tracker.snapshot()
