"""SQLite budget store: committed spend survives restarts and kills; reserve is atomic."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from router.core.budget import MemoryBudgetStore, Reservation
from router.stores import open_backend
from router.stores.sqlite import BudgetStoreError, SqliteBudgetStore

T0 = 1_795_000_000.0


def settle_at(store: MemoryBudgetStore, at: float, usd: float, tenant: str = "t") -> None:
    held = store.reserve(tenant, "p", usd, float("inf"))
    assert held is not None
    store.settle(Reservation(held.tenant, held.period, held.amount, held.rid, at), usd)


def test_restart_keeps_committed_spend_and_bills(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    store = SqliteBudgetStore(path)
    settle_at(store, T0, 2.0)
    settle_at(store, T0 + 10, 3.0)
    store.apply_billing("t", "p", 100.0, as_of=T0 + 5)
    settle_at(store, T0 + 20, 0.25, tenant="u")
    held = store.reserve("t", "p", 7.0, 1000.0)  # in flight at the restart: dropped
    assert held is not None
    store.close()
    again = SqliteBudgetStore(path)
    assert again.committed("t", "p") == pytest.approx(103.0)
    assert again.committed("u", "p") == pytest.approx(0.25)
    assert again.reserved("t", "p") == 0.0
    # the billing merge keeps working on reloaded rows
    again.apply_billing("t", "p", 104.0, as_of=T0 + 15)
    assert again.committed("t", "p") == pytest.approx(104.0)
    again.close()
    assert SqliteBudgetStore(path).committed("t", "p") == pytest.approx(104.0)


def test_older_bill_after_restart_is_still_ignored(tmp_path: Path) -> None:
    store = SqliteBudgetStore(tmp_path / "b.db")
    store.apply_billing("t", "p", 50.0, as_of=T0 + 5)
    store.apply_billing("t", "p", 10.0, as_of=T0)  # out of order: ignored, not written
    store.close()
    again = SqliteBudgetStore(tmp_path / "b.db")
    assert again.committed("t", "p") == pytest.approx(50.0)
    again.apply_billing("t", "p", 10.0, as_of=T0)
    assert again.committed("t", "p") == pytest.approx(50.0)


KILLED = """
import os, signal, sys
from router.core.budget import Reservation
from router.stores.sqlite import SqliteBudgetStore
store = SqliteBudgetStore(sys.argv[1])
for i in range(200):
    held = store.reserve("t", "p", 0.01, 1e9)
    store.settle(Reservation("t", "p", 0.01, held.rid, 1_795_000_000.0 + i), 0.01)
print("settled", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_loses_no_settled_spend(tmp_path: Path) -> None:
    path = tmp_path / "state" / "budget.db"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9 and proc.stdout.strip() == "settled"
    store = SqliteBudgetStore(path)
    assert store.committed("t", "p") == pytest.approx(2.0)


def test_threads_reserving_at_once_never_overshoot(tmp_path: Path) -> None:
    store = SqliteBudgetStore(tmp_path / "b.db")
    held: list[Reservation] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(200):
            got = store.reserve("t", "p", 0.07, 10.0)
            if got is not None:
                with lock:
                    held.append(got)
                store.settle(got, got.amount)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == int(10.0 / 0.07)  # every cent of headroom used, none beyond
    assert store.committed("t", "p") <= 10.0 + 1e-9
    store.close()
    assert SqliteBudgetStore(tmp_path / "b.db").committed("t", "p") == pytest.approx(
        0.07 * len(held))


def test_parent_directories_are_created_and_spec_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "budget.db"
    store = open_backend(f"sqlite:{path}?synchronous=FULL")
    assert isinstance(store, SqliteBudgetStore)
    settle_at(store, T0, 1.5)
    store.close()
    assert path.exists()
    assert SqliteBudgetStore(path).committed("t", "p") == pytest.approx(1.5)


def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(BudgetStoreError, match=r"cannot open budget store sqlite:.*not-a-dir"):
        SqliteBudgetStore(blocker / "budget.db")


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BudgetStoreError, match="unknown option 'mode'"):
        SqliteBudgetStore(f"{tmp_path}/b.db?mode=x")
