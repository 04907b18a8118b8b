"""The HTML report's trace-replay part: production and the candidate side by side.

A table of the compared numbers (production, candidate, candidate minus
production) and two grouped bar charts — the mode mix and the share per node
or pool — in the page's usual look. The candidate's own charts (latency CDF,
mode mix over time, load per node, ...) follow as in any simulator report.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

import plotly.graph_objects as go

from simulator.report.fmt import MODE_ORDER, number, usd
from simulator.report.style import Figure, layout, mode_color
from simulator.sketch import ALPHA

SIDES = (("production", "production (measured)", "#7f7f7f"),
         ("candidate", "candidate (modelled)", "#2a9d8f"))
# What production's numbers were measured by, per trace source: the page says it under the
# table, next to the candidate's being a model, so a latency difference is never read as two
# measurements.
MEASURED_BY = {
    "request_log": "the router's request log: its own decision, and the time from the request "
                   "headers reaching the router to the end of its stream. Envoy's answer is not "
                   "in it: a request an upstream failed (a 503 Envoy sent) counts as routed. "
                   "Replay with --access-log to take what the client got from Envoy",
    "request_log+access_log": "Envoy's access log, joined to the router's request log by "
                              "request id: the status and duration the client got",
    "access_log": "Envoy's access log alone: the status and duration the client got, the "
                  "decision from the route headers Envoy logged",
}
Row = tuple[str, Callable[[Mapping[str, Any]], Any], str, Callable[[Mapping[str, Any]], str]]


def _esc(value: object) -> str:
    return html.escape(str(value))


def _signed(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "usd":
        return ("+" if value >= 0 else "−") + usd(abs(value))
    if unit == "pts":
        return f"{value:+.1f} pts"
    if unit == "ms":
        return f"{value:+,.1f} ms"
    return f"{value:+,.0f}"


def _share(mode: str) -> Callable[[Mapping[str, Any]], float]:
    return lambda s: s["mode_counts"].get(mode, 0) / s["requests"] if s["requests"] else 0.0


def _share_delta(mode: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda d: _signed(d["mode_share_points"][mode], "pts")


def _rows(report: Mapping[str, Any]) -> list[Row]:
    d = report["difference"]
    modes = [m for m in MODE_ORDER if m in d["mode_share_points"]]
    cost_pct = d["cost_pct"]
    rows: list[Row] = [("requests replayed", lambda s: s["requests"], "count", lambda _: "")]
    rows += [(f"{m} share", _share(m), "pct", _share_delta(m)) for m in modes]
    rows += [
        ("p50 latency", lambda s: s["latency_ms"]["p50"], "ms",
         lambda dd: _signed(dd["latency_ms"]["p50"], "ms")),
        ("p95 latency", lambda s: s["latency_ms"]["p95"], "ms",
         lambda dd: _signed(dd["latency_ms"]["p95"], "ms")),
        ("SLO attainment", lambda s: s["slo_attainment"], "pct",
         lambda dd: _signed(dd["slo_attainment_points"], "pts")),
        ("total cost", lambda s: s["total_cost_usd"], "usd",
         lambda dd: _signed(dd["cost_usd"], "usd")
         + ("" if cost_pct is None else f" ({cost_pct:+.1f} %)")),
        ("cost per 1,000 requests", lambda s: s["cost_per_1k_requests_usd"], "usd", lambda _: ""),
        ("refused", lambda s: s["refused"], "count", lambda dd: _signed(dd["refused"], "")),
    ]
    return rows


def side_by_side_html(report: Mapping[str, Any]) -> str:
    """The compared numbers as one table: production, candidate, difference."""
    prod, cand, diff = report["production"], report["candidate"], report["difference"]
    body = "".join(
        f"<tr><th scope='row'>{_esc(name)}</th>"
        f"<td class='num'>{_esc(number(kind, get(prod)))}</td>"
        f"<td class='num'>{_esc(number(kind, get(cand)))}</td>"
        f"<td class='num'>{_esc(delta(diff))}</td></tr>"
        for name, get, kind, delta in _rows(report))
    info = report.get("trace", {})
    source = MEASURED_BY.get(info.get("source", "request_log"), "")
    unmatched = info.get("unmatched", 0)
    note = (f"<p class='note'><b>Production is measured</b> by {_esc(source)}"
            + (f" ({info.get('joined', 0):,} lines joined; {unmatched:,} without an access-log "
               "line keep the router's own)" if info.get("source") == "request_log+access_log"
               else "")
            + f"; {info.get('production_failed', 0):,} routed requests failed (5xx). Both "
            "sides' percentiles, and the candidate's latency CDF, come from requests streamed "
            "through log-bucketed histograms (no request is kept): within "
            f"{100 * ALPHA:g} % of the exact ones. <b>The "
            "candidate is modelled</b>: the simulator's world (latencies drawn from each node's "
            "and pool's profile, no real upstream), so a latency difference compares a "
            "measurement with a model.</p>")
    return ("<table class='compare replay'><thead><tr><th>measure</th>"
            f"<th>{SIDES[0][1]}</th><th>{SIDES[1][1]}</th><th>candidate − production</th>"
            f"</tr></thead><tbody>{body}</tbody></table>{note}")


def _bars(report: Mapping[str, Any], key: str, names: list[str], x_title: str) -> Figure:
    fig = go.Figure()
    for side, label, color in SIDES:
        s = report[side]
        n = s["requests"] or 1
        shares = [100.0 * s[key].get(m, 0) / n for m in names]
        fig.add_trace(go.Bar(
            x=names, y=shares, name=label, marker={"color": color},
            text=[f"{v:.1f} %" for v in shares], textposition="outside", cliponaxis=False,
            hovertemplate=f"{label}<br>%{{x}}: %{{y:.1f}} %<extra></extra>"))
    top = max((t for tr in fig.data for t in tr.y), default=0.0)
    layout(fig, height=400, x_title=x_title, y_title="share of replayed requests (%)")
    fig.update_yaxes(range=[0, max(top * 1.2, 5.0)], ticksuffix=" %")
    fig.update_layout(barmode="group", hovermode="closest", bargap=0.3)
    return fig


def mode_mix(report: Mapping[str, Any]) -> Figure:
    """Share of requests per mode, production beside the candidate."""
    seen = set(report["production"]["mode_counts"]) | set(report["candidate"]["mode_counts"])
    names = [m for m in MODE_ORDER if m in seen] + sorted(seen - set(MODE_ORDER))
    fig = _bars(report, "mode_counts", names, "mode")
    fig.update_xaxes(tickvals=names, ticktext=[
        f"<span style='color:{mode_color(m)}'>■</span> {m}" for m in names])
    return fig


def node_mix(report: Mapping[str, Any]) -> Figure:
    """Share of requests per edge node or cloud pool, production beside the candidate."""
    names = sorted(set(report["production"]["node_counts"])
                   | set(report["candidate"]["node_counts"]))
    return _bars(report, "node_counts", names, "edge node (edge modes, split) or cloud pool")
