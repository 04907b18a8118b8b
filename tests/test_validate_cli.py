"""`hybrid-router validate` on feed files applies the router's own checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_demo_feed_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    feed = ROOT / "policies" / "feeds" / "demo.json"
    assert main(["validate", "--policy", str(ROOT / "policies" / "example.yaml"),
                 str(feed)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


# `value`: "key": value of the refused value, whose column the message must name (None: the
# document as a whole, 1:1).
@pytest.mark.parametrize(("edit", "fragment", "value"), [
    pytest.param(lambda d: d["prices"][0].update(usd_per_hour=float("nan")), "NaN", None,
                 id="nan-price"),
    pytest.param(lambda d: d["nodes"][0].update(slots=-1), "slots", '"slots": -1',
                 id="negative-slots"),
    pytest.param(lambda d: d["nodes"][0].update(id="ghost"), "unknown-node", '"id": "ghost"',
                 id="unknown-node"),
    pytest.param(lambda d: d["prices"][0].update(usd_per_hour=0),
                 "prices[0].usd_per_hour: must be greater than 0, got 0", '"usd_per_hour": 0',
                 id="zero-price"),
])
def test_bad_feed_is_refused_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         edit, fragment: str,  # type: ignore[no-untyped-def]
                                         value: str | None) -> None:
    doc = json.loads((ROOT / "policies" / "feeds" / "demo.json").read_text())
    edit(doc)
    bad = tmp_path / "feed.json"
    text = json.dumps(doc)
    bad.write_text(text)
    assert main(["validate", "--policy", str(ROOT / "policies" / "example.yaml"),
                 str(bad)]) == 2
    err = capsys.readouterr().err
    col = 1 if value is None else text.index(value) + value.index(": ") + 3
    assert err.startswith(f"{bad}:1:{col}: feed rejected") and fragment in err


EXAMPLE = ROOT / "policies" / "example.yaml"
SCENARIO = """\
version: 1
policy: {policy}
duration_s: 60
traffic:
  rate_rps: 10
  classes:
    - {{name: eu, weight: 1, tenant: acmee, residency: [GDPR], slo_ms: 100}}
    - {{name: us, weight: 1, tenant: fintech, slo_ms: 100}}
events:
  - {{at_s: 30, budget: {{tenant: fintek, limit_usd: 10}}}}
"""


def test_a_scenario_tenant_the_policy_does_not_name_is_a_located_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A warning, not an error: such a tenant is legal (it shares 'default'), but never
    silent, and a near miss names the tenant meant."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(policy=EXAMPLE))
    assert main(["validate", str(scenario)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{scenario}:7:37: warning: tenant 'acmee' is not in budgets.tenants of "
                      f"{EXAMPLE}: its requests share the 'default' account (limit $5,000) "
                      "(did you mean 'acme'?)")
    assert out[1].startswith(f"{scenario}:10:33: warning: tenant 'fintek' is not in") and \
        out[1].endswith("(did you mean 'fintech'?)")
    assert out[2] == f"{scenario}: ok"


def test_feed_spend_for_a_tenant_the_policy_does_not_name_is_a_located_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads((ROOT / "policies" / "feeds" / "demo.json").read_text())
    doc["spend"] = [{"tenant": "acme", "usd": 1.0}, {"tenant": "acmee", "usd": 5.0}]
    feed = tmp_path / "feed.json"
    text = json.dumps(doc)
    feed.write_text(text)
    assert main(["validate", "--policy", str(EXAMPLE), str(feed)]) == 0
    out = capsys.readouterr().out.splitlines()
    col = text.index('"acmee"') + 1
    assert out == [f"{feed}:1:{col}: warning: tenant 'acmee' is not in budgets.tenants of "
                   f"{EXAMPLE}: its spend is ignored (not this router's account to merge) "
                   "(did you mean 'acme'?)", f"{feed}: ok"]


def test_a_feed_file_that_does_not_exist_is_a_located_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "feed.json").write_text("{}")
    policy = tmp_path / "p.yaml"
    policy.write_text(EXAMPLE.read_text().replace("file:policies/feeds/demo.json",
                                                  f"file:{tmp_path}/fede.json"))
    assert main(["validate", str(policy)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"{policy}:6:16: warning: feed.source: {tmp_path}/fede.json does not "
                      "exist: the router serves on the policy alone and counts the feed "
                      "unreachable until it appears (did you mean 'feed.json'?)")


@pytest.mark.parametrize("beside", [False, True])
def test_a_relative_feed_file_names_each_place_it_was_looked_for_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        beside: bool) -> None:
    (tmp_path / "pol").mkdir()
    policy = tmp_path / "pol" / "p.yaml"
    policy.write_text(EXAMPLE.read_text())  # file:policies/feeds/demo.json, relative
    monkeypatch.chdir(tmp_path / "pol" if beside else tmp_path)
    assert main(["validate", "p.yaml" if beside else "pol/p.yaml"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    where = ("policies/feeds/demo.json" if beside else
             "policies/feeds/demo.json (nor pol/policies/feeds/demo.json, beside the policy)")
    assert f"warning: feed.source: {where} does not exist:" in head, head


def test_a_residency_typo_names_the_tag_meant(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p.yaml"
    text = EXAMPLE.read_text()
    first = text.index("residency: [GDPR]")
    policy.write_text(text[:first] + text[first:].replace("[GDPR]", "[GPDR]", 1))
    assert main(["validate", str(policy)]) == 0
    out = capsys.readouterr().out
    assert ("edge.nodes[0].residency: residency tag 'GPDR' (written once) looks like 'GDPR' "
            "(written 6 times): did you mean 'GDPR'?") in out
