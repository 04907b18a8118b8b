"""Policy validation: every problem, located, in one pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.cli import main
from router.policy.loader import PolicyError, load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "policies" / "example.yaml"

GOOD = """\
version: 1
edge:
  nodes:
    - {id: a, address: "127.0.0.1:9001", weight: 2, slots: 4, residency: [GDPR]}
cloud:
  pools:
    - {id: c, address: "127.0.0.1:9002", residency: [GDPR]}
"""


def errors(text: str) -> list[str]:
    _, problems = parse_policy(text, "p.yaml")
    return [str(p) for p in problems if p.severity == "error"]


def test_example_policy_is_clean_and_rich() -> None:
    policy = load_policy(EXAMPLE)
    assert len(policy.nodes) >= 8
    assert len({n.hardware for n in policy.nodes}) >= 4
    assert len(policy.pools) == 2
    assert policy.pools[0].residency != policy.pools[1].residency
    assert len(policy.digest) == 12


def test_minimal_policy_gets_defaults() -> None:
    policy, problems = parse_policy(GOOD, "p.yaml")
    assert policy is not None and not problems
    assert policy.refresh_seconds == 30 and policy.balance_factor == 0.25
    assert policy.budgets.soft_fraction == 0.8 and policy.budgets.hard_fraction == 1.0


@pytest.mark.parametrize(("edit", "expected"), [
    pytest.param(("weight: 2", "wieght: 2"),
                 "p.yaml:4:42: edge.nodes[0].wieght: unknown key 'wieght' (did you mean "
                 "'weight'?)", id="typo-key"),
    pytest.param(("weight: 2", "weight: -2"),
                 "p.yaml:4:50: edge.nodes[0].weight: must be greater than 0, got -2",
                 id="negative-weight"),
    pytest.param(("slots: 4", "slots: 0"),
                 "p.yaml:4:60: edge.nodes[0].slots: must be greater than 0, got 0",
                 id="zero-slots"),
    pytest.param(("slots: 4", "slots: many"),
                 "p.yaml:4:60: edge.nodes[0].slots: expected a number, got string 'many'",
                 id="wrong-type"),
    pytest.param(('"127.0.0.1:9001"', '"localhost"'),
                 "p.yaml:4:24: edge.nodes[0].address: 'localhost' is not host:port",
                 id="bad-address"),
    pytest.param(('"127.0.0.1:9002"', '"127.0.0.1:9001"'),
                 "p.yaml:7:24: cloud.pools[0].address: address '127.0.0.1:9001' is already "
                 "used at line 4", id="duplicate-address"),
    pytest.param(("id: c,", "id: a,"),
                 "p.yaml:7:12: cloud.pools[0].id: duplicate id 'a' (first at line 4)",
                 id="duplicate-id"),
    pytest.param(("version: 1", "version: 1\nrefresh_secs: 5"),
                 "p.yaml:2:1: refresh_secs: unknown key 'refresh_secs' (did you mean "
                 "'refresh_seconds'?)", id="typo-top-level"),
    pytest.param(("version: 1", "version: 1\nbudgets: {soft_fraction: 0.9, hard_fraction: 0.5}"),
                 "p.yaml:2:26: budgets.soft_fraction: soft fraction 0.9 is above the hard "
                 "fraction 0.5", id="soft-above-hard"),
    pytest.param(("version: 1", "version: 1\nbudgets: {tenants: {acme: {limit_usd: -1}}}"),
                 "p.yaml:2:39: budgets.tenants.acme.limit_usd: must be at least 0, got -1",
                 id="negative-budget"),
    pytest.param(("version: 1", "version: 1\nedge: [oops"),
                 "p.yaml:3:5: YAML syntax error: ", id="yaml-syntax"),
])
def test_each_error_is_located(edit: tuple[str, str], expected: str) -> None:
    found = errors(GOOD.replace(*edit, 1))
    assert any(e.startswith(expected) for e in found), found


def test_unsatisfiable_residency_is_a_warning_not_an_error() -> None:
    text = GOOD.replace("residency: [GDPR]}", "residency: [HIPAA]}", 1)
    policy, problems = parse_policy(text, "p.yaml")
    assert policy is not None
    assert [p.severity for p in problems] == ["warning"]
    assert "HIPAA" in problems[0].message and "no cloud pool" in problems[0].message


def test_a_tenant_floor_or_model_nothing_serves_is_a_located_warning() -> None:
    text = GOOD + ("budgets:\n  tenants:\n    acme: {limit_usd: 1, residency: [CCPA], "
                   "models: [llm]}\n    ok: {limit_usd: 1, residency: [GDPR]}\n")
    text = text.replace('residency: [GDPR]}\n', 'residency: [GDPR], models: [vision]}\n')
    policy, problems = parse_policy(text, "p.yaml")
    assert policy is not None
    assert [str(p) for p in problems] == [
        "p.yaml:10:37: warning: budgets.tenants.acme.residency: no node or pool satisfies "
        "[CCPA] together (the tenant's floor and defaults.residency); its requests will be "
        "refused (503)",
        "p.yaml:10:53: warning: budgets.tenants.acme.models: model 'llm' is served by no node "
        "or pool"]


def test_load_policy_raises_with_all_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("weight: 2", "wieght: -2").replace("slots: 4", "slots: -1"))
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    assert len(info.value.problems) == 2
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")


def test_validate_cli_reports_three_problems_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "three.yaml"
    bad.write_text("""\
version: 1
edge:
  nodes:
    - {id: a, address: "127.0.0.1:9001", wieght: 1}
    - {id: a, address: "127.0.0.1:9002", weight: -3}
""")
    assert main(["validate", str(bad)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"{bad}:4:") and "unknown key 'wieght'" in lines[0]
    assert any(f"{bad}:5:" in line and "duplicate id 'a'" in line for line in lines)
    assert any(f"{bad}:5:" in line and "must be greater than 0" in line for line in lines)


def test_validate_example_as_a_user_runs_it() -> None:
    proc = subprocess.run([sys.executable, "-m", "router", "validate", str(EXAMPLE)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(": ok")


def test_tags_used_alike_are_not_taken_for_typos() -> None:
    from router.policy.typos import residency_typos
    from tests.core.factory import node, policy, pool

    fleet = policy([node(0, residency=["EU-1"]), node(1, residency=["EU-2"])],
                   [pool(residency=["EU-1", "EU-2"])])
    assert residency_typos(fleet) == []
    typo = policy([node(0, residency=["GDPR"]), node(1, residency=["GPDR"])],
                  [pool(residency=["GDPR"])])
    assert residency_typos(typo) == [(("edge", "nodes", 1, "residency"),
                                      "residency tag 'GPDR' (written once) looks like 'GDPR' "
                                      "(written 2 times): did you mean 'GDPR'?")]
