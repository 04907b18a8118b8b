"""Budget stores behind `router.core.budget.BudgetStore`: memory, SQLite, Redis."""

from __future__ import annotations

from router.core.budget import BudgetStore, MemoryBudgetStore


def open_store(spec: str) -> BudgetStore:
    """Open the store a policy's `budgets.store` names."""
    if spec == "memory":
        return MemoryBudgetStore()
    if spec.startswith("sqlite:"):
        from router.stores.sqlite import SqliteBudgetStore

        return SqliteBudgetStore(spec.removeprefix("sqlite:"))
    if spec.startswith("redis://"):
        from router.stores.redis import RedisBudgetStore

        return RedisBudgetStore(spec)
    raise ValueError(f"unknown budget store {spec!r}")
