"""The planner's report in a real browser: the frontier and the what-if charts drawn, a quiet
console, a screenshot."""

from __future__ import annotations

from pathlib import Path

from router.cli import main
from tests.simulator.test_plan import POLICY, SCENARIO, SPACE
from tests.simulator.test_report_chromium import PROBE, Plots, chromium, png_size


def test_plan_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "out"
    assert main(["plan", "--scenario", str(tmp_path / "scenario.yaml"), "--space",
                 str(tmp_path / "space.yaml"), "--slo", "0.5", "--trials", "3", "--out",
                 str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    probe = out / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    shot = tmp_path / "plan.png"
    dom, log = chromium(probe, tmp_path / "profile", shot)

    plots = Plots()
    plots.feed(dom)
    assert plots.svgs.get("frontier", 0) >= 1, log[-2000:]
    assert plots.traces["frontier"] >= 3  # Pareto points, today's policy, the recommended one
    for chart in ("latency-cdf-current", "latency-cdf-recommended", "mode-mix-recommended"):
        assert plots.svgs.get(chart, 0) >= 1, (chart, sorted(plots.svgs))
    assert "Pareto frontier" in dom and "Recommended against today" in dom
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert any("report-probe: loaded" in line for line in console), log[-2000:]
    assert [line for line in console if "report-probe: loaded" not in line] == []
    assert "Uncaught" not in log
    assert png_size(shot) == (1400, 3000) and shot.stat().st_size > 50_000
