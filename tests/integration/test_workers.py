"""`serve --workers N`: processes share a port; each bounds its own share of every node."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from router.policy.loader import load_policy
from router.server.workers import share

from .stack import NODES, Stack

pytestmark = pytest.mark.integration


def test_worker_shares_never_add_up_past_a_node() -> None:
    policy = load_policy(Path(__file__).resolve().parents[2] / "policies" / "example.yaml")
    for workers in (2, 3, 4):
        parts = [share(policy, workers, i) for i in range(workers)]
        for j, node in enumerate(policy.nodes):
            slots = [p.nodes[j].slots for p in parts]
            assert sum(slots) == max(node.slots, workers) or sum(slots) == node.slots
            assert all(s >= 1 for s in slots)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("workers")), workers=2)
    try:
        yield s.start()
    finally:
        s.close()


def test_two_workers_serve_and_keep_nodes_within_slots(two: Stack) -> None:
    async def go() -> list[int]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            async def one(i: int) -> int:
                async with session.get(two.url + "/infer", headers={
                        "x-affinity-key": f"w{i % 7}", "x-affinity-residency": "CCPA",
                        "x-emulate-delay-ms": "200"}) as r:
                    await r.read()
                    return r.status
            return list(await asyncio.gather(*(one(i) for i in range(64))))

    statuses = asyncio.run(go())
    # Each worker holds half of every node's slots (12 of the 24 CCPA slots): however Envoy's
    # HTTP/2 connections spread over the workers, at least one share is used and the two
    # shares together never exceed the nodes.
    assert set(statuses) <= {200, 503} and 12 <= statuses.count(200) <= 24
    for name, (tag, _, slots) in NODES.items():
        if tag == "CCPA":
            assert two.stats(name)["max_inflight"] <= slots
