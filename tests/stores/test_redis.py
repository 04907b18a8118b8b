"""Redis budget store against a real redis-server: atomic, rolls over, survives outages."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from router.core.budget import MemoryBudgetStore, Reservation
from router.stores import open_store
from router.stores.redis import RETAIN_S, RedisBudgetStore, expire_at

from .conftest import RedisServer, free_port

T0 = 1_795_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def stamp(res: Reservation | None, at: float = T0) -> Reservation:
    assert res is not None
    return dataclasses.replace(res, at=at)


def test_billing_merge_matches_the_memory_store(redis_server: RedisServer) -> None:
    store = open_store(redis_server.url)
    assert isinstance(store, RedisBudgetStore)
    mem = MemoryBudgetStore()
    steps: list[tuple[str, float, float]] = [
        ("settle", T0, 2.0), ("settle", T0 + 10, 3.0), ("bill", T0 + 5, 100.0),
        ("settle", T0 + 4, 1.0), ("settle", T0 + 20.5, 0.5), ("bill", T0, 90.0),
        ("bill", T0 + 15, 104.0), ("settle", T0 + 30, 0.25), ("bill", -1.0, 200.0),
        ("settle", T0 + 31, 1.0)]
    for op, at, usd in steps:
        for s in (store, mem):
            if op == "settle":
                s.settle(stamp(s.reserve("t", "p", usd, 1e9), at), usd)
            else:
                s.apply_billing("t", "p", usd, None if at < 0 else at)
        assert store.committed("t", "p") == pytest.approx(mem.committed("t", "p"))
    assert store.committed("t", "p") == pytest.approx(201.0)
    store.close()


def hammer(stores: list[RedisBudgetStore], threads: int, amount: float, ceiling: float,
           tries: int) -> list[float]:
    """Every thread reserves and settles on one tenant; returns the admitted amounts."""
    admitted: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads * len(stores))

    def run(store: RedisBudgetStore) -> None:
        start.wait()
        for _ in range(tries):
            got = store.reserve("acme", "2026-11", amount, ceiling)
            if got is not None:
                store.settle(stamp(got), amount)
                with lock:
                    admitted.append(amount)

    workers = [threading.Thread(target=run, args=(s,)) for s in stores for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return admitted


def test_replicas_hammering_one_tenant_never_pass_the_limit(redis_server: RedisServer) -> None:
    stores = [RedisBudgetStore(redis_server.url, replicas=4) for _ in range(4)]
    admitted = hammer(stores, threads=4, amount=0.03, ceiling=3.0, tries=40)
    committed = stores[0].committed("acme", "2026-11")
    assert committed == pytest.approx(sum(admitted))
    assert committed <= 3.0 + 1e-9
    # leases are spent too once the free headroom is gone: at most one request's worth idle
    assert committed > 3.0 - 4 * 0.03 - 1e-9
    assert stores[0].reserved("acme", "2026-11") == 0.0
    for s in stores:
        s.close()


WORKER = """
import sys, dataclasses
from router.stores.redis import RedisBudgetStore
store = RedisBudgetStore(sys.argv[1], replicas=4)
n = 0
for _ in range(150):
    got = store.reserve("acme", "2026-11", 0.02, 2.0)
    if got is not None:
        store.settle(dataclasses.replace(got, at=1_795_000_000.0), 0.02)
        n += 1
store.close()
print(n)
"""


def test_processes_hammering_one_tenant_never_pass_the_limit(redis_server: RedisServer) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    counts = [int(p.communicate(timeout=120)[0]) for p in procs]
    store = RedisBudgetStore(redis_server.url)
    assert store.committed("acme", "2026-11") == pytest.approx(0.02 * sum(counts))
    assert 0.02 * sum(counts) <= 2.0 + 1e-9
    assert sum(counts) >= 100 - 4  # all but at most one lease-sized crumb per replica
    store.close()


def test_periods_roll_over_and_their_keys_expire(redis_server: RedisServer) -> None:
    store = RedisBudgetStore(redis_server.url)
    store.settle(stamp(store.reserve("t", "2026-11", 1.0, 1.0)), 1.0)
    assert store.reserve("t", "2026-11", 0.1, 1.0) is None
    assert store.reserve("t", "2026-12", 0.1, 1.0) is not None
    client = redis.Redis.from_url(redis_server.url)
    keys = client.keys("hr:budget:{t|2026-11}:*")
    assert keys
    end = 1_796_083_200  # 2026-12-01T00:00:00Z
    for key in keys:
        assert client.expiretime(key) == end + RETAIN_S
    client.close()
    assert expire_at("2026-11-22T10", 0) == 1_795_345_200 + RETAIN_S
    assert expire_at("2026-W47", 0) == 1_795_392_000 + RETAIN_S  # Monday 2026-11-23
    store.close()


def test_a_dead_replicas_hold_expires_and_a_late_settle_still_counts(
        redis_server: RedisServer) -> None:
    dying = RedisBudgetStore(redis_server.url, hold_ttl=0.2)
    other = RedisBudgetStore(redis_server.url)
    held = stamp(dying.reserve("t", "p", 0.8, 1.0))
    assert other.reserve("t", "p", 0.8, 1.0) is None
    time.sleep(0.3)
    assert other.reserved("t", "p") == 0.0
    got = other.reserve("t", "p", 0.2, 1.0)
    assert got is not None
    dying.settle(held, 0.8)  # the request outlived its hold: its spend is not lost
    other.settle(stamp(got), 0.2)
    assert other.committed("t", "p") == pytest.approx(1.0)
    dying.close()
    other.close()


def test_fallback_spends_only_its_lease_and_reconciles(redis_server: RedisServer) -> None:
    store = RedisBudgetStore(redis_server.url, replicas=2, lease_fraction=0.5, retry=0.1)
    store.settle(stamp(store.reserve("t", "p", 2.0, 10.0)), 2.0)
    inflight = stamp(store.reserve("t", "p", 1.0, 10.0))  # held in Redis through the outage
    lease = store._views[("t", "p")].lease
    assert lease == pytest.approx(0.25 * (10.0 - 2.0 - 1.0))
    redis_server.kill()
    local = []
    while (got := store.reserve("t", "p", 0.1, 10.0)) is not None:
        local.append(stamp(got, T0 + 1))
    assert len(local) == int(lease / 0.1 + 1e-9)  # the lease, and not a cent more
    for got in local:
        store.settle(got, 0.1)
    store.settle(inflight, 1.0)
    assert store.degraded
    assert store.committed("t", "p") == pytest.approx(3.0 + 0.1 * len(local))
    redis_server.start()
    time.sleep(0.15)
    fresh = RedisBudgetStore(redis_server.url)
    assert store.committed("t", "p") == pytest.approx(3.0 + 0.1 * len(local))  # flushes
    assert not store.degraded
    assert fresh.committed("t", "p") == pytest.approx(3.0 + 0.1 * len(local))
    assert fresh.reserved("t", "p") == 0.0
    # replaying the same settlements (a lost reply) counts nothing twice
    for got in [*local, inflight]:
        store._settle_remote(got, 0.1, "l" if got.rid % 2 else "r")
    assert fresh.committed("t", "p") == pytest.approx(3.0 + 0.1 * len(local))
    store.close()
    fresh.close()


def test_redis_restart_mid_run_loses_nothing(redis_server: RedisServer) -> None:
    stores = [RedisBudgetStore(redis_server.url, replicas=2, retry=0.05) for _ in range(2)]
    settled: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def run(store: RedisBudgetStore) -> None:
        while not stop.is_set():
            got = store.reserve("acme", "2026-11", 0.01, 1e6)
            if got is not None:
                store.settle(stamp(got), 0.01)
                with lock:
                    settled.append(0.01)
            time.sleep(0.002)  # request pacing: the queue grows with traffic, not a spin

    workers = [threading.Thread(target=run, args=(s,)) for s in stores for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    redis_server.kill()
    time.sleep(0.5)
    redis_server.start()
    time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join()
    for s in stores:
        s.close()
    check = RedisBudgetStore(redis_server.url)
    assert len(settled) > 100
    assert check.committed("acme", "2026-11") == pytest.approx(sum(settled))
    assert check.reserved("acme", "2026-11") == 0.0
    check.close()


def test_unreachable_from_the_start_refuses_budgeted_cloud_and_fails_fast() -> None:
    store = RedisBudgetStore(f"redis://127.0.0.1:{free_port()}/0?timeout=0.1&retry=5")
    began = time.monotonic()
    assert store.reserve("t", "p", 0.1, 10.0) is None  # no lease yet: nothing to spend
    assert store.reserve("t", "p", 0.1, float("inf")) is not None  # no budget to protect
    for _ in range(100):
        store.committed("t", "p")
    assert store.degraded
    assert time.monotonic() - began < 5  # one connect attempt, then the retry window
    store._queue.clear()
    store.close()


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown redis store option"):
        RedisBudgetStore("redis://127.0.0.1:1/0", lease=1.0)
