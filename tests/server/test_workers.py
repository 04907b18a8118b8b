"""`--workers N`: the shares of every limit add up to the fleet's limit, across reloads too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.core.feed import FeedSnapshot, NodeState
from router.core.model import Policy
from router.policy.loader import parse_policy
from router.server.workers import WorkerRuntime, part, share, share_feed, store_problem
from tests.integration.stack import POLICY

ROOT = Path(__file__).resolve().parents[2]
PORTS = {f"p{i}": 9100 + i for i in range(6)}


def policy(store: str = "memory") -> Policy:
    text = POLICY.format(store=store, **PORTS).replace(
        'usd_per_hour: 36}\n    - {id: cloud-hipaa',
        'usd_per_hour: 36, max_inflight: 5}\n    - {id: cloud-hipaa')
    parsed, problems = parse_policy(text, "workers.yaml")
    assert parsed is not None, problems
    return parsed


@pytest.mark.parametrize("total", [1, 3, 4, 7, 16])
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_parts_add_up_to_the_whole(total: int, workers: int) -> None:
    parts = [part(total, workers, i) for i in range(workers)]
    assert sum(parts) == max(total, workers) and min(parts) >= 1
    assert max(parts) - min(parts) <= 1


def test_share_cuts_slots_pool_caps_and_per_process_budgets() -> None:
    full = policy()
    halves = [share(full, 2, i) for i in range(2)]
    for j, node in enumerate(full.nodes):
        assert sum(h.nodes[j].slots for h in halves) == node.slots
        assert sum(h.nodes[j].feature_slots for h in halves) == node.feature_slots
    eu = next(i for i, p in enumerate(full.pools) if p.id == "cloud-eu")
    assert [h.pools[eu].max_inflight for h in halves] == [3, 2]
    assert all(h.budgets.tenant("tight").limit_usd == pytest.approx(0.015) for h in halves)
    assert all(h.digest == full.digest for h in halves)  # x-route-policy stays the file's


def test_a_shared_store_keeps_whole_budgets_and_sqlite_is_refused() -> None:
    redis = share(policy("redis://127.0.0.1:6379/0"), 2, 0)
    assert redis.budgets.tenant("tight").limit_usd == pytest.approx(0.03)
    assert store_problem(policy("sqlite:state/x.db"), 2) is not None
    assert store_problem(policy("sqlite:state/x.db"), 1) is None
    assert store_problem(policy(), 4) is None


def test_two_workers_never_spend_past_the_tenant_limit_together() -> None:
    # $0.01 per HIPAA cloud request, limit $0.03: two memory-store workers admit 3, not 6.
    workers = [WorkerRuntime(policy(), workers=2, index=i)
               for i in range(2)]
    admitted = 0
    for i in range(20):
        rt = workers[i % 2]
        routed = rt.route({"x-affinity-tenant": "tight", "x-affinity-residency": "HIPAA",
                           "x-affinity-key": f"k{i}"}, now=1000.0)
        if routed.decision.routed:
            admitted += 1
            rt.finish(routed)
        else:
            assert routed.decision.status == 429
    assert admitted <= 3


def test_reloads_and_feeds_keep_the_worker_share() -> None:
    full = policy()
    rt = WorkerRuntime(full, workers=2, index=1)
    assert [n.slots for n in rt.snapshot.nodes] == [4, 2, 4, 8]
    rt.install(policy=full)  # a hot reload hands over the whole file's policy
    assert [n.slots for n in rt.snapshot.nodes] == [4, 2, 4, 8]
    feed = FeedSnapshot(generated_at=1000.0, received_at=1000.0,
                        nodes={"eu-a": NodeState(slots=10), "us-b": NodeState(slots=3)})
    rt.install(feed=feed, now=1000.0)
    assert [n.slots for n in rt.snapshot.nodes] == [5, 2, 4, 1]
    rt.install(policy=full, now=1001.0)  # the feed in force stays shared, never halved twice
    assert [n.slots for n in rt.snapshot.nodes] == [5, 2, 4, 1]
    assert share_feed(share_feed(feed, 2, 1), 2, 1).nodes["eu-a"].slots == 5


def test_serve_refuses_sqlite_with_workers(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(store=f"sqlite:{tmp_path}/b.db", **PORTS))
    proc = subprocess.run([sys.executable, "-m", "router", "serve", "--policy", str(path),
                           "--workers", "2"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, check=False)
    assert proc.returncode == 2 and "belongs to one process" in proc.stderr


def test_a_node_with_no_slots_gets_none_in_any_worker() -> None:
    assert [part(0, 3, i) for i in range(3)] == [0, 0, 0]
    full = policy()
    feed = FeedSnapshot(generated_at=1000.0, received_at=1000.0,
                        nodes={"eu-a": NodeState(slots=0), "eu-b": NodeState(slots=1)})
    runtimes = [WorkerRuntime(full, workers=3, index=i) for i in range(3)]
    for rt in runtimes:
        rt.install(feed=feed, now=1000.0)
    eu_a = [next(n.slots for n in rt.snapshot.nodes if n.id == "eu-a") for rt in runtimes]
    assert eu_a == [0, 0, 0]  # not one slot per worker: the feed drained it
    eu_b = [next(n.slots for n in rt.snapshot.nodes if n.id == "eu-b") for rt in runtimes]
    assert eu_b == [1, 1, 1]  # 0 < x < N keeps one each, as before
    nodes = {rt.route({"x-affinity-residency": "GDPR", "x-affinity-key": f"k{i}"},
                      now=1000.0).decision.node for rt in runtimes for i in range(40)}
    assert "eu-a" not in nodes
