"""Passive health through real Envoy: a node that fails every request leaves the ring on the
failures Envoy's access log service reports, long before the next feed, and comes back."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import POLICY, Stack

pytestmark = pytest.mark.integration
EJECT_S = 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = Path(tmp_path_factory.mktemp("outliers"))
    policy = POLICY.replace("refresh_seconds: 30",
                            f"refresh_seconds: 30\noutliers: {{{{eject_s: {EJECT_S}}}}}")
    s = Stack(tmp, policy=policy)
    try:
        yield s.start()
    finally:
        s.close()


def _send(stack: Stack, key: str, **hooks: str) -> tuple[int, str]:
    """(status, the node that served it or '') of one CCPA request for `key`."""
    req = urllib.request.Request(stack.url + "/infer", headers={
        "x-affinity-key": key, "x-affinity-residency": "CCPA", **hooks})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers.get("x-served-by", "")
    except urllib.error.HTTPError as err:
        return err.code, ""


def _home(stack: Stack, key: str) -> str:
    """The node that serves `key` at its home: a request the walk sent on (`balance`: the
    previous request's stream had not ended yet, so the home was at its cap of 1) is sent
    again."""
    req = urllib.request.Request(stack.url + "/infer", headers={
        "x-affinity-key": key, "x-affinity-residency": "CCPA"})
    for _ in range(20):
        with urllib.request.urlopen(req, timeout=5) as resp:
            if resp.headers.get("x-route-reason") != "balance":
                return resp.headers.get("x-served-by", "")
        time.sleep(0.05)
    raise AssertionError(f"{key} never reached its home")


def _served(stack: Stack, keys: list[str]) -> dict[str, str]:
    return {k: _home(stack, k) for k in keys}


def _until(what: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_node_resetting_every_request_is_taken_out_and_comes_back(stack: Stack) -> None:
    keys = [f"cam-{i}" for i in range(40)]
    before = _served(stack, keys)
    on_a = [k for k, n in before.items() if n == "us-a"]
    assert on_a and set(before.values()) == {"us-a", "us-b"}
    # us-a drops every connection: Envoy answers each of its requests 503 itself
    statuses = [_send(stack, on_a[i % len(on_a)], **{"x-emulate-reset": "1"})[0]
                for i in range(5)]
    assert statuses == [503] * 5
    # the fifth failure, 0.1 s of access-log batching later, takes it out: its keys go to
    # us-b, and no other key moves
    assert _until(lambda: _send(stack, on_a[0])[1] == "us-b", 5.0)
    moved = _served(stack, keys)
    assert all(moved[k] == "us-b" for k in keys)
    metrics = stack.metrics()
    assert metrics['router_edge_ejections_total{node="us-a"}'] == 1.0
    assert metrics['router_edge_failures_total{node="us-a"}'] == 5.0
    assert metrics['router_node_weight{node="us-a"}'] == 0.0
    # back after eject_s (the refresher's next tick), keys home again
    assert _until(lambda: _send(stack, on_a[0])[1] == "us-a", EJECT_S + 5.0)
    assert _served(stack, keys) == before


def test_failures_spread_over_the_fleet_eject_nothing(stack: Stack) -> None:
    keys = [f"spread-{i}" for i in range(40)]
    before = _served(stack, keys)
    # one failure on each of four keys per node: under `failures` (5) on every node
    by_node: dict[str, list[str]] = {}
    for k, n in before.items():
        by_node.setdefault(n, []).append(k)
    for node_keys in by_node.values():
        for k in node_keys[:4]:
            assert _send(stack, k, **{"x-emulate-status": "502"})[0] == 502
    time.sleep(0.5)  # more than the access log's batching
    assert _served(stack, keys) == before
