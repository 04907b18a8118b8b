"""`serve --workers N`: how N processes that share no memory stay within one fleet's limits.

Theory of operation
-------------------
Envoy pins each HTTP/2 connection to one worker, so a worker only sees its own
requests and counts only its own in-flight load. The workers are routers of one
fleet like any other:

- node slots, feature slots and a pool's `max_inflight` are leased from the
  shared store, or, without one, from a host-local file the parent process
  creates (`router.server.fleet`, `router.core.capacity`): a busy worker holds
  most of a node and an idle one little, following demand;
- tenant budgets, when the store is per process (`memory`): limit / N each, so
  the workers' spend together stays within the limit (a billed amount from the
  feed is counted whole by every worker: conservative, never over); `serve`
  says so at start. A `redis://` store is shared: limits stay whole and lease
  shares follow the live workers. A `sqlite:` file belongs to one process, so
  it is refused with N > 1.

`WorkerRuntime` applies the budget split to every policy installed, so a hot
reload never hands a worker the whole budget.
"""

from __future__ import annotations

from types import MappingProxyType

from router.core.budget import BudgetLedger
from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import Policy
from router.runtime import Prepared, Runtime


def store_problem(policy: Policy, workers: int) -> str | None:
    """Why `policy`'s budget store cannot back `workers` processes, or None."""
    if workers > 1 and policy.budgets.store.startswith("sqlite:"):
        return (f"budgets.store {policy.budgets.store!r} belongs to one process; "
                "use redis://… (shared) or memory (split per worker) with --workers > 1")
    return None


def share(policy: Policy, workers: int, index: int) -> Policy:
    """`policy` with this worker's share of per-process budgets (slots are leased)."""
    budgets = policy.budgets
    if workers <= 1 or budgets.store.startswith("redis://"):
        return policy
    tenants = {name: b.model_copy(update={"limit_usd": b.limit_usd / workers})
               for name, b in budgets.tenants.items()}
    budgets = budgets.model_copy(update={"tenants": MappingProxyType(tenants)})
    return policy.model_copy(update={"budgets": budgets})


class WorkerRuntime(Runtime):
    """A `Runtime` that only ever serves worker `index` of `workers`' share."""

    def __init__(self, policy: Policy, ledger: BudgetLedger | None = None, *, workers: int,
                 index: int) -> None:
        """Start with this worker's share of `policy`."""
        self.workers, self.index = workers, index
        self.source_policy = policy
        super().__init__(share(policy, workers, index), ledger)

    def prepare(self, policy: Policy | None = None, feed: FeedSnapshot | None = None, *,
                now: float | None = None) -> Prepared:
        """Build the table for this worker's share of a new policy and/or a feed."""
        if policy is not None:
            self.source_policy = policy
        return super().prepare(share(self.source_policy, self.workers, self.index), feed,
                               now=now)
