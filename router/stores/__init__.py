"""Budget stores behind the ledger: memory, SQLite, Redis, each kept by a `BudgetKeeper`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from router.stores.keeper import Backend, BudgetKeeper, BudgetStoreError, StoreDown, StoreLost

__all__ = ["Backend", "BudgetKeeper", "BudgetStoreError", "StoreDown", "StoreLost",
           "open_backend", "open_keeper"]


def open_backend(spec: str, *, clock: Callable[[], float] = time.time) -> Backend | None:
    """The store a policy's `budgets.store` names (None: memory, the ledger alone)."""
    if spec == "memory":
        return None
    if spec.startswith("sqlite:"):
        from router.stores.sqlite import SqliteBudgetStore

        return SqliteBudgetStore(spec.removeprefix("sqlite:"))
    if spec.startswith("redis://"):
        from router.stores.redis import RedisBudgetStore

        try:
            return RedisBudgetStore(spec, clock=clock)
        except ValueError as exc:
            raise BudgetStoreError(f"budget store {spec}: {exc}") from exc
    raise BudgetStoreError(f"unknown budget store {spec!r}")


def open_keeper(spec: str, *, clock: Callable[[], float] = time.time,
                on_error: Callable[[], None] | None = None,
                on_lost: Callable[[], None] | None = None) -> BudgetKeeper:
    """Open the store `spec` names and start its keeper (BudgetStoreError if unusable).

    `clock` is the ledger's time (the runtime's clock): a lease's local end is on it.
    """
    backend = open_backend(spec, clock=clock)
    retry = float(getattr(backend, "retry", 0.5))
    tick = float(getattr(backend, "tick", 0.05))  # a shared store: its own pace and bound
    rate = float(getattr(backend, "rate", math.inf))
    keeper = BudgetKeeper(backend, retry=retry, tick=tick, rate=rate, on_error=on_error,
                          on_lost=on_lost)
    try:
        return keeper.start()
    except BaseException:
        if backend is not None:
            backend.close()
        raise
