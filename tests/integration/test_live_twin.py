"""`simulate --live`: a short scenario through real Envoy, the router and the live world.

The run is short (12 s at 40 req/s, ~480 requests), so the bounds are looser than
the issue's 60-s goal (5 points, 10 %): two runs of the same arrivals differ in
which requests catch a full node, and with ~480 requests one share of ~30 % moves
by about 2 points per standard deviation of that noise; 10 points is several of
them, and still fails when the twin's routing or its world model goes wrong (a
node the router does not see lost keeps a quarter of the traffic, a world that
ignores the mode or payload moves the latency by far more than 25 %).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.harness.procs import as_if_typed

from .stack import ROOT

# the twin's drift from its simulation and its timers' lateness are judged
pytestmark = [pytest.mark.integration, pytest.mark.alone]

POLICY = ROOT / "simulator" / "scenarios" / "policies" / "twin.yaml"
SCENARIO = """\
version: 1
policy: {policy}
duration_s: {duration}
seed: 5
traffic:
  rate_rps: 40
  keys: {{count: 200, zipf_s: 1.1}}
  classes:
    - {{name: vision, weight: 0.7, tenant: acme, residency: [GDPR], slo_ms: 150,
       degrade: true, payload_kb: 48}}
    - {{name: batch, weight: 0.3, residency: [GDPR], slo_ms: 300, degrade: false,
       payload_kb: 16}}
events:
  - {{at_s: 4, node_down: rtx-a}}
"""
SHARE_POINTS = 10.0
P50_RATIO = (0.8, 1.25)


def _scenario(tmp: Path, duration: float) -> Path:
    path = tmp / "scenario.yaml"
    path.write_text(SCENARIO.format(policy=POLICY, duration=duration))
    return path


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.3):
        return True
    return False


def _addresses(out: Path) -> list[str]:
    """Every address the twin's processes listened on, from its policy copy."""
    doc = yaml.safe_load((out / "live" / "policy.yaml").read_text())
    found = [e["address"] for e in doc["edge"]["nodes"]] + \
        [e["address"] for e in doc["cloud"]["pools"]]
    return [*found, doc["feed"]["source"].removeprefix("grpc://")]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", "simulate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)


def test_live_twin_reports_both_runs_close_to_each_other(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _run("--scenario", str(_scenario(tmp_path, 12)), "--live", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert json.loads(done.stdout) == doc
    n = doc["requests"]
    assert 380 <= n <= 580  # 12 s at 40 req/s
    for side in ("sim", "live"):
        s = doc[side]
        assert s["requests"] == n
        assert sum(s["mode_counts"].values()) == n
        assert sum(s["node_counts"].values()) == n - s["mode_counts"].get("refused", 0)
        assert set(s["latency_ms"]) == {"p50", "p95", "p99"} and s["total_cost_usd"] > 0
    live = doc["live"]
    assert live["errors"] == 0 and live["status_counts"].get("200", 0) > 0.9 * n
    assert 0 < live["proxy_overhead_ms"]["p50"] < live["latency_ms"]["p50"]
    assert 0 <= live["timer_lateness_ms"]["p50"] < live["upstream_latency_ms"]["p50"]
    f = doc["fidelity"]
    assert set(f["mode_share_diff_points"]) >= set(doc["sim"]["mode_counts"])
    assert set(f["node_share_diff_points"]) >= set(doc["sim"]["node_counts"])
    assert f["max_mode_diff_points"] <= SHARE_POINTS, f
    assert f["max_node_diff_points"] <= SHARE_POINTS, f
    low, high = P50_RATIO
    assert low <= f["upstream_latency_ratio"]["p50"] <= high, f
    # The router saw the node go (through the twin's feed): nothing reaches it once a
    # refresh after the event has passed, in the live run as in the simulator's.
    refresh = yaml.safe_load(POLICY.read_text())["refresh_seconds"]
    for name in ("decisions.jsonl", "live-decisions.jsonl"):
        rows = [json.loads(x) for x in (out / name).read_text().splitlines()]
        assert len(rows) == n
        late = [r for r in rows if r["t"] > 4 + refresh + 1 and r["node"] == "rtx-a"]
        assert late == [], (name, late[:3])
        assert any(r["node"] == "rtx-a" for r in rows if r["t"] < 4)
    page = (out / "report.html").read_text()
    assert "Simulator vs live stack" in page and "chart-twin-shares" in page
    assert not any(_listening(a) for a in _addresses(out))


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "router", "simulate", "--scenario",
                             str(_scenario(tmp_path, 60)), "--live", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=as_if_typed)
    try:
        deadline = time.monotonic() + 60
        while not (out / "live" / "envoy.log").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # the load is running
        addresses = _addresses(out)
        assert any(_listening(a) for a in addresses)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, err
    assert "every process stopped" in err
    assert not any(_listening(a) for a in addresses)
    assert not (out / "report.json").exists()


def test_bad_scenario_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicy: nowhere.yaml\ntraffic: {rate_rps: 10, classes: [{}]}\n")
    done = _run("--scenario", str(bad), "--live", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "nowhere.yaml" in done.stderr
    assert not (tmp_path / "out").exists()


GATEWAYS_SCENARIO = """\
version: 1
policy: {policy}
duration_s: 12
seed: 7
traffic:
  rate_rps: 60
  keys: {{count: 2000, zipf_s: 0.6}}
  classes:
    - {{name: vision, tenant: acme, residency: [GDPR], slo_ms: 300, degrade: false,
       payload_kb: 8}}
gateways: [{{share: 0.7}}, {{share: 0.3}}]
events:
  - {{at_s: 4, gateway_down: 0}}
  - {{at_s: 7, gateway_up: 0}}
"""


def _expected_gateways(rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[int]:
    """Requests per gateway as the simulator's pick sends them, gateway 0 down between its
    `down` and `up` as they happened."""
    from simulator.gateways import cumulative, pick

    down = next(e["t"] for e in events if e["event"] == "down")
    up = next(e["t"] for e in events if e["event"] == "up")
    counts = [0, 0]
    for r in rows:
        counts[pick(r["key"], *cumulative([0.7, 0.3], [not down <= r["t"] < up, True]))] += 1
    return counts


def _running(marker: str) -> list[str]:
    """Command lines of processes naming `marker` (the run's directory)."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines() if marker in line and "pytest" not in line]


@pytest.mark.slow
@pytest.mark.parametrize("per_slot", [0, 1])
def test_two_gateways_share_the_traffic_and_hold_every_node_slot(tmp_path: Path,
                                                                 per_slot: int) -> None:
    # the twin's policy with its queue (1 place a slot) and without: a queued request waits at
    # its node past the slots, so the bound two gateways' leases hold is slots + places
    policy = tmp_path / "policy.yaml"
    doc = yaml.safe_load(POLICY.read_text())
    doc["edge"]["queue_per_slot"] = per_slot
    policy.write_text(yaml.safe_dump(doc))
    scenario = tmp_path / "gateways.yaml"
    scenario.write_text(GATEWAYS_SCENARIO.format(policy=policy))
    out = tmp_path / "out"
    done = _run("--scenario", str(scenario), "--live", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    live = json.loads((out / "report.json").read_text())["live"]
    n = sum(g["requests"] for g in live["gateways"])
    assert n == live["requests"] and live["errors"] == 0 and live["fail_open"] == 0
    # gateway 0 went down at 4 s and came back once its restarted router listened
    events = live["gateway_events"]
    assert [(e["gateway"], e["event"]) for e in events] == [(0, "down"), (0, "up")]
    assert 4.0 <= events[0]["t"] < 4.5 and 7.0 <= events[1]["t"] < 11.0
    rows = [json.loads(x) for x in (out / "live-decisions.jsonl").read_text().splitlines()]
    expected = _expected_gateways(rows, events)
    for g, want in zip(live["gateways"], expected, strict=True):
        assert g["requests"] > 0.2 * n and abs(g["requests"] - want) <= 0.02 * n, (g, expected)
        assert g["mode_counts"].get("edge", 0) > 0
    both_up = [g["configured_share"] for g in live["gateways"]]
    assert both_up == [0.7, 0.3]
    # the nodes' own counts: full at times, never past their slots (and queue), fleet-wide
    nodes = live["node_concurrency"]
    if per_slot == 0:
        assert live["over_slots"] == 0 and all(c["over_slots"] == 0 for c in nodes.values()), nodes
    assert all(c["peak_inflight"] <= c["slots"] * (1 + per_slot) for c in nodes.values()), nodes
    assert any(c["peak_inflight"] >= c["slots"] for c in nodes.values()), nodes
    assert (out / "live" / "router-1.log").exists() and (out / "live" / "envoy-1.log").exists()
    assert _running(str(out)) == []


def test_gateways_without_redis_are_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "gateways.yaml"
    scenario.write_text(GATEWAYS_SCENARIO.format(policy=POLICY))
    out = tmp_path / "out"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no redis-server on it
    done = subprocess.run([sys.executable, "-m", "router", "simulate", "--scenario",
                           str(scenario), "--live", "--out", str(out), "--seconds", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "no redis-server is on PATH" in done.stderr
    assert not (out / "report.json").exists() and _running(str(out)) == []
