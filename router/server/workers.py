"""`serve --workers N`: how N processes that share no memory stay within one fleet's limits.

Theory of operation
-------------------
Envoy pins each HTTP/2 connection to one worker, so a worker only sees its own
requests and counts only its own in-flight load. Each worker therefore owns a
fixed share of every limit and never lends it:

- node slots (from the policy, or the feed when it states them) and a pool's
  `max_inflight`: worker i of N gets floor(x / N), plus one while i is below
  the remainder, at least 1 — the shares add up to x (or to N when 0 < x < N);
  a node with 0 slots (the feed's way to drain it) gets 0 in every worker;
- tenant budgets, when the store is per process (`memory`): limit / N each, so
  the workers' spend together stays within the limit (a billed amount from the
  feed is counted whole by every worker: conservative, never over);
- a `redis://` store is shared: reservations are atomic there, so limits stay
  whole. A `sqlite:` file belongs to one process, so it is refused with N > 1.

`WorkerRuntime` applies the shares to every policy and feed installed, so a hot
reload or a feed refresh never hands a worker the whole node.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from router.core.budget import BudgetLedger
from router.core.feed import FeedSnapshot
from router.core.model import Policy
from router.core.table import Snapshot
from router.runtime import Runtime


def part(total: int, workers: int, index: int) -> int:
    """Worker `index`'s share of `total` units (floor, remainder spread, at least 1 of a
    non-zero total; nothing of nothing)."""
    if total <= 0:
        return 0  # a node the feed says has no slots must get none in any worker
    base, extra = divmod(total, workers)
    return max(1, base + (1 if index < extra else 0))


def store_problem(policy: Policy, workers: int) -> str | None:
    """Why `policy`'s budget store cannot back `workers` processes, or None."""
    if workers > 1 and policy.budgets.store.startswith("sqlite:"):
        return (f"budgets.store {policy.budgets.store!r} belongs to one process; "
                "use redis://… (shared) or memory (split per worker) with --workers > 1")
    return None


def share(policy: Policy, workers: int, index: int) -> Policy:
    """`policy` with this worker's share of node slots, pool caps and per-process budgets."""
    if workers <= 1:
        return policy
    nodes = tuple(n.model_copy(update={"slots": part(n.slots, workers, index),
                                       "feature_slots": part(n.feature_slots, workers, index)
                                       if n.feature_slots > 0 else 0})
                  for n in policy.nodes)
    pools = tuple(p.model_copy(update={"max_inflight": part(p.max_inflight, workers, index)})
                  if p.max_inflight > 0 else p for p in policy.pools)
    budgets = policy.budgets
    if not budgets.store.startswith("redis://"):
        tenants = {name: b.model_copy(update={"limit_usd": b.limit_usd / workers})
                   for name, b in budgets.tenants.items()}
        budgets = budgets.model_copy(update={"tenants": MappingProxyType(tenants)})
    return policy.model_copy(update={"edge": policy.edge.model_copy(update={"nodes": nodes}),
                                     "cloud": policy.cloud.model_copy(update={"pools": pools}),
                                     "budgets": budgets})


@dataclasses.dataclass(frozen=True, slots=True)
class SharedFeed(FeedSnapshot):
    """A feed snapshot whose node slots are already one worker's share."""


def share_feed(feed: FeedSnapshot, workers: int, index: int) -> FeedSnapshot:
    """`feed` with the slots it states cut to this worker's share."""
    if workers <= 1 or isinstance(feed, SharedFeed):
        return feed
    nodes = {k: dataclasses.replace(s, slots=part(s.slots, workers, index))
             if s.slots is not None else s for k, s in feed.nodes.items()}
    return SharedFeed(generated_at=feed.generated_at, received_at=feed.received_at,
                      nodes=nodes, prices=feed.prices, spend=feed.spend)


class WorkerRuntime(Runtime):
    """A `Runtime` that only ever serves worker `index` of `workers`' share."""

    def __init__(self, policy: Policy, ledger: BudgetLedger | None = None, *, workers: int,
                 index: int) -> None:
        """Start with this worker's share of `policy`."""
        self.workers, self.index = workers, index
        self.source_policy = policy
        super().__init__(share(policy, workers, index), ledger)

    def prepare(self, policy: Policy | None = None, feed: FeedSnapshot | None = None, *,
                now: float | None = None) -> Snapshot:
        """Build the table for the shares of a new policy and/or feed."""
        if policy is not None:
            self.source_policy = policy
        current = self.feed if feed is None else feed
        shared = share_feed(current, self.workers, self.index) if current is not None else None
        return super().prepare(share(self.source_policy, self.workers, self.index), shared,
                               now=now)
