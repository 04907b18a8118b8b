"""`--workers N`: workers lease slots from one host-local file; per-process budgets split."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.core.feedsnapshot import FeedSnapshot, NodeState
from router.core.policy import Policy
from router.harness.procs import free_port, free_ports, wait_port
from router.policy.loader import parse_policy
from router.server.workers import WorkerRuntime, share, store_problem
from router.stores.capacity import SqliteCapacity
from router.stores.capkeeper import CapacityKeeper
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


def test_workers_keep_whole_slots_and_split_only_per_process_budgets() -> None:
    full = policy()
    halves = [share(full, 2, i) for i in range(2)]
    for h in halves:
        assert [n.slots for n in h.nodes] == [n.slots for n in full.nodes]  # leased instead
        assert [p.max_inflight for p in h.pools] == [p.max_inflight for p in full.pools]
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


def workers_on_one_file(tmp_path: Path, n: int) -> tuple[list[WorkerRuntime],
                                                         list[CapacityKeeper]]:
    runtimes = [WorkerRuntime(policy(), workers=n, index=i) for i in range(n)]
    keepers = [CapacityKeeper(SqliteCapacity(str(tmp_path / "capacity.db")), rt.tracker,
                              lambda rt=rt: rt.snapshot, period=3600) for rt in runtimes]
    for k in keepers:
        k.start()
    return runtimes, keepers


def test_workers_on_a_host_local_file_never_pass_a_nodes_slots(tmp_path: Path) -> None:
    runtimes, keepers = workers_on_one_file(tmp_path, 3)
    try:
        placed: list[str | None] = []
        for round_ in range(4):  # uneven: worker 0 takes most requests; nothing finishes
            for i in range(30):
                rt = runtimes[0 if i % 10 < 8 else 1 + i % 2]
                routed = rt.route({"x-affinity-residency": "GDPR",
                                   "x-affinity-key": f"k{round_}-{i}"}, now=1000.0)
                if routed.decision.mode in ("edge", "edge-degraded"):
                    placed.append(routed.decision.node)
            for k in keepers:
                k.cycle()
        for node in policy().nodes:
            held = sum(rt.inflight().get(node.id, 0) for rt in runtimes)
            assert held <= node.slots, node.id
        gdpr = [n for n in policy().nodes if "GDPR" in n.residency]
        assert len(placed) == sum(n.slots for n in gdpr)  # every GDPR slot in use, no more
        for node in gdpr:
            feats = sum(rt.tracker.load(node.id + "#features") for rt in runtimes)
            assert feats <= node.feature_slots
    finally:
        for k in keepers:
            k.close()


def test_a_node_the_feed_drained_gets_nothing_in_any_worker(tmp_path: Path) -> None:
    runtimes, keepers = workers_on_one_file(tmp_path, 3)
    feed = FeedSnapshot(generated_at=1000.0, received_at=1000.0,
                        nodes={"eu-a": NodeState(slots=0), "eu-b": NodeState(slots=1)})
    try:
        for rt in runtimes:
            rt.install(feed=feed, now=1000.0)
        for k in keepers:
            k.cycle()
        decisions = [rt.route({"x-affinity-residency": "GDPR", "x-affinity-key": f"k{i}"},
                              now=1000.0).decision for rt in runtimes for i in range(40)]
        assert "eu-a" not in [d.node for d in decisions]
        # eu-b's one inference slot is held once fleet-wide; a split there takes one of its
        # feature slots instead, which the feed left as they were
        inference = [d.node for d in decisions if d.mode in ("edge", "edge-degraded")]
        assert inference.count("eu-b") <= 1
    finally:
        for k in keepers:
            k.close()


def test_serve_refuses_sqlite_with_workers(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(store=f"sqlite:{tmp_path}/b.db", **PORTS))
    proc = subprocess.run([sys.executable, "-m", "router", "serve", "--policy", str(path),
                           "--workers", "2"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, check=False)
    assert proc.returncode == 2 and "belongs to one process" in proc.stderr


@contextlib.contextmanager
def two_workers(tmp_path: Path, metrics: int) -> Iterator[subprocess.Popen[str]]:
    """`serve --workers 2` on a per-process store, worker i's metrics on `metrics` + i; its
    whole process group killed after, whatever happened."""
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.format(store="memory", **PORTS))
    proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--policy", str(path),
                             "--workers", "2", "--grpc", f"127.0.0.1:{free_port()}",
                             "--metrics", f"127.0.0.1:{metrics}"], cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_worker_that_cannot_start_takes_the_others_down(tmp_path: Path) -> None:
    """Worker 1 of 2 cannot bind its metrics port (PORT + 1, taken): serve exits with its
    failure and stops worker 0, where it used to run on with one worker of two, silently."""
    metrics = free_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", metrics + 1))
        taken.listen()
        with two_workers(tmp_path, metrics) as proc:
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "worker 1 exited with 1; stopping the 1 others" in err
    with pytest.raises(OSError):  # worker 0 is gone too
        socket.create_connection(("127.0.0.1", metrics), 0.5).close()


def test_a_sigterm_stops_every_worker_and_serve_exits_0(tmp_path: Path) -> None:
    metrics = free_ports(2)
    with two_workers(tmp_path, metrics) as proc:
        for port in (metrics, metrics + 1):
            wait_port(port, 30.0, proc)  # type: ignore[arg-type]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "exited with" not in err
    for port in (metrics, metrics + 1):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), 0.5).close()
