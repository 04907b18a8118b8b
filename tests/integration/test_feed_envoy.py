"""Feed refresh through real Envoy: an unhealthy node stops getting traffic within a refresh."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.core.feedsnapshot import format_time

from .stack import POLICY, Stack

pytestmark = pytest.mark.integration


def write_feed(path: Path, unhealthy: set[str]) -> None:
    nodes = [{"id": n, "healthy": n not in unhealthy, "compute_score": 1.0}
             for n in ("eu-a", "eu-b", "us-a", "us-b")]
    doc = {"version": 1, "generated_at": format_time(time.time()), "nodes": nodes,
           "prices": [], "spend": []}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    tmp = Path(tmp_path_factory.mktemp("fed"))
    feed = tmp / "feed.json"
    write_feed(feed, set())
    policy = POLICY.replace("refresh_seconds: 30",
                            f'refresh_seconds: 1\nfeed: {{{{source: "file:{feed}"}}}}')
    s = Stack(tmp, policy=policy)
    try:
        yield s.start(), feed
    finally:
        s.close()


def served_by(stack: Stack, keys: list[str]) -> dict[str, str]:
    out = {}
    for key in keys:
        req = urllib.request.Request(stack.url + "/infer", headers={
            "x-affinity-key": key, "x-affinity-residency": "CCPA"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            out[key] = resp.headers["x-served-by"]
    return out


def test_unhealthy_node_loses_its_keys_and_no_other_key_moves(fed: tuple[Stack, Path]) -> None:
    stack, feed = fed
    keys = [f"cam-{i}" for i in range(60)]
    before = served_by(stack, keys)
    assert set(before.values()) == {"us-a", "us-b"}
    write_feed(feed, {"us-a"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = served_by(stack, keys)
        if "us-a" not in after.values():
            break
        time.sleep(0.5)
    assert "us-a" not in after.values()
    assert all(after[k] == before[k] for k in keys if before[k] != "us-a")
    metrics = stack.metrics()
    assert metrics['router_node_weight{node="us-a"}'] == 0.0
    assert metrics['router_feed_refresh_total{result="ok"}'] >= 1
