"""The planner's report in a real browser: the frontier and the what-if charts drawn, a quiet
console, a screenshot."""

from __future__ import annotations

from pathlib import Path

from router.cli import main
from tests.simulator.test_plan import POLICY, SCENARIO, SPACE
from tests.simulator.test_report_chromium import assert_quiet_console, png_size, render


def test_plan_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "out"
    assert main(["plan", "--scenario", str(tmp_path / "scenario.yaml"), "--space",
                 str(tmp_path / "space.yaml"), "--slo", "0.5", "--trials", "3", "--out",
                 str(out)]) == 0
    shot = tmp_path / "plan.png"
    plots, dom, log = render(out, tmp_path, shot)
    assert plots.svgs.get("frontier", 0) >= 1, log[-2000:]
    assert plots.traces["frontier"] >= 3  # Pareto points, today's policy, the recommended one
    for chart in ("latency-cdf-current", "latency-cdf-recommended", "mode-mix-recommended"):
        assert plots.svgs.get(chart, 0) >= 1, (chart, sorted(plots.svgs))
    assert "Pareto frontier" in dom and "Recommended against today" in dom
    assert_quiet_console(log)
    assert png_size(shot) == (1400, 3000) and shot.stat().st_size > 50_000
