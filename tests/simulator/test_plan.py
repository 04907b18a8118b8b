"""`hybrid-router plan`: SPACE errors, candidates, the files it writes, same seed same answer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from router.cli import main
from router.core.schema import key_reference
from router.policy.loader import load_policy
from simulator.plan.apply import Choice, candidate, knob_checker
from simulator.plan.space import Space, load_space
from simulator.scenario import load_scenario

POLICY = """\
version: 1
refresh_seconds: 2
slo: {default_latency_ms: 100, degraded_slack: 1.5}
hashing: {balance_factor: 0.25}
edge:
  nodes:
    - {id: edge-a, address: "127.0.0.1:9101", hardware: jetson-agx-orin, slots: 2,
       residency: [EU], base_latency_ms: 30}
    - {id: edge-b, address: "127.0.0.1:9102", hardware: jetson-agx-orin, slots: 2,
       residency: [EU], base_latency_ms: 30}
cloud:
  pools:
    - {id: pool-eu, address: "127.0.0.1:9201", residency: [EU], instance_type: gpu-spot,
       latency_ms: 60, compute_ms: 20, usd_per_hour: 2.0}
budgets:
  store: memory
  tenants: {acme: {limit_usd: 100}}
"""
SCENARIO = """\
version: 1
policy: policy.yaml
duration_s: 12
seed: 4
traffic:
  rate_rps: 150
  keys: {count: 200, zipf_s: 1.1}
  classes:
    - {name: interactive, tenant: acme, residency: [EU], slo_ms: 80, payload_kb: 32}
events:
  - {at_s: 5, node_down: edge-a}
world:
  sites:
    - {id: shop, uplink_mbps: 100, nodes: [edge-a, edge-b]}
"""
SPACE = """\
version: 1
add_nodes:
  - {preset: jetson-agx-orin, site: shop, max: 2}
remove_nodes: [edge-b]
reserved_slots: {pool-eu: {slots: [0, 4], usd_per_hour: 0.5}}
knobs:
  hashing.balance_factor: [0.1, 0.5]
  budgets.tenants.acme.limit_usd: [10, 200]
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A small scenario, its policy and a space, in `tmp_path`."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


def space_problems(files: Path, text: str) -> list[str]:
    """The located problems of a SPACE text against the small scenario."""
    (files / "bad.yaml").write_text(text)
    scenario, _ = load_scenario(files / "scenario.yaml")
    assert scenario is not None
    policy = load_policy(files / "policy.yaml")
    checker = knob_checker(yaml.safe_load(POLICY), str(files / "policy.yaml"))
    space, problems = load_space(files / "bad.yaml", scenario, policy, checker)
    assert space is None
    return [str(p).replace(str(files) + "/", "") for p in problems]


@pytest.mark.parametrize(("text", "said"), [
    ("version: 1\n", "bad.yaml:1:1: names nothing that may change"),
    ("add_nodes:\n  - {preset: tpu-v9, max: 2}\n",
     "bad.yaml:2:14: add_nodes[0].preset: 'tpu-v9' is not a hardware preset"),
    ("add_nodes:\n  - {preset: jetson-agx-orn, max: 2}\n",
     "bad.yaml:2:14: add_nodes[0].preset: 'jetson-agx-orn' is not a hardware preset (did you "
     "mean 'jetson-agx-orin'?)"),
    ("add_nodes:\n  - {preset: jetson-agx-orin, min: 3, max: 2}\n",
     "bad.yaml:2:36: add_nodes[0].min: min 3 is above max 2"),
    ("add_nodes:\n  - {preset: jetson-agx-orin, site: mall, max: 2}\n",
     "bad.yaml:2:37: add_nodes[0].site: 'mall' is not one of the scenario's world.sites (shop)"),
    ("add_nodes:\n  - {preset: nvidia-l4, max: 2}\n",
     "bad.yaml:2:14: add_nodes[0].preset: the policy has no 'nvidia-l4' node to copy"),
    ("remove_nodes: [edge-a, edge-z]\n",
     "bad.yaml:1:24: remove_nodes[1]: 'edge-z' is not a node of the policy"),
    ("reserved_slots: {pool-us: [0, 4]}\n",
     "bad.yaml:1:18: reserved_slots.pool-us: 'pool-us' is not a cloud pool of the policy"),
    ("reserved_slots: {pool-eu: [4, 0]}\n",
     "bad.yaml:1:27: reserved_slots.pool-eu.slots: expected [low, high] with low <= high"),
    ("knobs: {hashing.balance: [0.1, 0.5]}\n",
     "bad.yaml:1:9: knobs.hashing.balance: the policy refuses 0.1 here"),
    ("knobs: {budgets.tenants.acne.limit_usd: [1, 5]}\n",
     "bad.yaml:1:9: knobs.budgets.tenants.acne.limit_usd: 'budgets.tenants.acne.limit_usd': "
     "the policy has no 'budgets.tenants.acne'"),
    ("knobs: {hashing.min_cap_fraction: [0.5, 3.0]}\n",
     "bad.yaml:1:9: knobs.hashing.min_cap_fraction: the policy refuses 3.0 here"),
    ("knobs: {nonsense: [0, 1]}\n", "bad.yaml:1:9: knobs.nonsense: 'nonsense' is not a policy "
                                    "key"),
], ids=["empty", "preset", "preset-typo", "min-max", "site", "no-template", "node", "pool",
        "slots-order", "knob-key", "knob-tenant", "knob-value", "knob-shape"])
def test_space_errors_are_located(files: Path, text: str, said: str) -> None:
    problems = space_problems(files, text)
    assert any(p.startswith(said) for p in problems), problems


def test_a_choice_adds_removes_reserves_and_sets(files: Path) -> None:
    scenario, _ = load_scenario(files / "scenario.yaml")
    assert scenario is not None
    policy = load_policy(files / "policy.yaml")
    data = yaml.safe_load(POLICY)
    space, problems = load_space(files / "space.yaml", scenario, policy,
                                 knob_checker(data, "policy.yaml"))
    assert space is not None, problems
    choice = Choice((2,), frozenset({"edge-b"}), {"pool-eu": 3},
                    {"hashing.balance_factor": 0.4, "budgets.tenants.acme.limit_usd": 50.0})
    text, planned_policy, planned = candidate(data, scenario, space, choice, "policy.yaml")
    assert [n.id for n in planned_policy.nodes] == ["edge-a", "shop-jetson-agx-orin-1",
                                                    "shop-jetson-agx-orin-2"]
    assert planned.world.sites[0].nodes == ("edge-a", "shop-jetson-agx-orin-1",
                                            "shop-jetson-agx-orin-2")
    reserved = next(p for p in planned_policy.pools if p.id == "pool-eu-reserved")
    assert (reserved.pricing, reserved.reserved_slots, reserved.usd_per_hour) == (
        "reserved", 3, 0.5)
    assert planned_policy.hashing.balance_factor == 0.4
    assert planned_policy.budgets.tenants["acme"].limit_usd == 50.0
    assert planned_policy.fixed_usd_per_hour == pytest.approx(
        policy.fixed_usd_per_hour * 3 / 2 + 1.5)
    assert yaml.safe_load(text)["edge"]["nodes"][1]["address"] == "127.0.0.1:20001"


def plan(files: Path, out: str, *extra: str) -> int:
    """Run `hybrid-router plan` on the small scenario, 3 trials, into files/out."""
    return main(["plan", "--scenario", str(files / "scenario.yaml"), "--space",
                 str(files / "space.yaml"), "--trials", "3", "--seed", "5", "--out",
                 str(files / out), *extra])


def test_plan_writes_the_frontier_and_a_policy_validate_accepts(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plan(files, "out", "--slo", "0.5") == 0
    doc = json.loads((files / "out" / "pareto.json").read_text())
    assert doc["trials"] == 3 and doc["pareto"]
    for point in doc["pareto"]:
        assert set(point) == {"trial", "parameters", "total_cost_per_hour_usd",
                              "slo_attainment", "p95_ms"}
        assert set(point["parameters"]) == {"add_nodes", "remove_nodes", "reserved_slots",
                                            "knobs"}
    rec = doc["recommended"]
    meeting = [p for p in doc["pareto"] if p["slo_attainment"] >= 0.5]
    assert rec["total_cost_per_hour_usd"] == min(p["total_cost_per_hour_usd"] for p in meeting)
    assert set(rec["versus_today"]["verdict"]) == {"slo", "p95", "cost", "load_bound"}
    capsys.readouterr()
    assert main(["validate", str(files / "out" / "recommended.yaml")]) == 0
    page = (files / "out" / "report.html").read_text(encoding="utf-8")
    assert "chart-frontier" in page and "today's policy" in page
    assert "Recommended against today" in page


def test_same_seed_same_answer_whatever_the_jobs(files: Path) -> None:
    assert plan(files, "one", "--slo", "0.5") == 0
    assert plan(files, "two", "--slo", "0.5", "--jobs", "2") == 0
    one = json.loads((files / "one" / "pareto.json").read_text())
    two = json.loads((files / "two" / "pareto.json").read_text())
    assert one == two
    assert (files / "one" / "recommended.yaml").read_text() == \
        (files / "two" / "recommended.yaml").read_text()


def test_no_trial_meeting_the_slo_is_said_and_leaves_no_recommendation(
        files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (files / "out").mkdir()
    (files / "out" / "recommended.yaml").write_text("from an earlier plan\n")
    assert plan(files, "out", "--slo", "1.0", "--trials", "1") == 1
    said = capsys.readouterr().out
    assert "No trial meets SLO attainment 100 %" in said
    doc = json.loads((files / "out" / "pareto.json").read_text())
    assert doc["recommended"] is None and doc["verdict"] in said
    assert not (files / "out" / "recommended.yaml").exists()


def test_bad_arguments_exit_2(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plan(files, "out", "--slo", "1.5") == 2
    assert "--slo 1.5 must be a fraction" in capsys.readouterr().err
    (files / "space.yaml").write_text("remove_nodes: [edge-z]\n")
    assert plan(files, "out", "--slo", "0.9") == 2
    assert "space.yaml:1:16: remove_nodes[0]: 'edge-z' is not a node" in capsys.readouterr().err


def test_every_space_key_flag_and_pareto_key_is_documented(files: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "reference.md").read_text()
    spans = set(re.findall(r"`([^`\n]+)`", text))
    keys = {k.removesuffix("[]").replace(".NAME", ".POOL") for k in
            (row[0] for row in key_reference(Space))}
    keys = {"knobs" if k == "knobs.POOL" else k for k in keys}
    assert {"add_nodes.preset", "reserved_slots.POOL.slots"} <= {k.replace("[]", "")
                                                                  for k in keys}
    assert sorted(keys - spans) == []
    assert plan(files, "out", "--slo", "0.5", "--trials", "1") == 0
    doc = json.loads((files / "out" / "pareto.json").read_text())
    planner = text[text.index("#### Planner output"):text.index("### Trace replay\n")]
    assert sorted(k for k in doc if f"`{k}`" not in planner) == []
    assert sorted(k for k in doc["recommended"] if f"`{k}`" not in planner) == []
