"""Redis budget store against a real redis-server: leases, rollover, outages, no overshoot."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from router.core.budget import HARD, Billed, Entry, MemoryBudgetStore, Reservation, Settled
from router.core.spend import period_end, period_key
from router.stores import BudgetStoreError, open_backend
from router.stores.redis import RedisBudgetStore
from router.stores.redis_options import RETAIN_S, expire_at

from .conftest import RedisServer, Replica, TcpProxy, budgets, free_port

T0 = 1_795_000_000.0  # 2026-11-18
ROOT = Path(__file__).resolve().parents[2]
MONTH = "2026-11"


class Clock:
    """A settable wall clock shared by a replica's ledger and its keeper."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def period_now() -> str:
    return time.strftime("%Y-%m", time.gmtime())


def test_billing_merge_matches_the_memory_store(redis_server: RedisServer) -> None:
    store = open_backend(redis_server.url)
    assert isinstance(store, RedisBudgetStore)
    mem = MemoryBudgetStore()
    steps: list[tuple[str, float, float]] = [
        ("settle", T0, 2.0), ("settle", T0 + 10, 3.0), ("bill", T0 + 5, 100.0),
        ("settle", T0 + 4, 1.0), ("settle", T0 + 20.5, 0.5), ("bill", T0, 90.0),
        ("bill", T0 + 15, 104.0), ("settle", T0 + 30, 0.25), ("bill", -1.0, 200.0),
        ("settle", T0 + 31, 1.0)]
    for seq, (op, at, usd) in enumerate(steps, 1):
        if op == "settle":
            held = mem.reserve("t", "p", usd, 1e9)
            assert held is not None
            mem.settle(Reservation("t", "p", usd, held.rid, at), usd)
            store.write([Settled(Reservation("t", "p", usd, seq, at), usd, seq)])
        else:
            mem.apply_billing("t", "p", usd, None if at < 0 else at)
            store.write([Billed("t", "p", usd, None if at < 0 else at)])
        assert store.committed("t", "p") == pytest.approx(mem.committed("t", "p"))
    assert store.committed("t", "p") == pytest.approx(201.0)
    store.close()


def hammer(replicas: list[Replica], threads: int, amount: float, limit: float,
           tries: int) -> list[float]:
    """Every thread reserves and settles on one tenant; returns the admitted amounts."""
    admitted: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads * len(replicas))
    cfg = budgets(limit)

    def run(replica: Replica) -> None:
        start.wait()
        for _ in range(tries):
            got = replica.reserve(cfg, "acme", amount)
            if got is not None:
                replica.settle(got, amount)
                with lock:
                    admitted.append(amount)

    workers = [threading.Thread(target=run, args=(r,)) for r in replicas for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return admitted


def test_replicas_hammering_one_tenant_never_pass_the_limit(redis_server: RedisServer) -> None:
    replicas = [Replica(redis_server.url, replicas=4) for _ in range(4)]
    admitted = hammer(replicas, threads=4, amount=0.03, limit=3.0, tries=40)
    for r in replicas:
        r.close()  # flushes, and gives every lease back
    check = RedisBudgetStore(redis_server.url)
    committed, leased, _ = check.read("acme", period_now())
    assert committed == pytest.approx(sum(admitted))
    assert committed <= 3.0 + 1e-9
    # leases are spent too once the free headroom is gone: at most one request's worth idle
    assert committed > 3.0 - 4 * 0.03 - 1e-9
    assert leased == 0.0  # nothing is held once the replicas are gone
    check.close()


WORKER = """
import sys, time
from router.core.budget import THROTTLED
from router.core.policy import BudgetConfig, TenantBudget
from router.stores.keeper import BudgetKeeper
from router.stores.redis import RedisBudgetStore
keeper = BudgetKeeper(RedisBudgetStore(sys.argv[1], replicas=4)).start()
cfg = BudgetConfig(tenants={"acme": TenantBudget(limit_usd=2.0)})
n = 0
for _ in range(150):
    got = keeper.ledger.hold(cfg, "acme", 0.02, time.time())
    if got == THROTTLED and keeper.wait_round(2.0):
        got = keeper.ledger.hold(cfg, "acme", 0.02, time.time())
    if not isinstance(got, str):
        keeper.ledger.settle(got, 0.02)
        n += 1
assert not keeper.close()
print(n)
"""


def test_processes_hammering_one_tenant_never_pass_the_limit(redis_server: RedisServer) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    counts = [int(p.communicate(timeout=120)[0]) for p in procs]
    store = RedisBudgetStore(redis_server.url)
    assert store.committed("acme", period_now()) == pytest.approx(0.02 * sum(counts))
    assert 0.02 * sum(counts) <= 2.0 + 1e-9
    assert sum(counts) >= 100 - 4  # all but at most one lease-sized crumb per replica
    store.close()


def test_periods_roll_over_and_their_keys_expire(redis_server: RedisServer) -> None:
    # this month and the next, by the real clock: Redis expires keys by its own, so a fixed
    # month's keys (they go a week after it ends) were gone as soon as written once that week
    # had passed, and the test with them
    now = time.time()
    end = period_end(now, "month")
    clock = Clock(now)
    replica = Replica(redis_server.url, clock=clock)
    cfg = budgets(1.0, "t")
    held = replica.reserve(cfg, "t", 1.0)
    assert held is not None
    replica.settle(held, 1.0)
    assert replica.reserve(cfg, "t", 0.1) is None
    clock.t = end + 86400  # a day into the next month: a new period, nothing spent in it
    assert replica.reserve(cfg, "t", 0.1) is not None
    replica.close()
    client = redis.Redis.from_url(redis_server.url)
    keys = client.keys(f"hr:budget:{{t|{period_key(now, 'month')}}}:*")
    assert keys
    for key in keys:
        assert client.expiretime(key) == end + RETAIN_S
    client.close()
    assert expire_at("2026-11-22T10", 0) == 1_795_345_200 + RETAIN_S
    assert expire_at("2026-W47", 0) == 1_795_392_000 + RETAIN_S  # Monday 2026-11-23


def test_a_cut_off_replicas_lease_lapses_and_its_late_settle_still_counts(
        redis_server: RedisServer, proxy: TcpProxy) -> None:
    cfg = budgets(1.0, "t")
    dying = Replica(f"redis://127.0.0.1:{proxy.port}/0?timeout=0.2&retry=0.1", lease_ttl=1.0)
    other = Replica(redis_server.url)
    held = dying.reserve(cfg, "t", 0.8)
    assert held is not None
    assert other.reserve(cfg, "t", 0.8) is None  # the first replica's lease holds it
    deadline = time.monotonic() + 5.0  # the 0.2 it was granted, short of 0.8, goes back
    while other.backend.read("t", period_now())[2] > 0 and time.monotonic() < deadline:
        other.keeper.wait_round(1.0)
    assert other.backend.read("t", period_now())[1:] == (pytest.approx(0.8), 0.0)
    proxy.mode = "blackhole"  # the replica can no longer renew: Redis lets its lease lapse
    time.sleep(1.3)
    assert other.backend.read("t", period_now())[1] == pytest.approx(0.0)
    assert dying.reserve(cfg, "t", 0.1) is None  # past its TTL, a lease is not spent locally
    got = other.reserve(cfg, "t", 0.2)
    assert got is not None
    dying.settle(held, 0.8)  # the request outlived the lease: its spend is not lost
    other.settle(got, 0.2)
    proxy.mode = "forward"
    assert dying.flushed() and other.flushed()
    assert other.backend.committed("t", period_now()) == pytest.approx(1.0)
    dying.close()
    other.close()


def test_an_outage_spends_only_the_lease_and_reconciles(redis_server: RedisServer) -> None:
    replica = Replica(redis_server.url, replicas=2, lease_fraction=0.5, retry=0.1)
    written: list[list[Entry]] = []
    write = replica.backend.write

    def recording(entries: list[Entry]) -> None:
        write(entries)
        written.append(list(entries))

    replica.backend.write = recording  # type: ignore[method-assign]
    cfg, month = budgets(10.0, "t"), period_now()
    first = replica.reserve(cfg, "t", 2.0)
    assert first is not None
    replica.settle(first, 2.0)
    assert replica.flushed()
    inflight = replica.reserve(cfg, "t", 1.0)  # in flight through the outage
    assert inflight is not None
    lease = replica.ledger.leases()[0].lease
    assert lease == pytest.approx(0.25 * (10.0 - 2.0))  # share × the headroom left
    redis_server.kill()
    local = []
    while (got := replica.reserve(cfg, "t", 0.1, wait=0.5)) is not None:
        local.append(got)
    assert len(local) == int((lease - 1.0) / 0.1 + 1e-9)  # the lease, and not a cent more
    for got in local:
        replica.settle(got, 0.1)
    replica.settle(inflight, 1.0)
    assert replica.keeper.degraded
    committed = replica.ledger.state(cfg, "t", time.time()).committed_usd
    assert committed == pytest.approx(3.0 + 0.1 * len(local))
    redis_server.start()
    assert replica.flushed()
    fresh = RedisBudgetStore(redis_server.url)
    assert fresh.committed("t", month) == pytest.approx(3.0 + 0.1 * len(local))
    replica.close()
    assert fresh.read("t", month)[1] == 0.0  # every lease given back
    # replaying the same settlements (a lost reply) counts nothing twice
    for entries in written:
        write(entries)
    assert fresh.committed("t", month) == pytest.approx(3.0 + 0.1 * len(local))
    fresh.close()


def test_headroom_split_across_busy_replicas_goes_to_one_of_them(
        redis_server: RedisServer) -> None:
    """Headroom for one more request, held in two pieces each too small for it, by two
    replicas that both keep asking: one of them gets the request, then both refuse for
    the limit, instead of throttling each other until the period ends."""
    cfg, month = budgets(1.0, "t"), period_now()
    a, b = Replica(redis_server.url), Replica(redis_server.url)
    for replica in (a, b):  # each is granted a quarter of the headroom and spends 0.1 of it
        got = replica.reserve(cfg, "t", 0.1)
        assert got is not None
        replica.settle(got, 0.1)
        assert replica.flushed()
    leases = [r.ledger.leases()[0].lease for r in (a, b)]
    assert leases == [pytest.approx(0.15), pytest.approx(0.125)]
    # 0.8 of headroom is left; a 0.7 request fits it, and fits neither replica's piece
    answers = []
    for replica in (a, b, a, b, a, b):
        got = replica.reserve(cfg, "t", 0.7)
        answers.append(got is not None)
        if got is not None:
            replica.settle(got, 0.7)
            assert replica.flushed()
            break
    assert answers[-1], answers
    assert a.backend.committed("t", month) == pytest.approx(0.9)
    for replica in (a, b):  # what is left (0.1) is below the next request: the limit's refusal
        deadline = time.monotonic() + 5.0
        while (why := replica.ledger.hold(cfg, "t", 0.7, time.time())) != HARD \
                and time.monotonic() < deadline:
            replica.keeper.wait_round(1.0)
        assert why == HARD
    a.close()
    b.close()
    assert RedisBudgetStore(redis_server.url).read("t", month)[1] == 0.0


def test_redis_restart_mid_run_loses_nothing(redis_server: RedisServer) -> None:
    replicas = [Replica(redis_server.url, replicas=2, retry=0.05) for _ in range(2)]
    cfg = budgets(1e6)
    settled: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def run(replica: Replica) -> None:
        while not stop.is_set():
            got = replica.reserve(cfg, "acme", 0.01, wait=0.2)
            if got is not None:
                replica.settle(got, 0.01)
                with lock:
                    settled.append(0.01)
            time.sleep(0.002)  # request pacing: the queue grows with traffic, not a spin

    workers = [threading.Thread(target=run, args=(r,)) for r in replicas for _ in range(2)]
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
    for r in replicas:
        r.close()
    check = RedisBudgetStore(redis_server.url)
    assert len(settled) > 100
    committed, leased, _ = check.read("acme", period_now())
    assert committed == pytest.approx(sum(settled))
    assert leased == 0.0
    check.close()


def test_unreachable_from_the_start_refuses_budgeted_cloud_and_fails_fast() -> None:
    began = time.monotonic()
    replica = Replica(f"redis://127.0.0.1:{free_port()}/0?timeout=0.1&retry=5")
    limited, unlimited = budgets(10.0, "t"), budgets(None)
    assert replica.reserve(limited, "t", 0.1) is None  # no lease yet: nothing to spend
    held = replica.reserve(unlimited, "t", 0.1)  # no budget to protect
    assert held is not None
    replica.settle(held)
    for _ in range(100):
        replica.ledger.state(limited, "t", time.time())
    assert replica.keeper.degraded
    assert time.monotonic() - began < 5  # one connect attempt, then the retry window
    lost = replica.keeper.close(tries=1)
    assert [type(e) for e in lost] == [Settled]  # said, not silently dropped


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown redis store option"):
        RedisBudgetStore("redis://127.0.0.1:1/0", lease=1.0)


def test_a_write_is_one_round_trip_and_a_flushed_script_cache_costs_two_more(
        redis_server: RedisServer) -> None:
    """No SCRIPT EXISTS before each pipeline (redis-py's way): EVALSHA alone, the scripts
    loaded only when Redis says it lacks them, and the batch sent again."""
    store = RedisBudgetStore(redis_server.url, timeout=5.0)  # the subject is not the timeout
    client = redis.Redis(port=redis_server.port)

    def settle(seq: int) -> None:
        store.write([Settled(Reservation("t", "p", 1.0, seq, T0), 1.0, seq)])

    def reads() -> int:
        return int(client.info("stats")["total_reads_processed"])

    try:
        settle(1)  # first contact: the persistence check, the epoch, the scripts loaded
        assert store.trips["scripts"] == 2  # Redis lacked them: loaded, and the write again
        before = reads()
        settle(2)
        assert reads() - before == 1 + 1  # the write, and the INFO that read the count
        assert "cmdstat_script|exists" not in client.info("commandstats")
        client.script_flush()
        settle(3)
        assert store.trips["scripts"] == 4  # loaded again, and the write again
        settle(3)  # a replay counts nothing twice
        assert store.committed("t", "p") == pytest.approx(3.0)
        assert store.trips["budget"] == 4
    finally:
        client.close()
        store.close()


@pytest.mark.parametrize("option", ["sync=0", "sync_rate=0", "sync_rate=-1"])
def test_a_pace_that_cannot_run_is_refused_by_name(option: str) -> None:
    with pytest.raises(BudgetStoreError, match=option.partition("=")[0] + ".*must be above 0"):
        open_backend(f"redis://127.0.0.1:1/0?{option}")
