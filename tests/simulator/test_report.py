"""The HTML report: numbers with units, exact per-node load, charts scaled to their data."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from router.cli import main
from simulator.report import ReportInput, html_report, summarize
from simulator.report.binned import nice_step, peak_inflight
from simulator.report.charts import latency_cdf, mode_mix
from simulator.report.compare import PANELS, baselines
from simulator.report.fleet import budget_burn, node_load
from simulator.report.fmt import number, summary_html, usd
from simulator.report.style import label_rows, label_spans
from simulator.run import Result
from simulator.scenario import Event, Keys, Partition, Scenario, Traffic, TrafficClass
from tests.core.factory import node, pool
from tests.core.factory import policy as make_policy

POLICY = make_policy([node(1, slots=4), node(2, slots=6)], [pool()], limit=10.0)
ROWS = [  # t, mode, node, latency ms, cost usd
    (0.5, "edge", "n0001", 20.0, 0.001), (1.0, "edge", "n0001", 1500.0, 0.001),
    (1.2, "edge", "n0002", 30.0, 0.001), (2.5, "cloud", "cloud", 140.0, 0.5),
    (3.0, "split", "n0002", 90.0, 1.5), (4.0, "refused", "", float("nan"), 0.0),
    (9.5, "edge-degraded", "n0001", 45.0, 0.001),
]


def result(rows: list[tuple[float, str, str, float, float]] = ROWS,
           limits: dict[str, list[tuple[float, float]]] | None = None) -> Result:
    """A hand-made run: every request of tenant 'default' with a 100 ms SLO."""
    r = Result("hybrid-router")
    for i, (t, mode, where, ms, usd_) in enumerate(rows):
        r.t.append(t)
        r.key.append(f"k{i}")
        r.tenant.append("default")
        r.cls.append("c")
        r.mode.append(mode)
        r.node.append(where)
        r.latency_ms.append(ms)
        r.cost_usd.append(usd_)
        r.slo_ms.append(100.0)
    r.limits = limits if limits is not None else {"default": [(0.0, 10.0)]}
    return r


EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"


def scenario(events: tuple[Event, ...] = ()) -> Scenario:
    """A scenario holding only what the report reads: classes (SLOs) and events."""
    cls = TrafficClass(name="card-auth", slo_ms=100.0, payload_kb=8)
    return Scenario(policy=str(EXAMPLE), duration_s=10.0, seed=1,
                    traffic=Traffic(rate_rps=((0.0, 1.0),), keys=Keys(count=10, zipf_s=1.1),
                                    classes=(cls,)), events=events)


def report_input(r: Result | None = None, *, events: tuple[Event, ...] = (),
                 comparison: tuple[dict[str, object], ...] = (),
                 caps: dict[str, list[tuple[float, float]]] | None = None) -> ReportInput:
    """A ReportInput over the hand-made run (or `r`)."""
    r = r if r is not None else result()
    return ReportInput(r, summarize(r, POLICY), POLICY, scenario(events), comparison, caps)


@pytest.mark.parametrize(("value", "text"), [
    (0.0, "$0.00"), (0.000911, "$0.000911"), (2.1, "$2.10"), (1234.5, "$1,234"),
    (0.00000123, "$1.23e-06"),
], ids=["zero", "fraction-of-a-cent", "dollars", "thousands", "tiny"])
def test_usd_shows_the_digits_the_amount_needs(value: float, text: str) -> None:
    assert usd(value) == text


@pytest.mark.parametrize(("kind", "value", "text"), [
    ("count", 34642, "34,642"), ("pct", 0.9691, "96.9 %"), ("ms", 1000.0, "1,000.0 ms"),
    ("ms", 518702.9, "518.7 s"),
    ("seconds", 6.214, "6.21 s"), ("ratio", 3.429, "3.43"), ("text", "edge", "edge"),
], ids=["count", "pct", "ms", "long-ms", "seconds", "ratio", "text"])
def test_numbers_carry_their_unit(kind: str, value: object, text: str) -> None:
    assert number(kind, value) == text


def test_summary_renders_nested_values_as_tables_not_json() -> None:
    html = summary_html({"requests": 1200, "mode_counts": {"edge": 900, "cloud": 300},
                         "latency_ms": {"p50": 12.04, "p95": 80.0, "p99": 120.0},
                         "brand_new_usd": 0.25})
    assert "{" not in html and '"' not in html  # no JSON anywhere
    assert re.search(r"edge</th><td class='num'>900</td><td class='num'>75.0 %", html)
    assert "<th scope='row'>p95</th><td class='num'>80.0 ms</td>" in html
    assert "1,200" in html
    assert "brand new usd" in html and "$0.25" in html  # a key the table does not know yet


@pytest.mark.parametrize(("raw", "step"), [(0.09, 0.1), (1.0, 1.0), (7.0, 10.0), (13.0, 20.0),
                                           (45.0, 50.0)])
def test_time_bins_have_readable_widths(raw: float, step: float) -> None:
    assert nice_step(raw) == pytest.approx(step)


def test_peak_in_flight_is_exact_per_bin() -> None:
    start = np.array([0.0, 0.5, 1.2, 2.0])
    end = np.array([1.5, 0.7, 3.0, 2.0])  # the last one ends as it starts: never in flight
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert peak_inflight(start, end, edges).tolist() == [2.0, 2.0, 1.0, 0.0]


def test_an_end_at_the_same_instant_as_a_start_frees_the_slot_first() -> None:
    start, end = np.array([0.0, 1.0]), np.array([1.0, 2.0])
    assert peak_inflight(start, end, np.array([0.0, 2.0])).tolist() == [1.0]


def test_latency_cdf_is_log_scaled_with_one_line_per_mode_and_slo() -> None:
    fig = latency_cdf(report_input())
    assert fig.layout.xaxis.type == "log"
    assert "ms" in fig.layout.xaxis.title.text and "%" in fig.layout.yaxis.title.text
    names = [t.name for t in fig.data]
    assert {n.split(" ")[0] for n in names} == {"edge", "edge-degraded", "split", "cloud", "SLO"}
    assert "SLO 100 ms (card-auth)" in names
    assert not any(n.startswith("refused") for n in names)


def test_mode_mix_marks_each_event_inside_the_run_and_labels_it() -> None:
    events = (Event(at_s=2.0, node_down="n0001"),
              Event(at_s=3.0, partition=Partition(pool="cloud", for_s=2.0)),
              Event(at_s=99.0, node_up="n0001"))
    data = report_input(events=events)
    fig = mode_mix(data)
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted(s.x0 for s in lines) == [2.0, 3.0]
    assert [s.x0 for s in fig.layout.shapes if s.type == "rect"] == [3.0]
    assert {a.text for a in fig.layout.annotations} == {"n0001 down", "cloud cut off 2 s"}
    page = html_report(data)
    assert "events after the run's last request, not drawn: n0001 up at 99 s" in page


def test_event_labels_never_overlap_and_stay_inside_the_chart() -> None:
    xs, texts = [10.0, 12.0, 40.0, 95.0], ["edge-a down", "spot gpu $6.00/h", "x", "edge-a up"]
    spans = label_spans(xs, texts, 100.0)
    assert spans[0][0] == 10.0 and spans[3][1] == 95.0  # late labels extend to the left
    assert all(hi <= 100.0 for _, hi in spans)
    rows = label_rows(spans)
    assert rows[0] != rows[1]  # 2 s apart: the first label would cover the second
    for i, j in itertools.combinations(range(4), 2):
        if rows[i] == rows[j]:
            assert spans[i][1] < spans[j][0] or spans[j][1] < spans[i][0]


def test_budget_axis_is_scaled_to_the_spend_and_far_limits_are_named() -> None:
    near = result(limits={"default": [(0.0, 5.0)]})
    fig = budget_burn(report_input(near))  # $2 of cloud spend against a $5 limit: drawn
    names = {t.name for t in fig.data}
    assert {"cloud spend", "soft limit", "hard limit"} <= names
    assert 5.0 <= fig.layout.yaxis.range[1] < 6.0
    far = result(limits={"default": [(0.0, 1000.0)]})
    fig = budget_burn(report_input(far))
    assert {t.name for t in fig.data} == {"cloud spend"}
    assert 2.0 <= fig.layout.yaxis.range[1] < 3.0
    notes = " ".join(a.text for a in fig.layout.annotations)
    assert "off this scale" in notes and "&#36;800" in notes and "&#36;1,000" in notes


def test_node_load_draws_slots_and_the_routers_cap_only_when_recorded() -> None:
    fig = node_load(report_input())
    assert {t.name for t in fig.data} == {"peak in flight", "slots"}
    slots = [max(t.y) for t in fig.data if t.name == "slots"]
    assert slots == [4, 6]
    r = result()
    r.caps = {"n0001": [(0.0, 2.0), (5.0, 3.0)]}
    r.loads = {"n0001": [(0.0, 1.0), (5.0, 3.0)]}
    fig = node_load(report_input(r, caps=r.caps))
    # the load and the cap of a node are the same statistic: samples at the same instants
    cap = [t for t in fig.data if t.name == "router's bounded-load cap (sampled)"]
    load = [t for t in fig.data if t.name == "in flight (sampled at the same instants)"]
    assert len(cap) == len(load) == 1
    assert (list(cap[0].x), list(cap[0].y)) == ([0.0, 5.0], [2.0, 3.0])
    assert (list(load[0].x), list(load[0].y)) == ([0.0, 5.0], [1.0, 3.0])
    assert {t.name for t in fig.data} >= {"peak in flight", "slots"}  # the node without caps


def test_many_nodes_read_as_one_heatmap() -> None:
    nodes = [node(i, slots=2) for i in range(20)]
    pol = make_policy(nodes, [pool()])
    rows = [(0.1 * i, "edge", f"n{i:04d}", 50.0, 0.001) for i in range(20)]
    r = result(rows)
    fig = node_load(ReportInput(r, summarize(r, pol), pol))
    assert [t.type for t in fig.data] == ["heatmap"]
    assert len(fig.data[0].y) == 20


def test_baselines_chart_needs_other_runs_and_puts_this_run_first() -> None:
    assert baselines(report_input()) is None
    other = dict(summarize(result(), POLICY), router="cloud-only")
    fig = baselines(report_input(comparison=(other,)))
    panels = len(PANELS)  # p95, SLO, cloud spend, total cost
    assert panels == 4
    assert [list(t.y) for t in fig.data] == [["hybrid-router", "cloud-only"]] * panels
    assert [t.marker.color[0] for t in fig.data] == ["#2a9d8f"] * panels


def test_page_is_self_contained_and_readable_without_a_network() -> None:
    page = html_report(report_input())
    assert "<script src" not in page and "<link" not in page
    assert page.count(get_plotlyjs()) == 1  # the whole of plotly.js, inlined once
    for chart in ("latency-cdf", "mode-mix", "node-load", "budget-burn", "cost-rate"):
        assert f'id="chart-{chart}"' in page


def test_an_empty_run_still_gives_a_page_that_says_so() -> None:
    r = result([])
    page = html_report(ReportInput(r, summarize(r, POLICY), POLICY))
    assert "No request was served." in page
    assert "No tenant spent anything on cloud" in page


def test_out_that_is_a_file_is_refused_before_running(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    out.write_text("keep me")
    scenario_file = Path(__file__).resolve().parents[2] / "simulator/scenarios/fintech.yaml"
    assert main(["simulate", "--scenario", str(scenario_file), "--requests", "10",
                 "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_report_json_round_trips_the_summary(tmp_path: Path) -> None:
    scenario_file = Path(__file__).resolve().parents[2] / "simulator/scenarios/fintech.yaml"
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(scenario_file), "--requests", "500",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    assert f"{report['requests']:,} requests" in page
    assert number("pct", report["slo_attainment"]) in page
