"""Many routers, one fleet: which store a router leases node slots from, and what to say
when several routers are deployed without one.

A policy whose `budgets.store` is `redis://…` is shared: every router leases
node slots, feature slots and pool caps from it (`router.stores.capkeeper`)
and sizes its budget lease shares by the live membership there. `serve
--workers N` without one gives its workers a host-local SQLite file for the
slots (`--capacity-store`, set by the parent). Any other store belongs to one
router: that router holds every slot and the whole budget, which is right for
one router and wrong for several (docs/operations.md, "Many routers, one fleet").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from router.core.policy import Policy
from router.runtime import Runtime
from router.stores.capkeeper import CapacityKeeper, open_capacity


def shared(policy: Policy) -> bool:
    """Whether `policy`'s budget store is shared by every router that loads it."""
    return policy.budgets.store.startswith("redis://")


def unshared_problem(policy: Policy, how: str) -> str | None:
    """What breaks when several routers (deployed as `how` says) run `policy`, or None."""
    if shared(policy):
        return None
    return (f"budgets.store {policy.budgets.store!r} is not shared, and {how}: each router "
            "would admit onto every node up to all of its slots and spend every tenant's "
            "whole budget; use a redis:// store (shared by the fleet) for both")


def workers_note(policy: Policy, workers: int) -> str | None:
    """What `serve --workers N` does with a store that is not shared, or None."""
    if workers <= 1 or shared(policy):
        return None
    return (f"budgets.store {policy.budgets.store!r} is per process: the {workers} workers "
            "lease node slots from a host-local file, but each tenant's budget is split "
            f"1/{workers} between them; a redis:// store shares budgets too")


@contextlib.contextmanager
def host_local_files(policy: Policy, workers: int) -> Iterator[list[str]]:
    """The hidden `serve` flags naming fresh host-local files for `workers` > 1 processes
    (removed after): what each Envoy ACKed (`router.xds.ackshare`) and, without a shared
    store, the capacity leases; none for one process."""
    if workers <= 1:
        yield []
        return
    from router.stores.capacity import SqliteCapacity
    from router.xds.ackshare import SharedAcks

    where = tempfile.mkdtemp(prefix="hybrid-router-")
    acks = os.path.join(where, "acks.db")
    SharedAcks(acks, 0).close()  # created here, so the workers do not all create it at once
    flags = ["--acks-file", acks]
    if not shared(policy):
        capacity = os.path.join(where, "capacity.db")
        SqliteCapacity(capacity).close()  # its schema and WAL mode, as above
        flags += ["--capacity-store", "sqlite:" + capacity]
    try:
        yield flags
    finally:
        shutil.rmtree(where, ignore_errors=True)


def start_capacity(policy: Policy, runtime: Runtime, budget_store: Any,
                   capacity_store: str | None) -> CapacityKeeper | None:
    """The capacity keeper for this router, synced once already (None: a router alone)."""
    spec = capacity_store or (policy.budgets.store if shared(policy) else None)
    if spec is None:
        return None
    follow = getattr(budget_store, "follow", None)
    return open_capacity(spec, runtime.tracker, lambda: runtime.snapshot, on_members=follow)
