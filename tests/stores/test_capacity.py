"""Capacity lease stores (Redis script, host-local SQLite) and the keeper's store loss."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.core.capacity import fair
from router.stores.capacity import (
    Ask,
    CapacityBackend,
    Grant,
    RedisCapacity,
    SqliteCapacity,
)
from router.stores.capkeeper import CapacityKeeper
from router.stores.keeper import StoreDown
from tests.core.factory import node, policy, table

from .conftest import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CapacityBackend]:
    if request.param == "redis":
        server = RedisServer(tmp_path, persistent=False)
        server.start()
        store: CapacityBackend = RedisCapacity(server.url, prefix=f"t{time.monotonic_ns()}")
        try:
            yield store
        finally:
            store.close()
            server.kill()
    else:
        store = SqliteCapacity(str(tmp_path / "capacity.db"))
        yield store
        store.close()


def sync(store: CapacityBackend, member: str, *asks: tuple[str, int, int, int],
         ttl: float = 5.0) -> tuple[int, list[Grant]]:
    return store.sync(member, ttl, [Ask(*a) for a in asks])


def test_busy_router_takes_what_idle_ones_give_back(backend: CapacityBackend) -> None:
    members, grants = sync(backend, "a", ("n", 8, 0, 1))
    assert (members, grants[0].lease) == (1, 8)  # alone: the whole node
    _, (b,) = sync(backend, "b", ("n", 8, 0, 1))
    assert (b.lease, b.target) == (0, 4)  # a holds all 8 until it hands 4 back
    _, (a,) = sync(backend, "a", ("n", 8, 8, 1))
    assert (a.lease, a.target) == (8, 4)  # its target drops; it stops admitting above 4 now
    _, (a,) = sync(backend, "a", ("n", 8, 4, 1))
    assert a.lease == 4  # ... and gives the rest back at its next call
    _, (b,) = sync(backend, "b", ("n", 8, 0, 12))
    assert (b.lease, b.target, b.leased) == (4, 7, 8)  # a's 4 are still a's
    _, (a,) = sync(backend, "a", ("n", 8, 1, 1))  # a's target is 1 now: it keeps 1
    _, (b,) = sync(backend, "b", ("n", 8, 4, 12))
    assert (a.lease, b.lease, b.leased) == (1, 7, 8)


def test_one_call_covers_every_resource_and_counts_live_routers(
        backend: CapacityBackend) -> None:
    sync(backend, "a", ("x", 4, 0, 1), ("y", 2, 0, 1), ttl=0.4)
    members, grants = sync(backend, "b", ("x", 4, 0, 1), ("y", 2, 0, 1), ("z", 3, 0, 1))
    assert members == 2
    assert [g.lease for g in grants] == [0, 0, 3]
    for _ in range(6):  # a stopped renewing, b did not: a's leases lapse, b grows into them
        time.sleep(0.1)
        members, grants = sync(backend, "b", ("x", 4, 0, 1), ("y", 2, 0, 1))
    assert members == 1
    assert [g.lease for g in grants] == [4, 2]


def test_an_outage_every_router_saw_lapses_no_lease(backend: CapacityBackend) -> None:
    """No call for longer than the TTL (Redis stopped, say): the routers kept their leases
    through it, so the store still counts them."""
    sync(backend, "a", ("x", 4, 0, 1), ttl=0.4)
    time.sleep(0.6)
    members, (b,) = sync(backend, "b", ("x", 4, 0, 9), ttl=0.4)
    assert (members, b.lease) == (2, 0)


def test_release_gives_every_lease_back(backend: CapacityBackend) -> None:
    sync(backend, "a", ("x", 4, 0, 1))
    backend.release("a", ["x"])
    members, (b,) = sync(backend, "b", ("x", 4, 0, 1))
    assert (members, b.lease) == (1, 4)


@settings(max_examples=25, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(capacity=st.integers(0, 20),
       calls=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 20), st.integers(0, 30)),
                      min_size=1, max_size=40))
def test_the_store_matches_the_core_and_never_leases_past_capacity(
        backend: CapacityBackend, capacity: int, calls: list[tuple[int, int, int]]) -> None:
    """Random calls (router, keep, demand): Σ leases ≤ capacity after each, and once
    every router has called again the targets are `fair` of the last demands."""
    res = f"r{time.monotonic_ns()}"
    leases: dict[str, int] = {}
    demands: dict[str, int] = {}
    for who, keep, dem in calls:
        name = f"m{who}"
        _, (g,) = sync(backend, name, (res, capacity, min(keep, leases.get(name, 0)), dem))
        leases[name], demands[name] = g.lease, dem
        assert g.leased == sum(leases.values()) <= capacity
    want = fair(capacity, demands)
    for name in sorted(demands):
        _, (g,) = sync(backend, name, (res, capacity, leases[name], demands[name]))
        assert g.target == want[name]


class Flaky:
    """A backend that answers like a lone router's store until told to fail."""

    kind = "test"

    def __init__(self) -> None:
        self.down = False
        self.members = 3

    def sync(self, member: str, ttl: float, asks: list[Ask]) -> tuple[int, list[Grant]]:
        if self.down:
            raise StoreDown("test store down")
        return self.members, [Grant(a.capacity // 2, a.capacity // 2, a.capacity // 2)
                              for a in asks]

    def release(self, member: str, names: list[str]) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_router_that_loses_the_store_keeps_its_lease_until_ttl_then_a_safe_share() -> None:
    snap = table(policy([node(0, slots=9)]))
    store = Flaky()
    seen: list[int] = []
    keeper = CapacityKeeper(store, snap.tracker, lambda: snap, ttl=0.6, period=3600,
                            on_members=seen.append)
    keeper.start()
    slot = snap.nodes[0].slot
    try:
        assert snap.tracker.held[slot] == 4 and seen == [3]
        store.down = True
        assert not keeper.cycle()
        assert snap.tracker.held[slot] == 4  # within its TTL: what it holds
        time.sleep(0.5)
        keeper.cycle()
        assert snap.tracker.held[slot] == 3  # 9 slots / 3 routers
        store.down = False
        assert keeper.cycle() and snap.tracker.held[slot] == 4
    finally:
        keeper.close()


def test_opening_the_file_waits_out_another_process_opening_it(tmp_path: Path) -> None:
    """`serve --workers N` opens the host-local file in N processes at once. One of them
    holding it (setting WAL and the schema) longer than a sync may wait must not fail the
    others' start, as it did (`database is locked`, a worker gone); a sync still gives up
    after its own short wait."""
    path = str(tmp_path / "capacity.db")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another worker, in the middle of its set-up
    released = threading.Timer(1.0, holder.execute, ("COMMIT",))
    released.start()
    store = SqliteCapacity(path, timeout=0.25)  # waited for the holder
    released.join()
    members, (grant,) = sync(store, "a", ("n", 4, 0, 1))
    assert (members, grant.lease) == (1, 4)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreDown, match="locked"):
        sync(store, "a", ("n", 4, 0, 1))  # past its 0.25 s: the keeper counts the store down
    holder.execute("COMMIT")
    store.close()
    holder.close()
