"""Three routers behind their own Envoys on one Redis that forgets: no spend is reset.

The tenant's hard limit is $0.05 and each cloud-only (HIPAA) request costs $0.0004,
so the fleet may admit 125 in all. Midway Redis is flushed (`FLUSHALL`); at the limit
it is killed and started again without its AOF. Before the routers checked an epoch,
each loss admitted 125 more ($0.15 against $0.05), with nothing logged but
"connection refused … answers again".
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.stores.conftest import RedisServer

from .test_fleet_budget import FLEET_POLICY, Fleet, committed, hammer, redis_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["redis_server"]  # the fixture, shared with the fleet budget tests
LIMIT, COST, FULL = 0.05, 0.0004, 125
REBUILD_S = 2.0
# The HIPAA pool at 0.4 ms of compute and $3,600/h: $0.0004 a request; tenant `tight` has $0.05.
POLICY = FLEET_POLICY.replace(
    'residency: [HIPAA], models: ["*"],\n       instance_type: h100-spot, latency_ms: 20, '
    "compute_ms: 10", 'residency: [HIPAA], models: ["*"],\n       instance_type: h100-spot, '
    "latency_ms: 20, compute_ms: 0.4").replace("roomy: {{limit_usd: 5.00}}",
                                              "roomy: {{limit_usd: 5.00}}, "
                                              "tight: {{limit_usd: 0.05}}")


def lost(port: int) -> float:
    """router_store_lost_total{store="redis"} of one router."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('router_store_lost_total{store="redis"}'):
                return float(line.rpartition(" ")[2])
    raise AssertionError("router_store_lost_total missing")


def wait_lost(fleet: Fleet, at_least: int) -> None:
    """Until every router has counted `at_least` losses (each reads every 0.5 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(lost(port) >= at_least for port in fleet.metrics):
            return
        time.sleep(0.1)
    raise AssertionError([lost(port) for port in fleet.metrics])


def test_flushall_and_a_restart_without_aof_reset_no_spend(tmp_path: Path,
                                                           redis_server: RedisServer) -> None:
    assert "compute_ms: 0.4" in POLICY and "tight:" in POLICY
    fleet = Fleet(tmp_path, redis_server.url, 3, f"&refresh=0.5&rebuild={REBUILD_S}",
                  policy=POLICY)
    counts: Counter[int | str] = Counter()
    try:
        fleet.start()
        counts += hammer(fleet, per_replica=30, threads=3, tenant="tight")  # 90 of 125
        first = counts[200]
        client = redis.Redis(port=redis_server.port)
        client.flushall()
        client.close()
        counts += hammer(fleet, per_replica=30, threads=3, tenant="tight")
        wait_lost(fleet, 1)
        time.sleep(REBUILD_S)  # the new epoch's hold is over: leases grow again
        counts += hammer(fleet, per_replica=30, threads=3, tenant="tight")  # to the limit
        at_limit = counts[200]
        redis_server.restart_empty()
        counts += hammer(fleet, per_replica=30, threads=3, tenant="tight")
        wait_lost(fleet, 2)
        time.sleep(REBUILD_S)
        counts += hammer(fleet, per_replica=30, threads=3, tenant="tight")
        served = fleet.stack.stats("cloud-hipaa")["hits"]
        failed_open = fleet.fail_opens()
        losses = [lost(port) for port in fleet.metrics]
    finally:
        fleet.close()
    assert failed_open == 0  # every request was decided by a router
    assert set(counts) <= {200, 429}, counts
    assert counts[200] == served, counts  # every 200 ran in the cloud pool
    assert 0 < first <= 90, counts  # the flush came midway
    assert served * COST <= LIMIT + 1e-9, (served, counts)  # 0 spend reset: the bound holds
    assert served >= FULL - 3 * 2, (at_limit, counts)  # the limit was reached, up to crumbs
    assert committed(redis_server.url, "tight") == pytest.approx(served * COST)
    assert all(n >= 2 for n in losses), losses  # each router counted both losses
    logs = [(tmp_path / name).read_text() for name in ("router.log", "router1.log",
                                                         "router2.log")]
    for log in logs:
        assert "is gone: the store was flushed or restarted without its data" in log, log
        # Every book the router holds is rebuilt (idle tenants' at $0); tight's is one of them.
        assert re.search(r"rebuilt \d+ budget books from this router's journal .*tight/", log), log
        assert "lost its state" in log
