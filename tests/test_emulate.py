"""The node emulator (`simulator.emulate`) on ports of its own choosing (`--ports-file`), the
way the integration stack starts it, serving its world's latency as the simulator models it."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from router import wire
from router.harness.procs import free_port
from router.policy.loader import load_policy
from simulator.emulate import Emulator
from simulator.live.realtime import LiveWorld
from simulator.scenario import WorldConfig
from tests.integration.stack import ROOT, stop, wait_file

POLICY = """\
version: 1
edge:
  nodes:
    - {id: a, address: "127.0.0.1:1", residency: [GDPR], base_latency_ms: 40, slots: 4}
    - {id: b, address: "127.0.0.1:2", residency: [GDPR]}
cloud:
  pools:
    - {id: c, address: "127.0.0.1:3", residency: [GDPR], models: ["*"],
       instance_type: t, latency_ms: 20, compute_ms: 10, usd_per_hour: 1}
"""


def test_ports_file_binds_each_target_and_reports_where(tmp_path: Path) -> None:
    policy, ports = tmp_path / "p.yaml", tmp_path / "ports.json"
    policy.write_text(POLICY)
    emu = subprocess.Popen([sys.executable, "-m", "simulator.emulate", "--policy", str(policy),
                            "--ports-file", str(ports)], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        picked = json.loads(wait_file(ports, emu))["targets"]
        assert set(picked) == {"a", "b", "c"} and len(set(picked.values())) == 3
        for target, port in picked.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
                assert json.load(r)["id"] == target
    finally:
        stop(emu)


def test_a_scenario_without_its_feed_and_control_is_a_usage_error(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    proc = subprocess.run([sys.executable, "-m", "simulator.emulate", "--policy", str(policy),
                           "--scenario", "s.yaml"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2 and "go together" in proc.stderr


def test_free_port_never_hands_out_a_number_twice() -> None:
    """What must be told its port gets one no earlier call in this process returned."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


async def _emulator(tmp_path: Path) -> tuple[Emulator, list[web.AppRunner]]:
    (tmp_path / "p.yaml").write_text(POLICY)
    world = LiveWorld(load_policy(tmp_path / "p.yaml"), WorldConfig(), 1,
                      asyncio.get_running_loop())
    emu = Emulator(load_policy(tmp_path / "p.yaml"), world)
    return emu, await emu.listen(any_port=True)


@pytest.mark.alone  # a 40-ms service time with the loop's lag on top
async def test_a_node_answers_after_the_service_time_the_world_model_draws(
        tmp_path: Path) -> None:
    """Node a: 40 ms at full quality, × 0.35 at minimal (the policy's latency factor), the
    key warm after its first request (× 0.6), each draw around its mean (service_cv 0.25)."""
    emu, runners = await _emulator(tmp_path)
    url = f"http://{emu.targets[0].address}/infer"
    try:
        async with aiohttp.ClientSession() as session:
            async def once(key: str, quality: str) -> dict[str, object]:
                headers = {wire.H_KEY: key, wire.H_QUALITY: quality, wire.H_MODE: "edge"}
                async with session.post(url, data=b"x", headers=headers) as r:
                    assert r.status == 200 and r.headers["x-served-by"] == "a"
                    assert r.headers[wire.H_QUALITY] == quality  # the route echoed
                    body: dict[str, object] = await r.json()
                    return body
            cold = [await once(f"k{i}", "full") for i in range(12)]
            low = [await once(f"m{i}", "minimal") for i in range(12)]
            warm = [await once("k0", "full") for _ in range(12)]
    finally:
        for runner in runners:
            await runner.cleanup()

    def median(rows: list[dict[str, object]]) -> float:
        return statistics.median(float(str(r["upstream_ms"])) for r in rows)
    assert [r["warm"] for r in cold] == [False] * 12 and all(r["warm"] for r in warm)
    assert 30 < median(cold) < 60, median(cold)  # 40 ms, the loop's lag on top
    assert median(low) < median(cold) * 0.6 and median(warm) < median(cold) * 0.85


async def test_test_hooks_bad_headers_and_stats(tmp_path: Path) -> None:
    """A fixed delay and status, a bad quality refused (400, not counted), a split counted
    as a feature extraction apart from inferences, and nothing left in flight."""
    emu, runners = await _emulator(tmp_path)
    node, pool = (f"http://{t.address}" for t in (emu.targets[0], emu.targets[2]))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{node}/x", headers={"x-emulate-delay-ms": "1",
                                                         "x-emulate-status": "503"}) as r:
                assert r.status == 503
            async with session.get(f"{node}/x", headers={wire.H_QUALITY: "best"}) as r:
                assert r.status == 400 and "x-route-quality" in (await r.json())["error"]
            split = {wire.H_MODE: wire.MODE_SPLIT, wire.H_SPLIT_CLOUD: pool.removeprefix(
                "http://")}
            async with session.post(f"{node}/x", data=b"0" * 1000, headers=split) as r:
                assert (await r.json())["split_pool"] == "c"
            async with session.get(f"{node}/_stats") as r:
                stats = await r.json()
    finally:
        for runner in runners:
            await runner.cleanup()
    assert stats["hits"] == 2 and stats["max_inflight"] == 1 and stats["max_features"] == 1
    assert stats["modes"] == {"fail-open": 1, "split": 1}
    assert stats["inflight"] == stats["features"] == 0
