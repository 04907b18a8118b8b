"""The live twin's HTML page: the simulator's report, the live run beside it, and fidelity.

The page is the simulator's own (`simulator.report.html_report`, its charts drawn
from the simulated run) with the live run as the compared run, plus a fidelity
section: each mode's and node's share on both sides, and the latency CDFs of the
simulator, of the live world (time spent at the emulated upstream) and of the live
client (the proxy hop included).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from router.core.policy import Policy
from simulator.report import ReportInput, html_report
from simulator.report.page import CONFIG
from simulator.report.style import SERIES_COLORS, Figure, layout
from simulator.run import Result
from simulator.scenario import Scenario

SIDES = (("simulator", SERIES_COLORS[0]), ("live", SERIES_COLORS[1]))


def _shares(counts: Mapping[str, int], n: int) -> dict[str, float]:
    return {k: 100.0 * v / max(n, 1) for k, v in counts.items()}


def share_chart(doc: Mapping[str, Any]) -> Figure:
    """Share of requests per mode and per node or pool, simulator and live side by side."""
    n = int(doc["requests"])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7], horizontal_spacing=0.08,
                        subplot_titles=("per mode", "per node or pool"))
    for col, key in ((1, "mode_counts"), (2, "node_counts")):
        names = sorted(set(doc["sim"][key]) | set(doc["live"][key]))
        for (label, color), part in zip(SIDES, ("sim", "live"), strict=True):
            shares = _shares(doc[part][key], n)
            values = [shares.get(x, 0.0) for x in names]
            fig.add_trace(go.Bar(x=names, y=values, name=label, marker={"color": color},
                                 showlegend=col == 1, legendgroup=label,
                                 hovertemplate=f"{label}: %{{x}} %{{y:.1f}} %<extra></extra>"),
                          row=1, col=col)
    layout(fig, height=420, y_title="share of requests (%)", top=40)
    fig.update_layout(barmode="group", hovermode="closest")
    return fig


def latency_chart(sim: Result, live: Result, upstream: list[float]) -> Figure | None:
    """Latency CDFs: simulator, live world (upstream time), live client (end to end)."""
    fig = go.Figure()
    levels = np.linspace(0.001, 0.999, 400)
    series = (("simulator", sim.latency_ms, SERIES_COLORS[0], "solid"),
              ("live, at the upstream (the world)", upstream, SERIES_COLORS[1], "dash"),
              ("live, at the client (with Envoy and the router)", live.latency_ms,
               SERIES_COLORS[1], "solid"))
    for name, values, color, dash in series:
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr) & (arr > 0)]
        if not len(arr):
            continue
        fig.add_trace(go.Scatter(x=np.quantile(arr, levels), y=100 * levels, mode="lines",
                                 name=name, line={"color": color, "dash": dash, "width": 2.2},
                                 hovertemplate=f"{name}: %{{y:.1f}} % within %{{x:,.1f}} ms"
                                               "<extra></extra>"))
    if not fig.data:
        return None
    layout(fig, height=420, x_title="latency (ms, log scale)",
           y_title="requests answered within (%)")
    fig.update_xaxes(type="log")
    fig.update_layout(hovermode="closest")
    return fig


def _table(doc: Mapping[str, Any]) -> str:
    n = int(doc["requests"])
    rows = []
    for title, key, diffs in (("mode", "mode_counts", "mode_share_diff_points"),
                              ("node or pool", "node_counts", "node_share_diff_points")):
        sim, live = _shares(doc["sim"][key], n), _shares(doc["live"][key], n)
        for name, diff in doc["fidelity"][diffs].items():
            rows.append(f"<tr><td>{title}</td><th>{html.escape(name)}</th>"
                        f"<td class='num'>{sim.get(name, 0.0):.1f} %</td>"
                        f"<td class='num'>{live.get(name, 0.0):.1f} %</td>"
                        f"<td class='num'>{diff:+.1f}</td></tr>")
    return ("<table><thead><tr><th></th><th>name</th><th>simulator</th><th>live</th>"
            "<th>live − sim (points)</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _figure(fig: Figure | None, chart_id: str, title: str, caption: str) -> str:
    if fig is None:
        return ""
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{chart_id}",
                      config=CONFIG, default_width="100%", default_height="420px")
    return (f"<figure class='chart' data-chart='{chart_id}'><figcaption>"
            f"<h3>{html.escape(title)}</h3><p>{html.escape(caption)}</p></figcaption>"
            f"{div}</figure>")


def _notes(doc: Mapping[str, Any]) -> str:
    f, live = doc["fidelity"], doc["live"]
    ratio, up = f["latency_ratio"], f["upstream_latency_ratio"]
    goal = f["goal"]

    def r(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    return (f"<p class='note'>Largest share difference: {f['max_mode_diff_points']:.1f} points "
            f"by mode, {f['max_node_diff_points']:.1f} by node (goal ≤ "
            f"{goal['shares_within_points']:g}: {'met' if goal['shares_met'] else 'not met'}). "
            f"p50 latency live / simulator: {r(up['p50'])} at the upstream (goal within "
            f"{100 * goal['p50_within']:.0f} %: {'met' if goal['upstream_p50_met'] else 'not met'}"
            f"), {r(ratio['p50'])} at the client, whose latency includes the proxy hop "
            f"(p50 {live['proxy_overhead_ms']['p50']:.1f} ms: Envoy, the router's ext_proc "
            f"round trip, the HTTP client). Load generator lateness p99: "
            f"{live['send_lag_ms']['p99']:.1f} ms; fail-opens: {live['fail_open']}; "
            f"errors: {live['errors']}.</p>")


def twin_html(sim: Result, live: Result, upstream: list[float], doc: Mapping[str, Any],
              policy: Policy, scenario: Scenario) -> str:
    """The whole page (module docstring); `upstream`: each live request's time in the world."""
    section = ("<h2>Simulator vs live stack</h2><div class='card'>" + _table(doc)
               + _notes(doc) + "</div><div class='grid' style='margin-top:16px'>"
               + _figure(share_chart(doc), "twin-shares", "Where requests went",
                         "Share of all requests per mode and per node or pool (cloud requests "
                         "count for their pool), in the simulator and in the live stack.")
               + _figure(latency_chart(sim, live, upstream), "twin-latency",
                         "Latency, simulated and live",
                         "Share of served requests answered within x ms: the simulator; the "
                         "live world (time spent at the emulated upstream); the live client "
                         "(the same plus Envoy and the router).")
               + "</div>")
    data = ReportInput(sim, doc["sim"], policy, scenario, (doc["live"],), sim.caps or None)
    return html_report(data, extra=section)
