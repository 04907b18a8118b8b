"""Store calls per router stay within 10 round trips a second under sustained load.

Two gateways (router + Envoy from the project's config) share one redis-server.
Closed-loop clients keep both busy for a measured window with every kind of
store traffic at once: edge requests (capacity leases, heartbeats), cloud
requests that settle spend (flushes), and a tenant that runs into its hard
limit inside the window (lease grows near the ceiling, requests throttled and
waiting for a top-up). Round trips are read from Redis' own counters, before
and after the window: each budget round is one MULTI/EXEC (`exec` calls) and
each capacity sync runs ZCOUNT once (`zcount` calls). The routers'
`router_store_round_trips_total` (every purpose) must lie between that and
`total_reads_processed` (one read event per request or pipeline a client
sends; a batch over Redis' 16 KB read buffer counts more: an upper bound), and
be within the bound too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.stores.conftest import RedisServer

from .test_fleet_budget import Fleet, redis_server
from .test_fleet_slots import POLICY as SLOTS_POLICY

__all__ = ["redis_server"]  # the fixture, shared with the fleet budget tests
# store round trips per second of wall time
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.alone]
ROUTERS = 2
CLIENTS = 12  # per gateway
WARMUP_S, WINDOW_S = 4.0, 10.0
BOUND = 10.0  # round trips per second per router (issue: store calls per router <= 10/s)
# $0.0001 a cloud request: `tight` (a third of them) reaches its hard limit in the window
POLICY = SLOTS_POLICY.replace("tenants: {{default: {{limit_usd: 100000}}}}",
                              "tenants: {{default: {{limit_usd: 100000}}, "
                              "tight: {{limit_usd: 0.10}}}}")
KINDS = (("GDPR", "default"), ("HIPAA", "default"), ("HIPAA", "tight"))


def redis_counts(port: int) -> tuple[int, dict[str, int]]:
    """(read events Redis processed, calls per command) from INFO: one round trip."""
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        info = client.info("all")
    finally:
        client.close()
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()
             if k.startswith("cmdstat_")}
    return int(info["total_reads_processed"]), calls


def router_trips(fleet: Fleet) -> float:
    """router_store_round_trips_total summed over the fleet's routers."""
    total = 0.0
    for port in fleet.metrics:
        fleet.stack.metrics_port = port
        total += sum(v for k, v in fleet.stack.metrics().items()
                     if k.startswith("router_store_round_trips_total"))
    fleet.stack.metrics_port = fleet.metrics[0]
    return total


async def load(urls: list[str], seconds: float, counts: Counter[str]) -> None:
    """CLIENTS closed-loop clients per gateway, cycling edge, cloud and near-limit cloud
    (counted by tenant and status, refusals by reason, `tight`'s admissions in the window)."""
    began = time.monotonic()
    deadline = began + seconds
    rng = random.Random(23)

    async def client(url: str, i: int, session: aiohttp.ClientSession) -> None:
        n = i
        while time.monotonic() < deadline:
            # `tight` starts with the window: from the start, a fast machine spent its limit
            # during the warm-up and the window saw none of it admitted
            kinds = KINDS if time.monotonic() > began + WARMUP_S else KINDS[:2]
            residency, tenant = kinds[n % len(kinds)]
            n += 1
            headers = {"x-affinity-key": f"k{rng.randrange(60)}", "x-affinity-tenant": tenant,
                       "x-affinity-residency": residency, "x-emulate-delay-ms": "20"}
            try:
                async with session.get(url + "/infer", headers=headers) as r:
                    await r.read()
                    counts[f"{tenant}:{r.status}"] += 1
                    if r.status != 200:
                        counts[f"{tenant}:{r.headers.get('x-route-reason')}"] += 1
                    elif tenant == "tight" and time.monotonic() > began + WARMUP_S:
                        counts["tight:200 in window"] += 1
            except aiohttp.ClientError:
                counts["error"] += 1
                await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(url, i, session) for url in urls
                               for i in range(CLIENTS)))


def test_store_round_trips_per_router_stay_within_bound(tmp_path: Path,
                                                        redis_server: RedisServer) -> None:
    fleet = Fleet(tmp_path, redis_server.url, ROUTERS, policy=POLICY)
    counts: Counter[str] = Counter()
    try:
        fleet.start()

        async def run() -> tuple[float, int, dict[str, int], float]:
            task = asyncio.create_task(load(fleet.urls, WARMUP_S + WINDOW_S, counts))
            await asyncio.sleep(WARMUP_S)
            reads, calls = redis_counts(redis_server.port)
            began = time.monotonic()
            mine = await asyncio.to_thread(router_trips, fleet)  # inside Redis' window
            await asyncio.sleep(WINDOW_S)
            mine = await asyncio.to_thread(router_trips, fleet) - mine
            reads2, calls2 = redis_counts(redis_server.port)
            took = time.monotonic() - began
            await task
            delta = {k: v - calls.get(k, 0) for k, v in calls2.items() if v > calls.get(k, 0)}
            return took, reads2 - reads - 1, delta, mine  # less the first INFO's own read

        took, reads, calls, mine = asyncio.run(run())
    finally:
        fleet.close()
    exact = calls.get("exec", 0) + calls.get("zcount", 0)
    per_router = exact / took / ROUTERS
    print(f"window {took:.1f} s: {exact} rounds ({per_router:.1f}/s per router: "
          f"{calls.get('exec', 0)} budget, {calls.get('zcount', 0)} capacity), "
          f"{reads} read events, routers say {mine:.0f}; requests {dict(counts)}")
    assert counts["default:200"] >= 20 * WINDOW_S, counts  # sustained load, not an idle fleet
    # the tenant near its limit (leases shrinking, requests waiting for top-ups) was
    # admitted inside the window and reached its hard limit by the end
    assert counts["tight:200 in window"] > 0 and counts["tight:budget"] > 0, counts
    assert calls.get("evalsha", 0) > 0, calls
    assert per_router <= BOUND, (per_router, calls)
    assert mine / took / ROUTERS <= BOUND, mine  # every purpose, as the routers count
    # the routers' count agrees with Redis: at least the rounds Redis ran in its window
    # (less a round per router at each end: the scrapes lie inside it), at most its reads
    assert exact - 2 * ROUTERS <= mine <= reads, (exact, mine, reads)
