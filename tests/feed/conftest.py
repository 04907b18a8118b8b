"""Policies, feed documents, in-process feed servers and a steerable clock for feed tests."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from router.core.feedsnapshot import format_time
from router.feed.refresh import Refresher
from router.feed.server import FeedServer
from router.metrics import RouterMetrics
from router.policy import isolated
from router.policy.loader import load_policy
from router.runtime import Runtime

NODES = ("e1", "e2", "e3", "e4")

POLICY = """\
version: 1
refresh_seconds: {refresh}
feed: {{source: "{source}", stale_after_seconds: 30, stale_weight: 0.5, max_bytes: 4096}}
hashing: {{balance_factor: 0.25}}
slo: {{default_latency_ms: 100, degraded_slack: 1.5}}
edge:
  usd_per_inference: 0.0001
  nodes:
{nodes}
cloud:
  pools:
    - {{id: cloud, address: "127.0.0.1:9201", residency: [GDPR], models: ["*"],
       instance_type: gpu-spot, latency_ms: 120, compute_ms: 100, egress_usd_per_gb: 0,
       usd_per_hour: 3.6}}
split: {{payload_fraction: 0.05, cloud_compute_fraction: 0.7}}
budgets:
  period: month
  store: memory
  tenants: {{default: {{limit_usd: 1000}}, acme: {{limit_usd: 100}}}}
"""


def policy_text(source: str, *, refresh: float = 0.2, latency: float = 20.0,
                weight: float = 1.0) -> str:
    """Four GDPR edge nodes (e1..e4) and one GDPR cloud pool; feed from `source`."""
    nodes = "\n".join(
        f'    - {{id: {n}, address: "127.0.0.1:{9101 + i}", hardware: generic, weight: {weight}, '
        f"slots: 64, residency: [GDPR], models: [\"*\"], base_latency_ms: {latency}}}"
        for i, n in enumerate(NODES))
    return POLICY.format(refresh=refresh, source=source, nodes=nodes)


class Clock:
    """Real time plus an offset the test can move forward."""

    def __init__(self) -> None:
        """Start at real time."""
        self.offset = 0.0

    def __call__(self) -> float:
        """Now."""
        return time.time() + self.offset


def feed_doc(at: float, *, unhealthy: Iterable[str] = (), price: float = 3.6,
             spend: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    """A valid feed document for the test policy generated at `at`."""
    down = set(unhealthy)
    return {"version": 1, "generated_at": format_time(at),
            "nodes": [{"id": n, "healthy": n not in down, "compute_score": 1.0, "slots": 64,
                       "inflight": 0, "vram_used_fraction": 0.1, "p95_ms": 20}
                      for n in NODES],
            "prices": [{"instance_type": "gpu-spot", "usd_per_hour": price}],
            "spend": [{"tenant": t, "usd": u} for t, u in (spend or {}).items()], **extra}


def write_feed(path: Path, doc: dict[str, Any] | str) -> None:
    """Write a feed document (a dict as JSON, a str as is) atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    tmp.replace(path)


class Setup:
    """A feed file, a policy file pointing at a source, a Runtime and its Refresher."""

    def __init__(self, tmp: Path, clock: Clock) -> None:
        """Paths under `tmp`; nothing started yet."""
        self.tmp = tmp
        self.clock = clock
        self.feed_path = tmp / "feed.json"
        self.policy_path = tmp / "policy.yaml"
        write_feed(self.feed_path, feed_doc(clock()))

    def make(self, source: str, **kw: Any) -> tuple[Runtime, Refresher, RouterMetrics]:
        """Write the policy for `source` and build runtime, refresher and metrics."""
        self.policy_path.write_text(policy_text(source, **kw))
        runtime = Runtime(load_policy(self.policy_path), clock=self.clock)
        metrics = RouterMetrics()
        refresher = Refresher(runtime, str(self.policy_path), metrics, clock=self.clock,
                              tick=0.05)
        return runtime, refresher, metrics


@pytest.fixture(scope="session", autouse=True)
def policy_worker() -> Iterator[None]:
    """The policy worker process started and answering before the first reload, as `serve`
    starts it before its port opens, and stopped after the last test."""
    isolated.warm().result(timeout=60)
    yield
    isolated.shutdown()


@pytest.fixture
def clock() -> Clock:
    """A steerable clock."""
    return Clock()


@pytest.fixture
def setup(tmp_path: Path, clock: Clock) -> Setup:
    """Files for one test."""
    return Setup(tmp_path, clock)


@pytest.fixture
async def server(setup: Setup) -> AsyncIterator[FeedServer]:
    """An in-process HTTP + gRPC feed server over the setup's feed file."""
    srv = FeedServer(setup.feed_path, poll_s=0.05)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


def sample(metrics: RouterMetrics, name: str, **labels: str) -> float:
    """Current value of one series (0 when absent)."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


