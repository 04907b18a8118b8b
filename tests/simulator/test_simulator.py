"""The simulator: queueing theory, determinism, invariants, reports, scenario errors."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router.cli import main
from router.core.policy import EdgeNode
from router.policy.loader import load_policy
from simulator.baselines import make_baseline
from simulator.report import summarize
from simulator.routers import Adaptive
from simulator.run import simulate
from simulator.scenario import WorldConfig, load_scenario, parse_scenario
from simulator.traffic import Arrivals, draw
from simulator.world import World
from tests.core.factory import policy as make_policy

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "simulator" / "scenarios"


def erlang_c_response_ms(c: int, lam: float, mean_ms: float) -> float:
    """Mean response time of an M/M/c queue (Erlang C), in ms."""
    mu = 1000.0 / mean_ms
    a = lam / mu
    rho = a / c
    top = a ** c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)
    return (p_wait / (c * mu - lam) + 1 / mu) * 1000.0


@pytest.mark.parametrize(("c", "rho"), [(1, 0.6), (4, 0.75), (8, 0.85)])
def test_edge_node_matches_mm_c(c: int, rho: float) -> None:
    node = EdgeNode(id="n", address="127.0.0.1:1", hardware="generic", weight=1, slots=c,
                    residency=frozenset(), models=frozenset({"*"}), base_latency_ms=20.0)
    # exponential service, contention 0 and every key new (never warm): an M/M/c queue
    world = World(make_policy([node]), np.random.default_rng(3),
                  WorldConfig(contention=0.0, service_cv=1.0))
    lam = rho * c * 1000.0 / 20.0
    rng = np.random.default_rng(4)
    times = np.cumsum(rng.exponential(1 / lam, 60_000))
    done: list[float] = []
    world.on_done = lambda row, ms, warm, status: done.append(ms)
    for i, t in enumerate(times):
        world.run_until(float(t))
        world.submit(i, "edge", "n", None, "full", i, 0.0)
    world.run_until(float("inf"))
    measured = float(np.mean(done[5000:]))
    expected = erlang_c_response_ms(c, lam, 20.0)
    assert measured == pytest.approx(expected, rel=0.08), (measured, expected)


def run(name: str, requests: int = 20_000):  # type: ignore[no-untyped-def]
    scenario, problems = load_scenario(SCENARIOS / name)
    assert scenario is not None, problems
    policy = load_policy(scenario.policy)
    return scenario, policy, simulate(scenario, policy, Adaptive(policy), requests=requests)


def test_same_seed_same_result() -> None:
    a = summarize(run("spot-spike.yaml", 8000)[2], run("spot-spike.yaml", 10)[1])
    b = summarize(run("spot-spike.yaml", 8000)[2], run("spot-spike.yaml", 10)[1])
    a.pop("wall_seconds")
    b.pop("wall_seconds")
    assert a == b


def test_a_run_of_given_arrivals_routes_exactly_those() -> None:
    scenario, policy, drawn_run = run("camera.yaml", 6000)
    arrivals = draw(scenario, np.random.default_rng(scenario.seed), 6000)
    given = simulate(scenario, policy, Adaptive(policy), arrivals=arrivals)
    # the scenario's own arrivals, given: the run it would have made
    for column in ("t", "key", "cls", "mode", "node", "quality", "latency_ms"):
        assert getattr(given, column) == getattr(drawn_run, column), column
    # the same requests a minute later, every other one: those rows, at those times
    later = Arrivals(arrivals.times[::2] + 60.0, arrivals.cls[::2], arrivals.keys[::2])
    moved = simulate(scenario, policy, Adaptive(policy), arrivals=later)
    assert moved.t == (arrivals.times[::2] + 60.0).tolist()
    assert moved.key == drawn_run.key[::2] and moved.cls == drawn_run.cls[::2]
    assert all(m for m in moved.mode)  # every one decided


def test_same_seed_same_result_for_the_world_model_and_seeded_baselines() -> None:
    scenario, policy, _ = run("camera.yaml", 10)
    for make in (lambda: Adaptive(policy), lambda: make_baseline(policy, "p2c", scenario.seed),
                 lambda: make_baseline(policy, "envoy-ring-hash")):
        a, b = (summarize(simulate(scenario, policy, make(), requests=6000), policy)
                for _ in range(2))
        a.pop("wall_seconds")
        b.pop("wall_seconds")
        assert a == b


SHIPPED = sorted(p.name for p in SCENARIOS.glob("*.yaml"))


def test_every_shipped_scenario_is_checked() -> None:
    assert {"fintech.yaml", "partition.yaml", "spot-spike.yaml", "black-friday.yaml",
            "camera.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_no_residency_violation_or_budget_overrun(name: str) -> None:
    _, policy, result = run(name, 15_000)
    report = summarize(result, policy)
    assert report["residency_violations"] == 0
    assert report["budget_overrun_usd"] == 0.0


def test_camera_frames_split_rather_than_cross_the_uplink_whole_when_the_edge_is_full() -> None:
    # the first ~300 s: the frame rate climbs past what the six boxes serve, even degraded
    _, _, result = run("camera.yaml", 100_000)
    modes = Counter(result.mode)
    assert modes["split"] > 1000  # the edge had no room for some keys, and split took them
    assert modes["split"] >= modes["cloud"]
    report = summarize(result, load_policy(SCENARIOS / "policies" / "camera.yaml"))
    assert report["split_fraction"] > report["cloud_fraction"] - report["split_fraction"]


def test_hard_budget_holds_after_a_budget_cut() -> None:
    text = (SCENARIOS / "spot-spike.yaml").read_text().replace(
        "{at_s: 1000, budget: {tenant: acme, limit_usd: 0.5}}",
        "{at_s: 10, budget: {tenant: acme, limit_usd: 0.01}}")
    scenario, _ = parse_scenario(text, str(SCENARIOS / "cut.yaml"))
    assert scenario is not None
    policy = load_policy(scenario.policy)
    result = simulate(scenario, policy, Adaptive(policy), requests=20_000)
    spend = sum(c for t, m, c in zip(result.tenant, result.mode, result.cost_usd, strict=True)
                if t == "acme" and m in ("cloud", "split"))
    # Requests admitted before the cut keep their holds; nothing is admitted past the new limit.
    assert spend <= max(0.01, spend_before_cut(result)) + 1e-9


def spend_before_cut(result) -> float:  # type: ignore[no-untyped-def]
    return sum(c for t, tn, m, c in zip(result.t, result.tenant, result.mode, result.cost_usd,
                                        strict=True)
               if t < 10 and tn == "acme" and m in ("cloud", "split"))


def test_report_agrees_with_decisions_and_html_exists(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(SCENARIOS / "fintech.yaml"), "--requests",
                 "5000", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert report["requests"] == len(rows) == 5000
    modes: dict[str, int] = {}
    for r in rows:
        modes[r["mode"]] = modes.get(r["mode"], 0) + 1
        assert set(r) == {"t", "key", "tenant", "class", "mode", "node", "quality", "home",
                          "fill", "warm", "latency_ms", "cost_usd", "cloud_usd", "slo_met"}
    assert modes == report["mode_counts"]
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(report["variable_cost_usd"],
                                                             abs=1e-5)
    assert sum(r["slo_met"] for r in rows) / len(rows) == pytest.approx(
        report["slo_attainment"], abs=1e-4)
    for key in ("requests", "mode_counts", "latency_ms", "slo_attainment", "fixed_cost_usd",
                "variable_cost_usd", "total_cost_usd", "cost_per_1k_requests_usd",
                "cloud_fraction", "max_load_over_cap", "affinity_hit_rate",
                "residency_violations", "budget_overrun_usd", "wall_seconds"):
        assert key in report
    page = (out / "report.html").read_text()
    # Every chart has its place (drawn, or a line saying the run had nothing for it); the
    # browser test (test_report_chromium.py) checks that each one renders.
    assert page.count("<figure class='chart") == 5


def test_compare_prints_one_table_with_baselines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", str(SCENARIOS / "fintech.yaml"), "--requests",
                 "3000", "--baselines"]) == 0
    out = capsys.readouterr().out
    for name in ("hybrid-router", "cloud-only", "edge-only", "round-robin", "consistent-hash",
                 "least-loaded"):
        assert f"| {name}" in out


def test_scenario_errors_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicy: nowhere.yaml\nduraton_s: 5\ntraffic:\n"
                   "  rate_rps: -3\n  classes: [{name: a, wieght: 1}]\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:9: policy: policy file" in err
    assert f"{bad}:3:1: duraton_s: unknown key 'duraton_s' (did you mean 'duration_s'?)" in err
    assert f"{bad}:5:13: traffic.rate_rps: must be greater than 0" in err
    assert "wieght" in err and "did you mean 'weight'" in err


def test_a_scenario_runs_through_the_policy_given_instead_of_its_own(tmp_path: Path) -> None:
    own = (SCENARIOS / "policies" / "camera.yaml").read_text()
    extra = own.replace("  nodes:\n", '  nodes:\n    - {id: cam-new, address: "127.0.0.1:9499", '
                        "hardware: a100-80g, slots: 16, base_latency_ms: 14}\n", 1)
    (tmp_path / "candidate.yaml").write_text(extra)
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(SCENARIOS / "camera.yaml"), "--policy",
                 str(tmp_path / "candidate.yaml"), "--requests", "3000", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert any(r["node"] == "cam-new" for r in rows)
    report = json.loads((out / "report.json").read_text())
    assert "comparison" not in report  # no baseline unless --baselines
    assert "candidate.yaml" in (out / "report.html").read_text()  # the page names the policy run
