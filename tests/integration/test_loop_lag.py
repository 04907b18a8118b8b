"""The request path never waits: event-loop lag stays low through a Redis blackhole, a
1,000-node policy reload and feed refreshes, under load through real Envoy."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from router.core.feedsnapshot import format_time
from tests.stores.conftest import RedisServer, TcpProxy

from .stack import NODES, POLICY, Stack, fail_opens

# an event-loop lag bound
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.alone]
# What this test tells apart: a loop that never waits on the store, the reload or the refresh
# from one that does. One that waited would put its p99 at the store's 0.25 s timeout, or
# near 0.1 s for a 1,000-node policy built on the loop. One that does not stays near 5 ms on a
# quiet machine (this test's first bound) and reached the 10 ms bucket on 2 cores at load 9,
# where the scheduler, not the router, sets the figure: the bound is the next bucket up.
LAG_P99_S = 0.025
FEEDED = POLICY.replace(
    "refresh_seconds: 30",
    'refresh_seconds: 1\nfeed: {{source: "file:{feed}", stale_after_seconds: 60}}')


def write_feed(path: Path, tick: int) -> None:
    nodes = [{"id": n, "healthy": True, "compute_score": 1.0 - 0.01 * (tick % 5)} for n in NODES]
    doc = {"version": 1, "generated_at": format_time(time.time()), "nodes": nodes}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def bulk(text: str, n: int = 1000) -> str:
    """`text` with n more edge nodes (residency BULK: no request in this test asks for it)."""
    extra = "".join(f'    - {{id: bulk-{i:04d}, address: "127.0.0.1:{30000 + i}", weight: 1, '
                    f"slots: 4, residency: [BULK]}}\n" for i in range(n))
    return text.replace("cloud:\n", extra + "cloud:\n", 1)


def lag_buckets(stack: Stack) -> dict[float, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for le, value in re.findall(r'router_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)',
                                text):
        out[float(le)] = float(value)
    return out


def p99(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(upper bound of the 99th percentile, samples) from the histogram's growth."""
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    for le in sorted(after):
        if after[le] - before.get(le, 0.0) >= 0.99 * total:
            return le, total
    return float("inf"), total


def test_loop_lag_p99_stays_low_through_redis_blackhole_reload_and_refresh(
        tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    proxy = TcpProxy(redis.port)
    feed = tmp_path / "feed.json"
    write_feed(feed, 0)
    store = f"redis://127.0.0.1:{proxy.port}/0?replicas=1"
    stack = Stack(tmp_path, store=store, policy=FEEDED.replace("{feed}", str(feed)))
    stop = threading.Event()
    ticks = [0]

    def refresh_feed() -> None:
        while not stop.wait(0.5):
            ticks[0] += 1
            write_feed(feed, ticks[0])

    results: list[tuple[float, int, dict[str, str]]] = []

    async def load(seconds: float) -> None:
        async def one(session: aiohttp.ClientSession, i: int) -> None:
            cloud = i % 4 == 0
            headers = {"x-affinity-key": f"k{i % 300}",
                       "x-affinity-residency": "HIPAA" if cloud else "GDPR",
                       "x-affinity-tenant": "default"}
            async with session.get(stack.url + "/infer", headers=headers) as r:
                await r.read()
                results.append((time.monotonic(), r.status, dict(r.headers)))

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            tasks, began, i = [], time.monotonic(), 0
            while time.monotonic() - began < seconds:  # open loop, ~100 requests/s
                tasks.append(asyncio.create_task(one(session, i)))
                i += 1
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)

    feeder = threading.Thread(target=refresh_feed)
    try:
        stack.start()
        feeder.start()
        asyncio.run(load(2.0))  # warm: leases granted, classes built
        before = lag_buckets(stack)
        reloads = stack.metrics().get('router_policy_reload_total{result="ok"}', 0.0)

        async def chaos() -> None:
            loader = asyncio.create_task(load(12.0))
            await asyncio.sleep(2.0)
            proxy.mode = "blackhole"  # Redis accepts and never answers
            await asyncio.sleep(2.0)
            stack.policy.write_text(bulk(stack.policy_text))  # reloads within a second
            await loader

        asyncio.run(chaos())
        after = lag_buckets(stack)
        metrics = stack.metrics()
        opened = fail_opens(stack.admin)
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join()
        stack.close()
        proxy.close()
        redis.kill()
    assert metrics['router_policy_reload_total{result="ok"}'] == reloads + 1
    assert metrics['router_feed_refresh_total{result="ok"}'] >= 10
    bound, samples = p99(before, after)
    assert samples >= 150
    spread = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    assert bound <= LAG_P99_S, (bound, samples, list(spread.values()))
    edge = [(s, h) for _, s, h in results if h.get("x-route-node", "").startswith("eu-")
            or (s == 200 and h.get("x-served-by", "").startswith("eu-"))]
    assert len(edge) > 500
    # every request an edge node served was the router's choice and succeeded; a split is one
    # (features on the node): on a starved machine the nodes answer slower, their demand
    # crosses the shedding share and a few keys split, as the shares say they should
    assert all(s == 200 and h.get("x-route-mode") in ("edge", "edge-degraded", "split")
               for s, h in edge), Counter((s, h.get("x-route-mode")) for s, h in edge)
    assert opened == 0  # Envoy never had to route on its own
