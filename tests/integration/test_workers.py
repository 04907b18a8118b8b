"""`serve --workers N`: processes share a port and lease every node's slots between them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .stack import NODES, Stack

pytestmark = pytest.mark.integration


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
    # The workers lease the 24 CCPA slots from one host-local file: however Envoy's HTTP/2
    # connections spread over them, the first leases cover at least half of the slots (each
    # worker's fair share of an idle fleet) and together they never exceed the nodes.
    assert set(statuses) <= {200, 503} and 12 <= statuses.count(200) <= 24
    for name, (tag, _, slots) in NODES.items():
        if tag == "CCPA":
            assert two.stats(name)["max_inflight"] <= slots
