"""The HTML report in a real browser: every chart drawn, nothing said on the console, a screenshot.

Debian's chromium runs headless on a copy of the report with a probe script
that logs one line when the page starts, so an empty console log proves the
page ran quietly rather than that logging was off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from router.cli import main
from tests.simulator.test_trace import write_log, write_policy

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
PROBE = "<script>console.log('report-probe: loaded')</script>"
POLICY = """\
version: 1
refresh_seconds: 2
slo: {default_latency_ms: 100, degraded_slack: 1.5}
edge:
  usd_per_inference: 0.001
  nodes:
    - {id: edge-a, address: "127.0.0.1:9101", slots: 4, residency: [EU], base_latency_ms: 20}
    - {id: edge-b, address: "127.0.0.1:9102", slots: 4, residency: [EU], base_latency_ms: 20}
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
duration_s: 20
seed: 4
traffic:
  rate_rps: 250
  keys: {count: 500, zipf_s: 1.1}
  classes:
    - {name: interactive, weight: 0.7, tenant: acme, residency: [EU], slo_ms: 80,
       degrade: true, payload_kb: 32}
    - {name: batch, weight: 0.3, tenant: acme, residency: [EU], slo_ms: 300,
       degrade: false, payload_kb: 128}
events:
  - {at_s: 5, node_down: edge-a}
  - {at_s: 8, spot_price: {gpu-spot: 6.0}}
  - {at_s: 10, partition: {pool: pool-eu, for_s: 3}}
  - {at_s: 14, budget: {tenant: acme, limit_usd: 0.01}}
  - {at_s: 16, node_up: edge-a}
"""
ALL_CHARTS = {"baselines", "latency-cdf", "mode-mix", "node-load", "budget-burn", "cost-rate"}


class Plots(HTMLParser):
    """Per chart div: how many Plotly SVG layers and drawn traces the DOM holds."""

    def __init__(self) -> None:
        """Start outside any chart."""
        super().__init__()
        self.current: str | None = None
        self.svgs: dict[str, int] = {}
        self.traces: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Attribute Plotly's SVG and trace groups to the chart they sit in."""
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div" and (a.get("id") or "").startswith("chart-"):
            if "js-plotly-plot" in classes:  # Plotly marks the div once it has drawn it
                self.current = str(a["id"])[len("chart-"):]
                self.svgs.setdefault(self.current, 0)
                self.traces.setdefault(self.current, 0)
        elif self.current is not None and tag == "svg" and "main-svg" in classes:
            self.svgs[self.current] += 1
        elif self.current is not None and tag == "g" and classes[:1] in (["trace"], ["hm"]):
            self.traces[self.current] += 1

    def handle_endtag(self, tag: str) -> None:
        """A chart ends with its figure."""
        if tag == "figure":
            self.current = None


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (and proof that it is a PNG)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def chromium(page: Path, profile: Path, shot: Path) -> tuple[str, str]:
    """Load `page` headless; returns (DOM after scripts ran, stderr log). Always stops it."""
    exe = shutil.which("chromium")
    assert exe, "Debian chromium is missing: `make sysdeps` installs it"
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
           "--v=0", "--hide-scrollbars", "--virtual-time-budget=30000",
           "--window-size=1400,3000", f"--screenshot={shot}", "--dump-dom", page.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:  # chromium's helpers share its process group: stop them all, whatever happened
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return out, err


def render(out: Path, tmp_path: Path, shot: Path) -> tuple[Plots, str, str]:
    """Load OUT/report.html, with the probe, in headless Chromium: (plots drawn, DOM, log)."""
    page = (out / "report.html").read_text(encoding="utf-8")
    probe = out / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dom, log = chromium(probe, tmp_path / "profile", shot)
    plots = Plots()
    plots.feed(dom)
    return plots, dom, log


def assert_quiet_console(log: str) -> None:
    """The probe said the page loaded, nothing else reached the console, nothing uncaught."""
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert any("report-probe: loaded" in line for line in console), log[-2000:]
    assert [line for line in console if "report-probe: loaded" not in line] == []
    assert "Uncaught" not in log


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(tmp_path / "scenario.yaml"), "--baselines",
                 "--out", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    drawn = set(re.findall(r"<figure class='chart[a-z ]*' data-chart='([a-z-]+)'>", page))
    assert drawn == ALL_CHARTS  # this run has something to show in every chart
    shot = tmp_path / "report.png"
    plots, dom, log = render(out, tmp_path, shot)
    assert set(plots.svgs) == ALL_CHARTS, log[-2000:]
    for chart in ALL_CHARTS:
        assert plots.svgs[chart] >= 1, chart
        assert plots.traces[chart] >= 1, chart
    assert "Latency per mode" in dom and "Cloud spend per tenant" in dom
    assert_quiet_console(log)
    assert png_size(shot) == (1400, 3000)
    assert shot.stat().st_size > 50_000  # a drawn page, not a blank one


def test_trace_replay_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    log = tmp_path / "requests.jsonl"
    write_log(log, policy, n=3000, rate=600.0)  # production overflows to the cloud
    candidate = write_policy(tmp_path / "no-b.yaml", drop="edge-b")
    out = tmp_path / "out"
    assert main(["simulate", "--trace", str(log), "--policy", str(candidate), "--out",
                 str(out)]) == 0
    shot = tmp_path / "replay.png"
    plots, dom, log_text = render(out, tmp_path, shot)
    for chart in ("replay-modes", "replay-nodes", "latency-cdf", "mode-mix"):
        assert plots.svgs.get(chart, 0) >= 1, (chart, log_text[-2000:])
    assert plots.traces["replay-modes"] == 2 and plots.traces["replay-nodes"] == 2
    assert "Trace replay: requests.jsonl" in dom and "candidate − production" in dom
    assert_quiet_console(log_text)
    assert png_size(shot) == (1400, 3000) and shot.stat().st_size > 50_000


def test_a_candidate_gets_its_own_charts_and_a_verdict_per_goal(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "scenario.yaml").write_text(SCENARIO)
    bigger = POLICY.replace(
        "    - {id: edge-b,", '    - {id: edge-c, address: "127.0.0.1:9103", slots: 8, '
        "residency: [EU], base_latency_ms: 20}\n    - {id: edge-b,")
    (tmp_path / "bigger.yaml").write_text(bigger)
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(tmp_path / "scenario.yaml"), "--compare",
                 str(tmp_path / "bigger.yaml"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["router"] for r in report["comparison"]] == ["bigger"]  # no baselines unasked
    said = report["comparison"][0]["versus_current"]["verdict"]
    assert set(said) == {"slo", "p95", "cost", "load_bound"}
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "edge-c" in page  # the node the candidate adds appears in its own charts
    assert page.count("<td class='verdict ") == 4
    plots, _, log = render(out, tmp_path, tmp_path / "report.png")
    # the current run's charts and the candidate's (which spent nothing on cloud: no burn)
    for chart in ALL_CHARTS - {"baselines", "budget-burn"}:
        assert {f"{chart}-current", f"{chart}-bigger"} <= set(plots.svgs), chart
        assert plots.traces[f"{chart}-bigger"] >= 1, chart
    assert "Uncaught" not in log
