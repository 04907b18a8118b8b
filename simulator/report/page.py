"""The HTML report: one self-contained page, charts drawn with Plotly, readable offline.

Why Plotly: the page is read in a browser, where hovering reads exact values
(a node's peak at an event, a percentile off the CDF), a drag zooms into a
minute of a long run and a legend click hides the series in the way; the
plotly.js bundle is inlined once, so the file opens with no network and
renders the same on any machine. Matplotlib's SVG would be static, and
Vega-Lite would need its JavaScript bundled by hand.

Charts are registered in CHARTS in the order they appear; each builder takes
the `ReportInput` and returns a figure, or None when the run has nothing to
show for it (no cloud spend, no other runs). Charts over time with many
panels take a full row; the latency CDF and the mode mix sit side by side.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plotly.offline import get_plotlyjs

from simulator.report import charts, compare, fleet, replaypage, verdict
from simulator.report.data import ReportInput
from simulator.report.fmt import MODE_ORDER, comparison_html, summary_html
from simulator.report.style import FONT, Figure, event_label, mode_color

CONFIG = {"displaylogo": False, "displayModeBar": "hover", "responsive": True, "scrollZoom": False,
          "toImageButtonOptions": {"format": "png", "scale": 2}}


@dataclass(frozen=True)
class Chart:
    """One chart of the page: where it goes, what it is called and how to read it."""

    id: str
    title: str
    caption: str
    build: Callable[[ReportInput], Figure | None]
    empty: str = ""  # said instead of the chart when it has nothing to show
    wide: bool = True  # a full row of the grid, or half of one


CHARTS: tuple[Chart, ...] = (
    Chart("latency-cdf", "Latency per mode",
          "For each mode, the share of its requests answered within the latency on the x axis "
          "(log scale); the red lines are the SLOs of the scenario's classes.",
          charts.latency_cdf, "No request was served.", wide=False),
    Chart("mode-mix", "Mode mix over time",
          "Where the requests of each time bin went; dotted lines mark the scenario's events "
          "(shaded while a pool is cut off).", charts.mode_mix, wide=False),
    Chart("node-load", "Load per edge node",
          "Inference requests (edge and edge-degraded, queued ones included) in flight on each "
          "node and the router's bounded-load cap (the largest any request class would give the "
          "node), both sampled at the same instants every 10 s, against its slots; without "
          "caps, the peak in flight per time bin. Splits hold feature slots, counted apart, "
          "and are not drawn.",
          fleet.node_load),
    Chart("budget-burn", "Cloud spend per tenant against its budget",
          "Cumulative cloud and split spend (what budgets count) against the soft and hard "
          "limits; a limit far above the spend is named, not drawn, so the spend stays legible.",
          fleet.budget_burn, "No tenant spent anything on cloud or split in this run."),
    Chart("cost-rate", "Cost over time",
          "What the run cost per minute: the fixed part (the owned edge fleet and reserved "
          "capacity, paid whether used or not), then the variable part by mode — the edge "
          "nodes' marginal cost per inference, what the pools bill for split and cloud (by "
          "pool when several bill).", charts.cost_rate),
)
BASELINES_CHART = Chart(
    "baselines", "The same traffic through each router",
    "This run (green), the other policies compared (blue) and the baselines (grey), on the "
    "same arrivals and events.", compare.baselines)

REPLAY_CHARTS = (
    Chart("replay-modes", "Mode mix: production and candidate",
          "Share of the replayed requests in each mode, as production decided them (logged) "
          "and as the candidate policy decided them in the simulated world.",
          lambda d: replaypage.mode_mix(d.trace or {}), wide=False),
    Chart("replay-nodes", "Requests per node or pool: production and candidate",
          "Share of the replayed requests on each edge node (edge modes and split) or cloud "
          "pool (cloud).", lambda d: replaypage.node_mix(d.trace or {}), wide=False),
)

CSS = """
body{font-family:%(font)s;margin:0;background:#f6f7f9;color:#1d2430}
main{max-width:1400px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:26px;margin:4px 0}h2{font-size:20px;margin:28px 0 10px}
h3{font-size:16px;margin:0 0 2px}.sub{color:#555;margin:2px 0 0}
.card,figure.chart{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 14px;
 margin:0}
figcaption p{color:#555;font-size:13px;margin:2px 0 6px}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
.wide{grid-column:1/-1}
table{border-collapse:collapse;font-size:14px}th,td{padding:4px 10px;text-align:left}
thead th{border-bottom:2px solid #ccd;font-weight:600}tbody tr{border-bottom:1px solid #eceef1}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.meaning{color:#555;font-size:13px}tbody th{font-weight:500;white-space:nowrap}
.summary-grid{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,1fr);gap:16px}
.nested-col table{margin-bottom:14px;min-width:260px}caption{text-align:left;font-weight:600;
 padding:0 0 4px}
table.compare{width:100%%;font-size:13px}.card{overflow-x:auto}
table.compare tr.main{background:#e8f5f2;font-weight:600}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px}
.note{color:#555;font-size:13px}
table.delta{margin:0 0 12px;min-width:560px}td.verdict{font-weight:600}
td.better,td.held{color:#1a7f37}td.worse,td.broken{color:#c62828}td.same{color:#555}
.runs{display:grid;gap:16px;grid-template-columns:repeat(var(--runs),minmax(0,1fr))}
.run-head{font-weight:600;margin:0 0 4px}
"""


def _swatches() -> str:
    return "".join(f".mode-{m}{{background:{mode_color(m)}}}" for m in MODE_ORDER)


def _chart_html(chart: Chart, data: ReportInput, run: str = "", wide: bool | None = None) -> str:
    """One chart as a figure; `run` names whose run it is when runs stand side by side."""
    fig = chart.build(data)
    title = f"{chart.title}: {run}" if run else chart.title
    head = (f"<figcaption><h3>{html.escape(title)}</h3>"
            f"<p>{html.escape(chart.caption)}</p></figcaption>")
    cls = " wide" if (chart.wide if wide is None else wide) else ""
    if fig is None:
        if not chart.empty:
            return ""
        return (f"<figure class='chart{cls}' data-chart='{chart.id}' "
                f"data-empty='1'>{head}"
                f"<p class='note'>{html.escape(chart.empty)}</p></figure>")
    suffix = f"-{_slug(run)}" if run else ""
    div = fig.to_html(full_html=False, include_plotlyjs=False,
                      div_id=f"chart-{chart.id}{suffix}", config=CONFIG, default_width="100%",
                      default_height=f"{int(fig.layout.height or 420)}px")
    return f"<figure class='chart{cls}' data-chart='{chart.id}'>{head}{div}</figure>"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def _charts(data: ReportInput) -> str:
    """Every chart; with candidates, each chart of the current run beside each candidate's."""
    if not data.candidates:
        return f"<div class='grid'>{''.join(_chart_html(c, data) for c in CHARTS)}</div>"
    runs = [("current", data)] + [(str(c.summary.get("router", "candidate")), data.of(c))
                                  for c in data.candidates]
    rows = []
    for chart in CHARTS:
        cells = [_chart_html(chart, d, name, wide=False) for name, d in runs]
        if any(cells):
            rows.append("".join(cell or "<div></div>" for cell in cells))
    return (f"<div class='runs' style='--runs:{len(runs)}'>" + "".join(rows) + "</div>")


def _header(data: ReportInput) -> str:
    s = data.scenario
    name = Path(s.file).name if s is not None else "run"
    bits = [f"router <b>{html.escape(str(data.summary.get('router', data.result.router)))}</b>"]
    if s is not None:
        policy = os.path.normpath(s.policy)  # scenarios name it relative to themselves
        bits.append(f"policy {html.escape(policy)} (version {data.policy.digest})")
        bits.append(f"seed {s.seed}")
    bits.append(f"{data.binned.count:,} requests over {data.span:,.1f} s of simulated time")
    return (f"<header><h1>What-if report: {html.escape(name)}</h1>"
            f"<p class='sub'>{' · '.join(bits)}</p></header>")


def _late(data: ReportInput) -> str:
    if not data.late_events:
        return ""
    items = ", ".join(f"{html.escape(event_label(e))} at {e.at_s:g} s" for e in data.late_events)
    return (f"<p class='note'>Scenario events after the run's last request, not drawn: {items}."
            "</p>")


def _replay(data: ReportInput) -> list[str]:
    """A trace replay's header and its production-versus-candidate section."""
    info = (data.trace or {}).get("trace", {})
    files = ", ".join(os.path.basename(f) for f in info.get("files", []))
    sub = (f"{info.get('replayed', 0):,} requests over {info.get('span_s', 0):,.1f} s from "
           f"{files} through {info.get('candidate_policy', '')} (version "
           f"{info.get('candidate_version', '')}), seed {info.get('seed', '')} · "
           f"{info.get('parse_refused', 0):,} refused by production as malformed, not replayed"
           f" · {info.get('skipped_lines', 0):,} unreadable lines skipped")
    charts_ = "".join(_chart_html(c, data) for c in REPLAY_CHARTS)
    return [f"<header><h1>Trace replay: {html.escape(files)}</h1>"
            f"<p class='sub'>{html.escape(sub)}</p></header>",
            "<h2>Production and candidate</h2><div class='card'>",
            replaypage.side_by_side_html(data.trace or {}), "</div>",
            f"<div class='grid' style='margin-top:16px'>{charts_}</div>",
            "<h2>The candidate's simulated run</h2>"]


def html_report(data: ReportInput, extra: str = "") -> str:
    """The whole page as one string: inlined plotly.js, summary, comparison, charts.

    `extra`: HTML placed after the comparison (the live twin's fidelity section).
    """
    parts = _replay(data) if data.trace else [_header(data)]
    parts += ["<h2>Summary</h2>", summary_html(data.summary)]
    if data.candidates:
        parts += ["<h2>Should I ship it? Candidate minus current</h2><div class='card'>",
                  verdict.delta_html(data.runs), "</div>"]
    if data.comparison:
        parts += ["<h2>Side by side</h2><div class='card'>", comparison_html(data.runs),
                  "</div><div class='grid' style='margin-top:16px'>",
                  _chart_html(BASELINES_CHART, data), "</div>"]
    parts.append(extra)
    parts += ["<h2>Charts</h2>", _late(data), _charts(data)]
    title = html.escape(f"What-if: {data.summary.get('router', '')}")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>{CSS % {'font': FONT}}{_swatches()}</style>"
            f"<script>{get_plotlyjs()}</script></head><body><main>"
            + "".join(parts) + "</main></body></html>")
