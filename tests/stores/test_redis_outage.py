"""A Redis that stalls, stops or forgets: the routing thread never waits, spend counts once."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from router.core.decision import Routed
from router.core.policy import Policy
from router.policy.loader import parse_policy
from router.runtime import Runtime
from router.stores import BudgetStoreError, open_keeper
from router.stores.redis import RedisBudgetStore
from tests.integration.stack import POLICY

from .conftest import RedisServer, Replica, TcpProxy, budgets, month, timed

ROOT = Path(__file__).resolve().parents[2]
PORTS = {f"p{i}": 9300 + i for i in range(6)}
CLOUD = {"x-affinity-residency": "HIPAA"}  # no edge node qualifies: $0.01 in cloud-hipaa
EDGE = {"x-affinity-residency": "GDPR"}
# A routing call that waited on the store would take at least the store's 0.25 s timeout (or
# the whole stall); one that did not is microseconds, plus whatever the scheduler adds on a
# busy machine (up to 0.056 s measured on 2 cores at load 9). Half of Envoy's 0.2 s message
# timeout tells the two apart with room on both sides.
BOUND_S = 0.1


def policy(store: str) -> Policy:
    parsed, problems = parse_policy(POLICY.format(store=store, **PORTS), "outage.yaml")
    assert parsed is not None, problems
    return parsed


@pytest.mark.parametrize("mode", ["blackhole", "mute", "stopped"])
def test_a_stalled_redis_never_slows_routing_and_spend_is_flushed_once(
        redis_server: RedisServer, proxy: TcpProxy, mode: str) -> None:
    """blackhole: connections accepted, never answered; mute: commands run, replies lost;
    stopped: the server is killed (-9) and later started again on its data."""
    port = redis_server.port if mode == "stopped" else proxy.port
    url = f"redis://127.0.0.1:{port}/0?timeout=0.25&retry=0.2"
    keeper = open_keeper(url)
    rt = Runtime(policy(url), keeper.ledger)
    budgets_ = rt.policy.budgets
    # As `serve` does once started: what lives for the whole run stays out of the cyclic
    # collector's full passes (a collector pause is no store wait and not measured here).
    gc.collect()
    gc.freeze()
    try:
        first = rt.route({**CLOUD, "x-affinity-key": "warm"})
        assert first.decision.reason == "budget-throttled"  # no lease yet: one top-up
        assert keeper.wait_round(5.0)
        warm = rt.route({**CLOUD, "x-affinity-key": "warm"})
        assert warm.decision.mode == "cloud"
        rt.finish(warm)
        spent = warm.decision.cost_usd
        if mode == "stopped":
            redis_server.kill()
        else:
            proxy.mode = mode
        durations: list[float] = []
        cloud = edge = 0
        stop = time.monotonic() + 1.5  # several store timeouts and retries
        i = 0
        while time.monotonic() < stop:
            i += 1
            for tags in (CLOUD, EDGE):
                routed: Routed = timed(durations, lambda t=tags, k=i: rt.route(
                    {**t, "x-affinity-key": f"k{k}"}))
                d = routed.decision
                assert d.routed, d.detail
                if tags is CLOUD:
                    assert d.mode == "cloud"
                    cloud += 1
                    spent += d.cost_usd
                else:
                    assert d.mode in ("edge", "edge-degraded")
                    edge += 1
                timed(durations, lambda r=routed: rt.finish(r))
            timed(durations, lambda: rt.ledger.state(budgets_, "default", rt.clock()))
            timed(durations, lambda: rt.ledger.available(budgets_, "default", rt.clock()))
            time.sleep(0.002)
        assert cloud > 50 and edge > 50
        assert keeper.degraded and keeper.errors > 0  # the keeper did hit the stall
        assert max(durations) < BOUND_S, f"slowest routing-thread call {max(durations):.4f} s"
        if mode == "stopped":
            redis_server.start()
        else:
            proxy.mode = "forward"
        deadline = time.monotonic() + 15
        while keeper.degraded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not keeper.degraded
        check = RedisBudgetStore(f"redis://127.0.0.1:{redis_server.port}/0")
        assert check.committed("default", month()) == pytest.approx(spent)
        assert not keeper.close()
        assert check.committed("default", month()) == pytest.approx(spent)  # once, not twice
        assert check.read("default", month())[1] == 0.0  # the lease went back
        check.close()
    finally:
        gc.unfreeze()
        keeper.close()


def test_an_idle_lease_goes_back_to_the_fleet(redis_server: RedisServer) -> None:
    replica = Replica(redis_server.url, idle=0.3, refresh=0.1)
    cfg = budgets(10.0)
    try:
        held = replica.reserve(cfg, "acme", 0.5)
        assert held is not None
        replica.settle(held)
        assert replica.backend.read("acme", month())[1] > 0.5  # a lease beyond the need
        deadline = time.monotonic() + 5
        while replica.backend.read("acme", month())[1] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replica.backend.read("acme", month())[1] == 0.0
        assert replica.ledger.available(cfg, "acme", time.time()) == 0.0
        again = replica.reserve(cfg, "acme", 0.5)  # busy again: one top-up, then admitted
        assert again is not None
        replica.settle(again)
        assert replica.flushed()
        assert replica.backend.committed("acme", month()) == pytest.approx(1.0)
    finally:
        replica.close()


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path, persistent=False)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_a_redis_that_would_forget_spend_is_refused(volatile_redis: RedisServer) -> None:
    with pytest.raises(BudgetStoreError, match=r"appendonly is off.*persistence=warn"):
        open_keeper(volatile_redis.url)


def test_persistence_warn_starts_and_says_so(volatile_redis: RedisServer,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        keeper = open_keeper(volatile_redis.url + "?persistence=warn")
    keeper.close()
    assert any("appendonly is off" in r.getMessage() and "persistence=warn" in r.getMessage()
               for r in caplog.records)


def test_serve_exits_2_on_a_redis_that_would_forget_spend(volatile_redis: RedisServer,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(store=volatile_redis.url, **PORTS))
    proc = subprocess.run([sys.executable, "-m", "router", "serve", "--policy", str(path),
                           "--metrics", "off", "--grpc", "127.0.0.1:0"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"budget store {volatile_redis.url}: appendonly is off" in proc.stderr
