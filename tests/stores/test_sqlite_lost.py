"""A SQLite budget file deleted or replaced under a running router: the router
finds out at its next keeper round, writes everything it holds into the file at the path,
logs and counts it, and the next start reads every cent."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from router.core.budget import Reservation
from router.stores import BudgetKeeper, open_keeper
from router.stores.sqlite import SqliteBudgetStore

from .conftest import budgets, month

COST = 0.004


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[tuple[BudgetKeeper, Path, list[int]]]:
    path = tmp_path / "budget.db"
    lost: list[int] = []
    k = open_keeper(f"sqlite:{path}", on_lost=lambda: lost.append(1))
    try:
        yield k, path, lost
    finally:
        k.close()


def spend(keeper: BudgetKeeper, n: int) -> list[Reservation]:
    """Admit `n` requests; settle all but the last (still in flight)."""
    cfg = budgets(10.0)
    held = [keeper.ledger.hold(cfg, "acme", COST, time.time()) for _ in range(n)]
    assert all(isinstance(h, Reservation) for h in held)
    for res in held[:-1]:
        assert isinstance(res, Reservation)
        keeper.ledger.settle(res)
    return [h for h in held if isinstance(h, Reservation)]


def delete(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        (path.parent / name).unlink(missing_ok=True)


def replace(path: Path) -> None:
    """Put an older copy of the file (a backup taken before any spend) in its place."""
    os.replace(path.with_name("backup.db"), path)


@pytest.mark.parametrize(("lose", "why"), [
    (delete, "its file was deleted"),
    (replace, "its file was replaced by another"),
], ids=["deleted", "replaced"])
def test_a_lost_file_is_rebuilt_from_memory_and_resets_nothing(
        keeper: tuple[BudgetKeeper, Path, list[int]], caplog: pytest.LogCaptureFixture,
        lose: Callable[[Path], None], why: str) -> None:
    k, path, lost = keeper
    caplog.set_level(logging.WARNING)
    shutil.copy(path, path.with_name("backup.db"))  # before any spend
    first = spend(k, 10)
    assert k.wait_round(5.0)
    lose(path)
    second = spend(k, 5)  # admitted from memory meanwhile: the ledger never forgot
    deadline = time.monotonic() + 10
    while (not lost or k.degraded) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost == [1], lost
    in_flight = [first[-1], second[-1]]
    committed = 13 * COST
    state = k.ledger.state(budgets(10.0), "acme", time.time())
    assert state.committed_usd == pytest.approx(committed)
    text = caplog.text
    assert f"lost its state: {why}" in text, text
    assert "admission goes on from this router's memory" in text, text
    assert "rebuilt sqlite:" in text and "holds in flight" in text, text
    k.ledger.settle(in_flight[0])
    assert k.wait_round(5.0)
    k.close()
    again = SqliteBudgetStore(path)  # a restart: every settled cent, the last hold too
    try:
        assert again.committed("acme", month()) == pytest.approx(committed + 2 * COST)
        assert [r.rid for r in again.recovered] == [in_flight[1].rid]
    finally:
        again.close()
