"""Scenario files on the declarative schema: defaults, located errors, hostile YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import Scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
FILE = str(ROOT / "simulator" / "scenarios" / "s.yaml")  # beside policies/fintech.yaml
BASE = """\
version: 1
policy: policies/fintech.yaml
traffic:
  rate_rps: 100
  classes:
    - {tenant: acme}
    - {name: batch, weight: 3, slo_ms: 300, degrade: false}
"""


def load(text: str) -> Scenario:
    """A scenario that must load."""
    scenario, problems = parse_scenario(text, FILE)
    assert scenario is not None, [str(p) for p in problems]
    return scenario


def errors(text: str) -> list[str]:
    """The located errors, without the directory."""
    _, problems = parse_scenario(text, FILE)
    return [str(p).replace(FILE, "s.yaml") for p in problems if p.severity == "error"]


def test_defaults_are_applied() -> None:
    s = load(BASE)
    assert (s.duration_s, s.seed, s.keys, s.zipf_s, s.events) == (600.0, 1, 1000, 1.1, ())
    first, second = s.classes
    assert (first.name, first.weight, first.tenant, first.slo_ms, first.degrade) == (
        "class-0", 1.0, "acme", 100.0, True)
    assert (first.payload_kb, first.model, first.max_cost_usd) == (16.0, None, None)
    assert second.name == "batch" and second.weight == 3.0
    assert s.rate == ((0.0, 100.0),) and s.rate_at(50.0) == 100.0
    assert s.policy == Path(FILE).parent / "policies" / "fintech.yaml" and s.file == FILE


def test_events_come_sorted_with_kind_and_args() -> None:
    s = load(BASE + """\
events:
  - {at_s: 900, spot_price: {h100-spot: 0}}
  - {at_s: 10, throttle: {node: a, compute_score: 0.5}}
  - {at_s: 20, node_down: a}
  - {at_s: 30, partition: {pool: p, for_s: 5}}
  - {at_s: 40, budget: {tenant: acme, limit_usd: 0}}
""")
    assert [e.kind for e in s.events] == ["throttle", "node_down", "partition", "budget",
                                          "spot_price"]
    assert s.events[0].args == {"node": "a", "compute_score": 0.5}
    assert s.events[1].args == {"node": "a"}
    assert s.events[3].args == {"tenant": "acme", "limit_usd": 0.0}
    assert s.events[4].args == {"prices": {"h100-spot": 0.0}}


@pytest.mark.parametrize(("edit", "expected"), [
    pytest.param(("rate_rps: 100", "rate_rps: [[0, 10], [5, -1], [3, 4]]"),
                 ["s.yaml:4:23: traffic.rate_rps[1]: expected [t_s, rps] with t ascending and "
                  "rps >= 0, got [5.0, -1.0]",
                  "s.yaml:4:32: traffic.rate_rps[2]: expected [t_s, rps] with t ascending and "
                  "rps >= 0, got [3.0, 4.0]"], id="rate-points"),
    pytest.param(("rate_rps: 100", "rate_rps: '100'"),
                 ["s.yaml:4:13: traffic.rate_rps: must be a number or a list of [t_s, rps] "
                  "points, got string"], id="rate-string"),
    pytest.param(("rate_rps: 100", "rate_rps: [[0, 1, 2]]"),
                 ["s.yaml:4:14: traffic.rate_rps[0]: expected 2 items, got 3"], id="rate-triple"),
    pytest.param(("    - {tenant: acme}\n", ""), [], id="one-class-is-enough"),
    pytest.param(("  classes:\n    - {tenant: acme}\n    - {name: batch, weight: 3, slo_ms: 300, "
                  "degrade: false}\n", "  classes: []\n"),
                 ["s.yaml:5:12: traffic.classes: must list at least one class"], id="no-class"),
    pytest.param(("version: 1", "version: 1\nevents: [{at_s: 1, node_down: a, node_up: a}]"),
                 ["s.yaml:2:10: events[0]: an event needs exactly one of node_down, node_up, "
                  "throttle, spot_price, partition, budget, preempt, gateway_down, gateway_up, "
                  "feed_delay"], id="two-kinds"),
    pytest.param(("version: 1", "version: 1\nevents: [{at_s: 1, throttle: {node: a}}]"),
                 ["s.yaml:2:30: events[0].throttle: missing required key 'compute_score'"],
                 id="missing-arg"),
    pytest.param(("version: 1", "version: 1\nseed: !!int 3"),
                 ["s.yaml:2:7: YAML tags are not allowed (found '!!int')"], id="tag"),
    pytest.param(("version: 1", "version: 1\nseed: 1" + "0" * 400),
                 ["s.yaml:2:7: number too large (more than 15 digits)"], id="huge-seed"),
    pytest.param(("version: 1", "version: 1\nseed: -1"),
                 ["s.yaml:2:7: seed: must be at least 0, got -1"], id="negative-seed"),
    # the planner seeds its search with the scenario's seed, in 32 bits
    pytest.param(("version: 1", "version: 1\nseed: 4294967296"),
                 ["s.yaml:2:7: seed: must be at most 4294967295, got 4294967296"],
                 id="seed-past-32-bits"),
    pytest.param(("version: 1", "version: 3"),
                 ["s.yaml:1:10: version: unsupported scenario version 3; this simulator reads 1"],
                 id="version"),
    pytest.param(("policy: policies/fintech.yaml", "policy: 7"),
                 ["s.yaml:2:9: policy: expected a non-empty string, got number"], id="policy-int"),
])
def test_scenario_error_is_located(edit: tuple[str, str], expected: list[str]) -> None:
    assert errors(BASE.replace(*edit, 1)) == expected


def test_merge_keys_and_anchors_work_in_scenarios() -> None:
    s = load(BASE.replace("    - {tenant: acme}\n", "    - &eu {tenant: acme, slo_ms: 75}\n"
                                                      "    - {<<: *eu, name: eu-2}\n"))
    assert [(c.name, c.tenant, c.slo_ms) for c in s.classes[:2]] == [
        ("class-0", "acme", 75.0), ("eu-2", "acme", 75.0)]
