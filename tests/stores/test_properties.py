"""Hypothesis: no sequence of reserve/settle/restart takes spend past the hard limit."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.budget import MemoryBudgetStore, Reservation
from router.stores.sqlite import SqliteBudgetStore

CEILING = 5.0

ops = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.floats(0.0, 2.0)),
    st.tuples(st.just("settle"), st.floats(0.0, 1.0)),  # actual as a fraction of the hold
    st.tuples(st.just("restart"), st.just(0.0)),
), max_size=60)


def run(make: Callable[[], MemoryBudgetStore], steps: list[tuple[str, float]]) -> None:
    store = make()
    held: list[Reservation] = []
    spent = 0.0
    try:
        for op, x in steps:
            if op == "reserve":
                got = store.reserve("t", "p", x, CEILING)
                if got is not None:
                    held.append(got)
            elif op == "settle" and held:
                got = held.pop(0)
                store.settle(got, got.amount * x)
                spent += got.amount * x
            elif op == "restart" and isinstance(store, SqliteBudgetStore):
                store.close()
                store, held = make(), []  # in-flight holds die with the process
            used = store.committed("t", "p") + store.reserved("t", "p")
            assert used <= CEILING + 1e-9
            assert store.committed("t", "p") == pytest.approx(spent, abs=1e-9)
    finally:
        store.close()


@settings(max_examples=150, deadline=None)
@given(ops)
def test_memory_store_never_passes_the_hard_limit(steps: list[tuple[str, float]]) -> None:
    run(MemoryBudgetStore, steps)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_sqlite_store_never_passes_the_hard_limit(steps: list[tuple[str, float]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run(lambda: SqliteBudgetStore(Path(tmp) / "b.db"), steps)
