"""Reloads see whole files: a file being written is not read until it stands still, a worker
death is retried and counted, a FIFO or a directory is refused at once."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from router.feed.reload import read_settled
from router.policy import isolated
from router.policy.loader import PolicyError, load_policy
from tests.feed import faults
from tests.feed.conftest import Setup, policy_text, sample

# A pool only HIPAA requests can use: with its tenant's budget spent, such a request is a 429.
VAULT = ('    - {id: vault, address: "127.0.0.1:9202", residency: [HIPAA], models: ["*"], '
         'instance_type: gpu-spot, latency_ms: 120, compute_ms: 100, egress_usd_per_gb: 0, '
         'usd_per_hour: 3.6}\n')
ACME_HIPAA = {"x-affinity-tenant": "acme", "x-affinity-residency": "HIPAA"}


def vault_policy(source: str, balance: float = 0.25) -> str:
    """The feed tests' policy plus the HIPAA pool, balance factor `balance`."""
    text = policy_text(source).replace("split:", VAULT.rstrip("\n") + "\nsplit:", 1)
    return text.replace("balance_factor: 0.25", f"balance_factor: {balance}")


async def _until(cond: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_slow_in_place_writer_never_gets_a_truncated_policy_installed(
        setup: Setup) -> None:
    """Every prefix cut before `budgets:` is a valid policy without acme's budget: installing
    one turned acme's 429 into a 200 for the seconds the writer took."""
    rt, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    # 50 times the writer's pause between lines: a busy machine that stalls the writer for
    # longer than the settle would show a real prefix, which is not what this test is about
    refresher.reloader.settle = 1.5
    setup.policy_path.write_text(vault_policy(f"file:{setup.feed_path}"))
    refresher.request_reload()
    assert await refresher.reload_policy()
    rt.ledger.apply_billing(rt.policy.budgets, "acme", 100.0, as_of=setup.clock())
    assert rt.route(ACME_HIPAA).decision.status == 429
    statuses: set[int] = set()

    async def traffic() -> None:
        while True:
            routed = rt.route(ACME_HIPAA)
            statuses.add(routed.decision.status)
            rt.finish(routed)
            await asyncio.sleep(0.005)

    async def write_slowly() -> None:
        with setup.policy_path.open("w") as fh:  # in place: truncated, then line by line
            for line in vault_policy(f"file:{setup.feed_path}", 0.5).splitlines(True):
                fh.write(line)
                fh.flush()
                await asyncio.sleep(0.03)

    tasks = [asyncio.create_task(refresher.run()), asyncio.create_task(traffic())]
    try:
        await write_slowly()
        await _until(lambda: rt.policy.balance_factor == 0.5)
    finally:
        await _stop(*tasks)
    assert statuses == {429}
    assert sample(metrics, "router_policy_reload_total", result="error") == 0  # no prefix read
    assert sample(metrics, "router_policy_reload_total", result="ok") == 2


async def test_a_worker_killed_twice_during_a_reload_still_installs_the_edit(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    rt, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    monkeypatch.setattr(isolated, "_load", faults.dying_load)
    (setup.tmp / "worker-deaths").write_text("2")
    setup.policy_path.write_text(setup.policy_path.read_text().replace(
        "balance_factor: 0.25", "balance_factor: 0.5"))
    refresher.request_reload()
    assert await refresher.reload_policy()
    assert rt.policy.balance_factor == 0.5
    assert (setup.tmp / "worker-deaths").read_text() == "0"
    assert sample(metrics, "router_policy_worker_deaths_total") == 2
    assert sample(metrics, "router_policy_reload_total", result="ok") == 1


async def test_a_worker_that_always_dies_leaves_the_edit_pending_not_dropped(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    rt, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    monkeypatch.setattr(isolated, "_load", faults.dying_load)
    (setup.tmp / "worker-deaths").write_text(str(isolated.TRIES))
    setup.policy_path.write_text(setup.policy_path.read_text().replace(
        "balance_factor: 0.25", "balance_factor: 0.5"))
    refresher.request_reload()
    assert not await refresher.reload_policy()
    assert sample(metrics, "router_policy_worker_deaths_total") == isolated.TRIES
    assert rt.policy.balance_factor == 0.25 and refresher.reloader.changed()
    assert await refresher.reload_policy()  # the next check reads it again
    assert rt.policy.balance_factor == 0.5


@pytest.mark.parametrize("kind", ["fifo", "directory"])
async def test_a_non_regular_policy_path_is_refused_at_once_with_one_line(
        setup: Setup, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    rt, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    first = rt.policy.digest
    task = asyncio.create_task(refresher.run())
    try:
        await _until(lambda: rt.feed is not None)
        setup.policy_path.unlink()
        os.mkfifo(setup.policy_path) if kind == "fifo" else setup.policy_path.mkdir()
        start = time.monotonic()
        await _until(lambda: sample(metrics, "router_policy_reload_total", result="error") == 1)
        assert time.monotonic() - start < 2.0
        polls = sum(sample(metrics, "router_feed_refresh_total", result=r)
                    for r in ("ok", "unchanged"))
        await _until(lambda: sum(sample(metrics, "router_feed_refresh_total", result=r)
                                 for r in ("ok", "unchanged")) >= polls + 3)  # the loop runs on
    finally:
        await _stop(task)
    name = "a FIFO" if kind == "fifo" else "a directory"
    refused = [r.getMessage() for r in caplog.records if "not a regular file" in r.getMessage()]
    assert refused == [f"policy reload refused: {setup.policy_path}:1:1: cannot read: {name}, "
                       "not a regular file"]
    assert sample(metrics, "router_policy_reload_total", result="error") == 1
    assert rt.policy.digest == first


def test_a_fifo_policy_at_start_is_a_located_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(PolicyError, match="cannot read: a FIFO, not a regular file"):
        load_policy(fifo)
    assert time.monotonic() - start < 1.0


def test_a_file_dated_in_the_future_is_read_once_it_holds_still(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n")
    ahead = time.time() + 3600  # another host's clock: the mtime test can never pass
    os.utime(path, (ahead, ahead))
    naps: list[float] = []
    seen = read_settled(str(path), 0.2, sleep=naps.append)
    assert seen is not None and seen.text == "version: 1\n" and naps == [0.2]


def test_a_reload_with_nothing_to_read_logs_nothing(setup: Setup,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    _, refresher, _ = setup.make(f"file:{setup.feed_path}")
    caplog.set_level(logging.INFO)
    assert refresher.reloader.check() is None
    assert caplog.records == []
