"""SQLite behind the keeper: writes that fail never block routing, kills lose nothing admitted
long enough ago, and one file has one router."""

from __future__ import annotations

import gc
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from router.core.decision import Routed
from router.core.policy import Policy
from router.policy.loader import parse_policy
from router.runtime import Runtime
from router.stores import BudgetKeeper, BudgetStoreError, open_keeper
from router.stores.sqlite import SqliteBudgetStore
from tests.integration.stack import POLICY, free_port, wait_port

from .conftest import month, timed

ROOT = Path(__file__).resolve().parents[2]
PORTS = {f"p{i}": 9400 + i for i in range(6)}
CLOUD = {"x-affinity-residency": "HIPAA"}  # $0.01 in cloud-hipaa: no edge node qualifies
EDGE = {"x-affinity-residency": "GDPR"}
COST = 0.01
# A routing call that waited on the database would take its 0.5 s busy timeout (or the whole
# lock); one that did not is microseconds plus scheduling on a busy machine (up to 0.056 s
# measured on 2 cores at load 9): half of Envoy's 0.2 s message timeout tells them apart.
BOUND_S = 0.1


def policy(store: str) -> Policy:
    parsed, problems = parse_policy(POLICY.format(store=store, **PORTS), "sqlite.yaml")
    assert parsed is not None, problems
    return parsed


@pytest.fixture
def router(tmp_path: Path) -> Iterator[tuple[Runtime, BudgetKeeper, Path]]:
    path = tmp_path / "budget.db"
    keeper = open_keeper(f"sqlite:{path}")
    rt = Runtime(policy(f"sqlite:{path}"), keeper.ledger)
    gc.collect()
    gc.freeze()  # as `serve` does once started; collector pauses are not store waits
    try:
        yield rt, keeper, path
    finally:
        gc.unfreeze()
        keeper.close()


def wait_flushed(keeper: BudgetKeeper, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while keeper.degraded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not keeper.degraded


def test_a_locked_database_never_blocks_routing_and_leaks_no_hold(
        router: tuple[Runtime, BudgetKeeper, Path]) -> None:
    rt, keeper, path = router
    other = sqlite3.connect(path, timeout=0, isolation_level=None)  # e.g. a backup tool
    other.execute("BEGIN EXCLUSIVE")
    durations: list[float] = []
    spent = 0.0
    stop = time.monotonic() + 1.5  # writes wait 0.5 s for the lock, then fail, and retry
    i = 0
    while time.monotonic() < stop:
        i += 1
        for tags in (CLOUD, EDGE):
            routed: Routed = timed(durations, lambda t=tags, k=i: rt.route(
                {**t, "x-affinity-key": f"k{k}"}, payload_bytes=0))
            assert routed.decision.routed
            if tags is CLOUD:
                assert routed.decision.mode == "cloud"
                spent += routed.decision.cost_usd
            timed(durations, lambda r=routed: rt.finish(r))
        time.sleep(0.002)
    assert keeper.degraded and keeper.errors > 0
    assert max(durations) < BOUND_S, f"slowest routing-thread call {max(durations):.4f} s"
    state = rt.ledger.state(rt.policy.budgets, "default", rt.clock())
    assert state.reserved_usd == 0.0  # every hold released, the store down or not
    assert state.committed_usd == pytest.approx(spent)
    other.execute("ROLLBACK")
    other.close()
    wait_flushed(keeper)
    assert not keeper.close()
    again = SqliteBudgetStore(path)
    assert again.committed("default", month()) == pytest.approx(spent)
    assert again.recovered == []  # every hold row was matched by its settlement
    again.close()


def test_a_full_disk_never_blocks_routing_and_its_backlog_is_written_later(
        router: tuple[Runtime, BudgetKeeper, Path]) -> None:
    rt, keeper, path = router
    backend = keeper.backend
    assert isinstance(backend, SqliteBudgetStore)
    with backend._lock:  # the file may not grow: SQLite's "database or disk is full"
        assert backend._db is not None
        pages = backend._db.execute("PRAGMA page_count").fetchone()[0]
        backend._db.execute(f"PRAGMA max_page_count={pages}")
    durations: list[float] = []
    held = [timed(durations, lambda i=i: rt.route({**CLOUD, "x-affinity-key": f"k{i}"},
                                                        payload_bytes=0))
            for i in range(1500)]  # in flight: one hold row each, more than a page holds
    deadline = time.monotonic() + 10
    while keeper.errors == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert keeper.errors > 0 and keeper.degraded
    for routed in held:
        timed(durations, lambda r=routed: rt.finish(r))
    assert max(durations) < BOUND_S, f"slowest routing-thread call {max(durations):.4f} s"
    assert rt.ledger.state(rt.policy.budgets, "default", rt.clock()).reserved_usd == 0.0
    with backend._lock:  # space again
        backend._db.execute("PRAGMA max_page_count=1073741823")
    wait_flushed(keeper)
    assert not keeper.close()
    again = SqliteBudgetStore(path)
    assert again.committed("default", month()) == pytest.approx(1500 * COST)
    assert again.recovered == []
    again.close()


KILLED = """
import os, signal, sys, time
from router.policy.loader import parse_policy
from router.runtime import Runtime
from router.stores import open_keeper
from tests.integration.stack import POLICY
text = POLICY.format(store="sqlite:" + sys.argv[1], **{f"p{i}": 9400 + i for i in range(6)})
policy, _ = parse_policy(text, "killed.yaml")
rt = Runtime(policy, open_keeper(policy.budgets.store).ledger)
routed = [rt.route({"x-affinity-residency": "HIPAA", "x-affinity-key": f"k{i}"}, payload_bytes=0)
          for i in range(40)]
assert all(r.decision.mode == "cloud" for r in routed)
for r in routed[:20]:
    rt.finish(r, actual_usd=0.004)  # ended, cheaper than estimated
time.sleep(0.5)  # ten flush intervals
print("admitted", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_loses_nothing_admitted_a_flush_interval_before(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == -9 and proc.stdout.strip() == "admitted", proc.stderr
    store = SqliteBudgetStore(path)
    # 20 ended at their actual cost, 20 still in flight counted at their estimate
    assert store.committed("default", month()) == pytest.approx(20 * 0.004 + 20 * COST)
    assert len(store.recovered) == 20
    store.close()
    again = SqliteBudgetStore(path)  # counted once: the hold rows are gone
    assert again.committed("default", month()) == pytest.approx(20 * 0.004 + 20 * COST)
    assert again.recovered == []
    again.close()


def test_one_file_one_store(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    first = SqliteBudgetStore(path)
    with pytest.raises(BudgetStoreError, match=rf"sqlite:{path} is in use .*pid \d+"):
        SqliteBudgetStore(path)
    first.close()
    SqliteBudgetStore(path).close()  # free again once the holder closed it


def serve(policy_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "router", "serve", "--policy",
                             str(policy_path), "--grpc", f"127.0.0.1:{port}", "--metrics",
                             "off"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_sigterm_loses_nothing_and_a_second_serve_on_the_file_exits_2(tmp_path: Path) -> None:
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

    from tests.server.test_servicer import headers_msg

    path = tmp_path / "state" / "budget.db"
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(POLICY.format(store=f"sqlite:{path}", **PORTS))
    port = free_port()
    proc = serve(policy_path, port)
    try:
        wait_port(port, proc)  # type: ignore[arg-type]
        second = subprocess.run([sys.executable, "-m", "router", "serve", "--policy",
                                 str(policy_path), "--grpc", f"127.0.0.1:{free_port()}",
                                 "--metrics", "off"], capture_output=True, text=True,
                                timeout=60, cwd=ROOT, check=False)
        assert second.returncode == 2
        assert f"sqlite:{path} is in use by another process (pid {proc.pid}" in second.stderr
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExternalProcessorStub(channel)
            for i in range(30):
                msg = headers_msg(x_affinity_residency="HIPAA", x_affinity_key=f"t{i}",
                                  content_length="0")
                replies = list(stub.Process(iter([msg]), timeout=10))
                assert replies[0].WhichOneof("response") == "request_headers"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = SqliteBudgetStore(path)
    assert store.committed("default", month()) == pytest.approx(30 * COST)
    assert store.recovered == []
    store.close()
