"""The planner's report.html: the frontier first, then the recommended point's what-if.

The frontier chart puts every trial at (total cost per hour, SLO attainment): the
Pareto points coloured by their p95, the other trials grey, today's policy as a
star, the recommended point as a diamond and `--slo` as a dashed line. Below it
comes the same page `simulate --compare` writes for the recommended policy against
today's (verdict per goal, each run's charts side by side), so one file answers
both "what could I run?" and "what would change if I ran this?".
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from simulator.plan.search import Trial
from simulator.report.fmt import usd
from simulator.report.page import CONFIG
from simulator.report.style import Figure, layout, plain

TODAY = "#d62728"
PICKED = "#2a9d8f"


def _hover(t: Trial, readable: Mapping[str, Any]) -> str:
    cost, slo, p95 = t.objectives
    bits = [f"trial {t.number + 1}", plain(f"{usd(cost)}/h"), f"SLO {100 * slo:.2f} %",
            f"p95 {p95:,.1f} ms"]
    changes = _changes(readable)
    return "<br>".join(bits + ([html.escape(changes)] if changes else []))


def _changes(readable: Mapping[str, Any]) -> str:
    """A choice in a few words: what it adds, removes, reserves and sets."""
    out = [f"+{n} {k.split('#')[0]}" for k, n in readable.get("add_nodes", {}).items() if n]
    out += [f"-{n}" for n in readable.get("remove_nodes", [])]
    out += [f"{p}: {n} reserved" for p, n in readable.get("reserved_slots", {}).items() if n]
    out += [f"{k}={v:.3g}" for k, v in readable.get("knobs", {}).items()]
    return ", ".join(out)


def frontier(trials: Sequence[Trial], front: Sequence[Trial], readable: Mapping[int, Any],
             today: Mapping[str, Any], picked: Trial | None, slo: float) -> Figure:
    """Every trial at (cost per hour, SLO attainment); the frontier, today and the pick."""
    fig = go.Figure()
    on_front = {t.number for t in front}
    rest = [t for t in trials if t.ok and t.number not in on_front]
    fig.add_trace(go.Scatter(
        x=[t.objectives[0] for t in rest], y=[100 * t.objectives[1] for t in rest],
        mode="markers", name="other trials", marker={"color": "#b0b0b0", "size": 8},
        hovertext=[_hover(t, readable[t.number]) for t in rest], hoverinfo="text"))
    ordered = sorted(front, key=lambda t: t.objectives[0])
    fig.add_trace(go.Scatter(
        x=[t.objectives[0] for t in ordered], y=[100 * t.objectives[1] for t in ordered],
        mode="markers+lines", name="Pareto points (colour: p95 ms)",
        line={"color": "#9ecae1", "width": 1, "dash": "dot"},
        marker={"size": 11, "color": [t.objectives[2] for t in ordered],
                "colorscale": "Viridis", "showscale": True,
                "colorbar": {"title": {"text": "p95 ms"}, "thickness": 12}},
        hovertext=[_hover(t, readable[t.number]) for t in ordered], hoverinfo="text"))
    fig.add_trace(go.Scatter(
        x=[today["total_cost_per_hour_usd"]], y=[100 * today["slo_attainment"]],
        mode="markers", name="today's policy",
        marker={"symbol": "star", "size": 18, "color": TODAY},
        hovertext=[plain(f"today: {usd(today['total_cost_per_hour_usd'])}/h, SLO "
                         f"{100 * today['slo_attainment']:.2f} %, p95 "
                         f"{today['latency_ms']['p95']:,.1f} ms")], hoverinfo="text"))
    if picked is not None:
        fig.add_trace(go.Scatter(
            x=[picked.objectives[0]], y=[100 * picked.objectives[1]], mode="markers",
            name="recommended", marker={"symbol": "diamond-open", "size": 22, "color": PICKED,
                                        "line": {"width": 3}},
            hovertext=[_hover(picked, readable[picked.number])], hoverinfo="text"))
    fig.add_hline(y=100 * slo, line={"color": "#555", "dash": "dash", "width": 1},
                  annotation_text=f"--slo {100 * slo:g} %", annotation_position="top left")
    layout(fig, height=480, x_title="total cost per hour (USD)", y_title="SLO attainment (%)")
    fig.update_xaxes(tickprefix="$")
    fig.update_layout(hovermode="closest")
    return fig


def _row(t: Trial, readable: Mapping[str, Any], picked: Trial | None) -> str:
    cost, slo, p95 = t.objectives
    cls = " class='main'" if picked is not None and t.number == picked.number else ""
    return (f"<tr{cls}><th scope='row'>{t.number + 1}</th>"
            f"<td class='num'>{html.escape(usd(cost))}</td>"
            f"<td class='num'>{100 * slo:.2f} %</td><td class='num'>{p95:,.1f}</td>"
            f"<td>{html.escape(_changes(readable) or 'no change')}</td></tr>")


def frontier_html(trials: Sequence[Trial], front: Sequence[Trial],
                  readable: Mapping[int, Any], today: Mapping[str, Any],
                  picked: Trial | None, slo: float, verdict: str) -> str:
    """The planner's section: what it says, the frontier chart and its table."""
    fig = frontier(trials, front, readable, today, picked, slo)
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id="chart-frontier",
                      config=CONFIG, default_width="100%", default_height="480px")
    rows = "".join(_row(t, readable[t.number], picked)
                   for t in sorted(front, key=lambda t: t.objectives[0]))
    failed = sum(1 for t in trials if not t.ok)
    note = f" {failed} trials made no valid policy and did not run." if failed else ""
    return ("<header><h1>Plan</h1>"
            f"<p class='sub'>{len(trials)} trials, {len(front)} on the Pareto frontier.{note}"
            f"</p></header><h2>The answer</h2><div class='card'><p>{html.escape(verdict)}</p>"
            "</div><h2>Cost against SLO: every trial</h2><div class='grid'>"
            "<figure class='chart wide' data-chart='frontier'><figcaption><h3>Pareto frontier"
            "</h3><p>Each trial's total cost per hour (fixed fleet and reservations plus what "
            "the run spent) against its SLO attainment; hover a point for its p95 and what it "
            f"changes.</p></figcaption>{div}</figure></div>"
            "<h2>Pareto points</h2><div class='card'><table class='compare'><thead><tr>"
            "<th>trial</th><th>cost per hour</th><th>SLO attainment</th><th>p95 ms</th>"
            f"<th>changes from today's policy</th></tr></thead><tbody>{rows}</tbody></table>"
            "</div><h2>Recommended against today's policy</h2>")


def with_frontier(page: str, section: str) -> str:
    """`page` (a what-if report) with the planner's section first."""
    return page.replace("<main>", "<main>" + section, 1)
