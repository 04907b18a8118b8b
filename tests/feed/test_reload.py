"""Hot policy reload: a broken edit is refused (located errors), a good one applied, no failures."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from router.feed.refresh import Refresher
from router.policy.loader import load_policy
from router.runtime import Runtime
from tests.feed.conftest import Setup, policy_text, sample


async def _traffic(rt: Runtime, statuses: Counter[int], versions: Counter[str],
                   stop: asyncio.Event) -> None:
    """Route and finish requests continuously, recording status and x-route-policy."""
    i = 0
    while not stop.is_set():
        routed = rt.route({"x-affinity-key": f"k{i % 200}", "x-affinity-residency": "GDPR"})
        statuses[routed.decision.status] += 1
        versions[routed.decision.policy] += 1
        rt.finish(routed)
        i += 1
        if i % 20 == 0:
            await asyncio.sleep(0)


async def _until(cond: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_broken_edit_refused_good_edit_applied_with_zero_failures(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    rt, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    first = rt.policy.digest
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(refresher.run()),
             asyncio.create_task(_traffic(rt, statuses, versions, stop))]
    try:
        await _until(lambda: rt.feed is not None)
        good = setup.policy_path.read_text()
        broken = good.replace("balance_factor: 0.25", "balance_factr: 0.25")
        setup.policy_path.write_text(broken)
        await _until(lambda: sample(metrics, "router_policy_reload_total", result="error") == 1)
        assert rt.policy.digest == first
        line = 1 + broken.splitlines().index("hashing: {balance_factr: 0.25}")
        assert any(f"{setup.policy_path}:{line}:" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.ERROR)
        setup.policy_path.write_text(good.replace("balance_factor: 0.25",
                                                  "balance_factor: 0.5"))
        await _until(lambda: sample(metrics, "router_policy_reload_total", result="ok") == 1)
        assert rt.policy.balance_factor == 0.5 and rt.policy.digest != first
        await _until(lambda: versions[rt.policy.digest] > 50)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert set(statuses) == {200} and statuses[200] > 100
    assert set(versions) == {first, rt.policy.digest}  # x-route-policy names each version


async def test_request_reload_rereads_an_edit_the_poll_cannot_see(setup: Setup) -> None:
    rt, refresher, metrics = setup.make(f"file:{setup.feed_path}")
    st = os.stat(setup.policy_path)
    text = setup.policy_path.read_text()
    edited = text.replace("balance_factor: 0.25", "balance_factor: 0.75")  # same size
    assert len(edited) == len(text)
    setup.policy_path.write_text(edited)
    os.utime(setup.policy_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not await refresher.reload_policy()
    refresher.request_reload()  # SIGHUP
    assert await refresher.reload_policy()
    assert rt.policy.balance_factor == 0.75
    assert sample(metrics, "router_policy_reload_total", result="ok") == 1


async def test_reload_can_switch_the_feed_source(setup: Setup) -> None:
    rt, refresher, _ = setup.make("http://127.0.0.1:9/nothing")
    assert await refresher.refresh_once() == "unreachable"
    setup.policy_path.write_text(policy_text(f"file:{setup.feed_path}"))
    refresher.request_reload()
    assert await refresher.reload_policy()
    assert await refresher.refresh_once() == "ok"
    assert rt.feed is not None


def test_refresher_keeps_the_server_signature(setup: Setup) -> None:
    rt, _, metrics = setup.make(f"file:{setup.feed_path}")
    refresher = Refresher(rt, str(setup.policy_path), metrics)
    assert asyncio.iscoroutinefunction(refresher.run)


async def test_a_reload_leaves_no_cyclic_garbage(tmp_path: Path) -> None:
    """Rebuilds are frozen out of the cyclic collector (a full collection over a large policy
    holds the GIL for tens of ms); that is only safe while a rebuild leaves no cycles."""
    path = tmp_path / "p.yaml"
    path.write_text(EXAMPLE.read_text().replace('store: "sqlite:state/budget.db"',
                                                'store: "memory"'))
    rt = Runtime(load_policy(path))
    refresher = Refresher(rt, str(path))
    gc.unfreeze()  # what earlier tests left frozen is not this test's to count
    gc.collect()
    for i in range(6):
        path.write_text(path.read_text() + f"\n# edit {i}\n")
        assert await refresher.reload_policy()
    # Each rebuild froze the heap; a cycle among what a later swap dropped would sit there
    # for good. Unfrozen and collected with DEBUG_SAVEALL, any such cycle shows in
    # gc.garbage. Only the project's own types are counted: the event loop, the worker pool's
    # threads and pytest make cyclic garbage of their own at any moment.
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        leaked = [o for o in gc.garbage if type(o).__module__.startswith(("router", "simulator"))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not leaked, leaked[:5]


EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"


async def test_a_kubelet_style_configmap_swap_is_reloaded(setup: Setup) -> None:
    """A ConfigMap volume is `policy.yaml -> ..data/policy.yaml`, `..data -> ..TIMESTAMP`;
    the kubelet writes a new timestamped directory and renames a new `..data` link over
    the old one. The router follows the link, so it sees the new file."""
    rt, _, metrics = setup.make(f"file:{setup.feed_path}")
    mount = setup.tmp / "configmap"
    mount.mkdir()
    text = setup.policy_path.read_text()
    for i, body in enumerate((text, text.replace("balance_factor: 0.25",
                                                 "balance_factor: 0.5"))):
        (mount / f"..2026_{i}").mkdir()
        (mount / f"..2026_{i}" / "policy.yaml").write_text(body)
        os.symlink(f"..2026_{i}", mount / "..data_tmp")
        os.replace(mount / "..data_tmp", mount / "..data")
        if i == 0:
            os.symlink("..data/policy.yaml", mount / "policy.yaml")
            refresher = Refresher(rt, str(mount / "policy.yaml"), metrics, tick=0.05)
    assert await refresher.reload_policy()
    assert rt.policy.balance_factor == 0.5
    assert sample(metrics, "router_policy_reload_total", result="ok") == 1
