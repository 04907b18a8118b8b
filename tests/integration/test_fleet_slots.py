"""One edge fleet, many routers: node slots held fleet-wide through real processes.

Three gateways (router + Envoy from the project's config) share one redis-server;
four emulated nodes with 2/4/4/8 slots hold every request 250 ms and count their
own concurrency. 36 closed-loop clients, 30/4/2 over the gateways: twice the
edge's 18 slots. Then gateway A is SIGKILLed (router and Envoy) and its clients
move to B and C, then Redis is SIGSTOPped past the lease TTL and resumed. No node
may ever hold more requests than its slots; the busy gateway must get more than
a third of the edge. `serve --workers 2` behind one Envoy connection is the same
mechanism on a host-local file: the worker with all the traffic uses more than
half of the slots (the old static split's ceiling), never more than all of them.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.stores.conftest import RedisServer

from .stack import Stack, fail_opens, stop
from .test_fleet_budget import Fleet, redis_server

__all__ = ["redis_server"]  # the fixture, shared with the fleet budget tests
pytestmark = [pytest.mark.integration, pytest.mark.slow]
SLOTS = {"eu-a": 2, "eu-b": 4, "us-a": 4, "us-b": 8}
HOLD_MS = 250
MESSAGE_TIMEOUT_S = 10.0  # the subject is the lease, not Envoy's deadline on busy cores
NODE = ('    - {{{{id: {id}, address: "127.0.0.1:{{p{i}}}", hardware: rtx-4090, weight: {w},'
        ' slots: {slots}, residency: [GDPR], base_latency_ms: 5}}}}')
POLICY = ("version: 1\nrefresh_seconds: 30\n"
          "slo: {{default_latency_ms: 2000, degraded_slack: 1.5}}\nedge:\n  nodes:\n"
          + "\n".join(NODE.format(id=n, i=i, w=s // 2, slots=s)
                      for i, (n, s) in enumerate(SLOTS.items()))
          + """
cloud:
  pools:
    - {{id: cloud-eu, address: "127.0.0.1:{p4}", residency: [GDPR], models: ["*"],
       instance_type: h100-spot, latency_ms: 20, compute_ms: 100, usd_per_hour: 3.6}}
    - {{id: cloud-hipaa, address: "127.0.0.1:{p5}", residency: [HIPAA], models: ["*"],
       instance_type: h100-spot, latency_ms: 20, compute_ms: 100, usd_per_hour: 3.6}}
budgets: {{period: month, store: "{store}", tenants: {{default: {{limit_usd: 100000}}}}}}
""")


class Gateways(Fleet):
    """Three gateways (router + Envoy) on one Redis, before the emulated 2/4/4/8-slot nodes."""

    def __init__(self, tmp: Path, redis_url: str, options: str = "") -> None:
        super().__init__(tmp, redis_url, 3, options, policy=POLICY)

    def kill(self, index: int) -> None:
        """SIGKILL a gateway's Envoy and its router: the gateway is gone. Envoy first: an
        Envoy that outlived its router a moment would fail open (by design: edge only, no
        lease) the requests it was waiting on the router for."""
        for name in ("envoy", "router"):
            stop(self.stack.procs[f"{name}{index or ''}"], signal.SIGKILL)


async def closed_loop(routes: list[str], seconds: float, counts: Counter[str],
                      stop_at: list[float]) -> None:
    """One client per entry of `routes` (its gateway's URL, read before every request, so a
    client moves when its entry changes), each sending its next request as the last ends."""
    deadline = time.monotonic() + seconds
    stop_at.append(deadline)
    rng = random.Random(17)

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            headers = {"x-affinity-key": f"k{rng.randrange(60)}",
                       "x-affinity-residency": "GDPR", "x-affinity-degrade": "false",
                       "x-emulate-delay-ms": str(HOLD_MS)}
            try:
                async with session.get(routes[i] + "/infer", headers=headers) as r:
                    await r.read()
                    counts[r.headers.get("x-route-mode", str(r.status))] += 1
            except aiohttp.ClientError:
                counts["error"] += 1  # a gateway that was just killed
                await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=MESSAGE_TIMEOUT_S + 5)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(i, session) for i in range(len(routes))))


def test_three_gateways_never_put_a_node_over_its_slots(tmp_path: Path,
                                                        redis_server: RedisServer) -> None:
    fleet = Gateways(tmp_path, redis_server.url, "&capacity_ttl=2")
    counts: Counter[str] = Counter()
    try:
        fleet.start()
        a, b, c = fleet.urls
        routes = [a] * 30 + [b] * 4 + [c] * 2

        async def run() -> None:
            stop_at: list[float] = []
            load = asyncio.create_task(closed_loop(routes, 14.0, counts, stop_at))
            await asyncio.sleep(5.0)  # uneven load, all three up
            phase1 = {n: fleet.stack.stats(n)["max_inflight"] for n in SLOTS}
            counts["phase1-edge-peak"] = sum(phase1.values())
            await asyncio.to_thread(fleet.kill, 0)
            for i in range(30):  # A's clients move to B and C
                routes[i] = b if i % 2 else c
            await asyncio.sleep(4.0)
            assert redis_server.proc is not None
            os.killpg(redis_server.proc.pid, signal.SIGSTOP)  # past the 2-s TTL
            try:
                await asyncio.sleep(3.0)
            finally:
                os.killpg(redis_server.proc.pid, signal.SIGCONT)
            await load

        asyncio.run(run())
        peaks = {n: fleet.stack.stats(n)["max_inflight"] for n in SLOTS}
        failed_open = sum(fail_opens(port) for port in fleet.admins[1:])
    finally:
        fleet.close()
    assert peaks == {n: min(p, SLOTS[n]) for n, p in peaks.items()}, peaks  # 0 over slots
    assert failed_open == 0  # B and C decided every request themselves
    assert counts["edge"] > 0 and counts["cloud"] > 0, counts  # the overflow went to cloud
    # The busy gateway is not held to a third of the edge: A's 30 clients had all 18 slots'
    # worth of demand, and the nodes' peaks together show it used well over 6.
    assert counts["phase1-edge-peak"] >= 12, counts


def test_two_workers_behind_one_envoy_connection_share_slots_by_demand(tmp_path: Path) -> None:
    stack = Stack(tmp_path, policy=POLICY, workers=2, envoy_concurrency=1,
                  message_timeout_s=MESSAGE_TIMEOUT_S)
    counts: Counter[str] = Counter()
    try:
        stack.start()
        asyncio.run(closed_loop([stack.url] * 36, 5.0, counts, []))
        peaks = {n: stack.stats(n)["max_inflight"] for n in SLOTS}
    finally:
        stack.close()
    assert peaks == {n: min(p, SLOTS[n]) for n, p in peaks.items()}, peaks
    # One Envoy connection reaches one worker: the static 1/2 split capped it at 9 slots.
    assert sum(peaks.values()) > 9, (peaks, counts)
