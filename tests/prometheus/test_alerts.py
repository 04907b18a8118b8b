"""The shipped alert rules through Debian's promtool: they load, and each fires when it should."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from router.metrics import RouterMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yml")
PROMTOOL = shutil.which("promtool")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian's `prometheus` package; `make sysdeps` installs it)."""
    assert PROMTOOL, "promtool missing: run `make sysdeps` (apt-get install prometheus)"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_rules_and_the_compose_config_pass_promtool_checks() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout
    out = promtool("check", "config", str(CONFIG))  # also loads the rule file it names
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", str(UNIT_TESTS))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [c for t in cases for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    names = {str(r["alert"]) for r in rules()}
    assert fires == names and quiet == names
    wanted = {"HybridRouterBudgetSoftLimit", "HybridRouterBudgetHardLimit",
              "HybridRouterFeedStale", "HybridRouterFailOpen", "HybridRouterEventLoopLag",
              "HybridRouterStoreErrors", "HybridRouterErrors", "HybridRouterReloadErrors"}
    assert wanted <= names


def test_rules_read_only_series_the_router_exports() -> None:
    exported = {m.name for m in RouterMetrics().registry.collect()}
    used = {re.sub(r"_(bucket|sum|count|total)$", "", m)
            for r in rules() for m in re.findall(r"\brouter_[a-z_]+", str(r["expr"]))}
    assert used and used <= {re.sub(r"_total$", "", n) for n in exported}


@pytest.mark.parametrize(("expr", "problem"), [
    ("router_feed_age_seconds >", "parse error"),
    ("rate(router_refusals_total[5x])", "bad duration"),
], ids=["truncated", "bad-range"])
def test_a_broken_rule_is_refused_with_its_problem(tmp_path: Path, expr: str,
                                                   problem: str) -> None:
    bad = tmp_path / "alerts.yml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "Broken", "expr": expr}]}]}))
    out = promtool("check", "rules", str(bad))
    assert out.returncode != 0
    assert problem in (out.stdout + out.stderr).lower()
