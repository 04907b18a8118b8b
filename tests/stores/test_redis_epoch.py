"""A Redis that forgets, against a real redis-server: the period's spend is never reset.

Three replicas share a $0.05 hard limit at $0.0004 a request (125 requests). The
store is flushed, restarted without its AOF, or rolled back to an older copy of
itself, at the limit or midway; the fleet admits no more than the limit in all,
each replica counts the loss, logs it, and rebuilds the spend from its journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from router.stores.redis import RedisBudgetStore
from router.stores.redis_epoch import EPOCH_KEY, Proofs

from .conftest import RedisServer, Replica, budgets, month

LIMIT, COST, FULL = 0.05, 0.0004, 125
pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(redis_server: RedisServer) -> Iterator[list[Replica]]:
    replicas = [Replica(redis_server.url, replicas=3, rebuild=1.0, refresh=0.2, retry=0.1)
                for _ in range(3)]
    try:
        yield replicas
    finally:
        for replica in replicas:
            replica.close()


def spend(fleet: list[Replica], rounds: int) -> int:
    """Each replica in turn admits and settles one request, `rounds` times; how many got in."""
    cfg = budgets(LIMIT)
    admitted = 0
    for _ in range(rounds):
        for replica in fleet:
            held = replica.reserve(cfg, "acme", COST, wait=0.5)
            if held is not None:
                replica.settle(held)
                admitted += 1
    return admitted


def committed(server: RedisServer) -> float:
    check = RedisBudgetStore(server.url)
    try:
        return check.committed("acme", month())
    finally:
        check.close()


def flushall(server: RedisServer) -> None:
    client = redis.Redis(port=server.port)
    client.flushall()
    client.close()


def rollback(server: RedisServer) -> Callable[[], None]:
    """Copy every key now; the returned call puts the copy back (an older snapshot)."""
    client = redis.Redis(port=server.port)
    saved = {key: client.dump(key) for key in client.keys("hr:*")}

    def restore() -> None:
        for key, data in saved.items():
            client.restore(key, 0, data, replace=True)
        client.close()
    return restore


def settle_down(fleet: list[Replica]) -> None:
    """Wait until every replica noticed the loss, rebuilt and flushed."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if all(r.keeper.lost > 0 and not r.keeper._rebuild for r in fleet) and \
                all(r.flushed(2.0) for r in fleet):
            return
        time.sleep(0.05)
    raise AssertionError([(r.keeper.lost, r.keeper._rebuild) for r in fleet])


@pytest.mark.parametrize("loss", ["flushall", "restart-without-aof"])
@pytest.mark.parametrize("when", [FULL, 60], ids=["at-the-limit", "midway"])
def test_a_store_that_forgets_resets_no_spend(fleet: list[Replica], redis_server: RedisServer,
                                              caplog: pytest.LogCaptureFixture, loss: str,
                                              when: int) -> None:
    caplog.set_level(logging.WARNING)
    before = spend(fleet, -(-when // 3))
    assert all(r.flushed() for r in fleet)
    if loss == "flushall":
        flushall(redis_server)
    else:
        redis_server.restart_empty()
    after = spend(fleet, 20)  # while the replicas find out and rebuild
    settle_down(fleet)
    time.sleep(1.0)  # the new epoch's hold: no lease grows before every replica rebuilt
    after += spend(fleet, 50)  # more than the whole limit again
    assert (before + after) * COST <= LIMIT + 1e-9, (before, after)
    assert before + after >= FULL - 3 * 3, (before, after)  # a few lease crumbs at most
    assert committed(redis_server) == pytest.approx((before + after) * COST)
    text = caplog.text
    assert "lost its state" in text and "is gone: the store was flushed" in text, text
    assert "rebuilt 1 budget books from this router's journal" in text, text


def test_a_store_rolled_back_to_an_older_copy_is_caught(fleet: list[Replica],
                                                        redis_server: RedisServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    before = spend(fleet, 10)
    assert all(r.flushed() for r in fleet)
    restore = rollback(redis_server)  # 30 requests' worth
    before += spend(fleet, 20)
    assert all(r.flushed() for r in fleet)
    restore()  # the store now says 30 requests were spent; 90 were
    after = spend(fleet, 20)
    settle_down(fleet)
    time.sleep(1.0)
    after += spend(fleet, 50)
    assert (before + after) * COST <= LIMIT + 1e-9, (before, after)
    assert before + after >= FULL - 3 * 3, (before, after)
    assert committed(redis_server) == pytest.approx((before + after) * COST)
    assert "its write count went back" in caplog.text, caplog.text


def test_every_replica_rebuilding_twice_counts_nothing_twice(fleet: list[Replica],
                                                            redis_server: RedisServer) -> None:
    """Each replica's writes after the others' last reads are in the floor, once."""
    cfg = budgets(LIMIT)
    spent = 0
    for replica in fleet:  # each writes after the others read: every proof is needed
        for _ in range(5):
            held = replica.reserve(cfg, "acme", COST)
            assert held is not None
            replica.settle(held)
            spent += 1
        assert replica.flushed()
    flushall(redis_server)
    for replica in fleet + fleet:
        replica.keeper._rebuild = True  # as after StoreLost; the second round is a replay
        assert replica.keeper.wait_round(5.0)
    assert committed(redis_server) == pytest.approx(spent * COST)


def test_a_reconnect_checks_persistence_again(fleet: list[Replica], redis_server: RedisServer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    before = spend(fleet, 20)
    assert all(r.flushed() for r in fleet)
    redis_server.restart_empty(persistent=False)
    after = spend(fleet, 20)
    time.sleep(0.5)
    assert "appendonly is off" in caplog.text, caplog.text
    assert "rebuilt 1 budget books" not in caplog.text  # refused, not trusted, until it persists
    assert not any(r.keeper._healthy for r in fleet)
    assert (before + after) * COST <= LIMIT + 1e-9
    client = redis.Redis(port=redis_server.port)
    client.config_set("appendonly", "yes")  # fixed: now the loss is found and rebuilt
    client.close()
    settle_down(fleet)
    after += spend(fleet, 60)
    assert (before + after) * COST <= LIMIT + 1e-9, (before, after)
    assert all(r.flushed() for r in fleet)
    assert committed(redis_server) == pytest.approx((before + after) * COST)


def test_the_epoch_is_written_at_first_contact_and_kept(redis_server: RedisServer) -> None:
    a = RedisBudgetStore(redis_server.url)
    b = RedisBudgetStore(redis_server.url)
    try:
        a._check()
        b._check()
        assert a.epoch and a.epoch == b.epoch
        client = redis.Redis(port=redis_server.port, decode_responses=True)
        assert client.hget(EPOCH_KEY, "id") == a.epoch
        client.close()
    finally:
        a.close()
        b.close()


def test_a_proof_keeps_only_own_writes_after_its_last_read() -> None:
    proofs = Proofs()
    book = ("acme", "2026-11")
    proofs.wrote(book, "e1", 3, 0.1)
    proofs.read(book, "e1", 4, 1.0)
    proofs.wrote(book, "e1", 5, 0.2)
    proofs.wrote(book, "e1", 7, 0.3)
    proofs.read(book, "e1", 6, 1.5)
    assert proofs.books[book].committed == 1.5 and proofs.books[book].after == [(7, 0.3)]
    proofs.read(book, "e1", 2, 0.5)  # an older read changes nothing
    assert proofs.books[book].gen == 6
    proofs.read(book, "e2", 1, 2.0)  # a new epoch starts a new proof
    assert proofs.books[book].after == [] and proofs.books[book].epoch == "e2"
