"""Charts per node and per tenant: load against slots (and the router's cap), budget burn.

A node's load is drawn as the same statistic as what it is read against: with
the router's caps recorded (sampled every 10 s), the node's in-flight count at
those same instants; without them, the peak in flight per time bin counted from
the requests themselves (a request holds its node from arrival until it ends,
queueing included), against its slots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from simulator.report.data import ReportInput
from simulator.report.fmt import usd
from simulator.report.style import (
    LIMIT_COLORS,
    SERIES_COLORS,
    TIME_AXIS,
    Figure,
    add_events,
    layout,
    plain,
)

SMALL_MULTIPLES = 16  # beyond this many nodes, one heatmap reads better than a grid
COLS = 4
NEAR = 4.0  # a budget limit within this factor of the spend is drawn; further ones are noted


def _cap_trace(points: Sequence[tuple[float, float]], show: bool) -> go.Scatter:
    return go.Scatter(x=[t for t, _ in points], y=[c for _, c in points], mode="lines",
                      line={"color": SERIES_COLORS[1], "width": 1.8},
                      name="router's bounded-load cap (sampled)", legendgroup="cap",
                      showlegend=show, hovertemplate="cap %{y:g}<extra></extra>")


def _sampled_load(points: Sequence[tuple[float, float]], show: bool) -> go.Scatter:
    return go.Scatter(x=[t for t, _ in points], y=[v for _, v in points], mode="lines",
                      line={"color": SERIES_COLORS[0], "width": 1.6},
                      name="in flight (sampled at the same instants)", legendgroup="load",
                      showlegend=show, hovertemplate="%{y:g} in flight<extra></extra>")


def node_load(data: ReportInput) -> Figure | None:
    """Per node: in flight against the router's cap at the same sampled instants (peak in
    flight per bin when no caps were recorded), and its slots."""
    nodes = data.policy.nodes
    if not nodes or not data.binned.count:
        return None
    peaks = data.binned.node_peaks
    if len(nodes) > SMALL_MULTIPLES:
        return _load_heatmap(data, peaks)
    cols = min(COLS, len(nodes))
    rows = math.ceil(len(nodes) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes=True, vertical_spacing=0.28 / rows,
                        horizontal_spacing=0.06,
                        subplot_titles=[f"{n.id} ({n.slots} slots)" for n in nodes])
    x = data.bins[:-1]
    caps = data.caps or {}
    loads = data.result.loads if caps else {}
    for i, n in enumerate(nodes):
        r, c = i // cols + 1, i % cols + 1
        first = i == 0
        fig.add_trace(go.Scatter(x=[0, data.span], y=[n.slots, n.slots], mode="lines",
                                 name="slots", line={"color": "#d62728", "dash": "dash"},
                                 legendgroup="slots", showlegend=first,
                                 hovertemplate="%{y} slots<extra></extra>"), row=r, col=c)
        if caps.get(n.id) and loads.get(n.id):
            fig.add_trace(_sampled_load(loads[n.id], first), row=r, col=c)
            fig.add_trace(_cap_trace(caps[n.id], not any(
                caps.get(m.id) for m in nodes[:i])), row=r, col=c)
            top = max([float(n.slots)] + [v for _, v in caps[n.id]]
                      + [v for _, v in loads[n.id]])
        else:
            fig.add_trace(go.Scatter(x=x, y=peaks[n.id], mode="lines", name="peak in flight",
                                     line={"color": SERIES_COLORS[0], "width": 1.6,
                                           "shape": "hv"},
                                     legendgroup="peak", showlegend=first,
                                     hovertemplate="%{y:g} in flight<extra></extra>"),
                          row=r, col=c)
            top = max(float(peaks[n.id].max(initial=0)), n.slots)
        fig.update_yaxes(range=[0, top * 1.15], row=r, col=c)
    add_events(fig, data.events, data.span, labels=False, grid=True)
    layout(fig, height=150 + 220 * rows, top=64)  # room for the toolbar
    fig.update_xaxes(range=[0, data.span], showline=True, linecolor="#888")
    fig.update_xaxes(title_text=TIME_AXIS, row=rows)
    fig.update_yaxes(title_text="requests", col=1)
    fig.update_layout(hovermode="x")
    return fig


def _load_heatmap(data: ReportInput, peaks: Mapping[str, np.ndarray]) -> Figure:
    nodes = data.policy.nodes
    z = np.array([peaks[n.id] / n.slots for n in nodes])
    fig = go.Figure(go.Heatmap(
        x=data.bins[:-1] + data.bin_width / 2, y=[n.id for n in nodes], z=z, zmin=0,
        zmax=max(1.0, float(z.max(initial=0))), colorscale="YlOrRd",
        colorbar={"title": {"text": "peak in flight / slots", "side": "right"}},
        hovertemplate="%{y} at %{x:g} s: %{z:.2f} × slots<extra></extra>"))
    rows = add_events(fig, data.events, data.span)  # spaced for a half-width cell too
    layout(fig, height=160 + 14 * len(nodes), x_title=TIME_AXIS, y_title="node", legend=False,
           top=30 + 18 * rows)
    return fig


def _limit_trace(limits: Sequence[tuple[float, float]], fraction: float, span: float,
                 kind: str, show: bool) -> go.Scatter:
    xs = [t for t, _ in limits] + [span]
    ys = [v * fraction for _, v in limits] + [limits[-1][1] * fraction]
    return go.Scatter(x=xs, y=ys, mode="lines", name=f"{kind} limit", legendgroup=kind,
                      showlegend=show, line={"color": LIMIT_COLORS[kind], "dash": "dash",
                                             "shape": "hv", "width": 1.6},
                      hovertemplate=f"{kind} limit $%{{y:,.4g}}<extra></extra>")


def tenants_to_show(data: ReportInput) -> list[str]:
    """Tenants with cloud spend in the run, the biggest spenders first (at most six)."""
    spend = data.binned.tenant_spend
    return sorted((t for t, v in spend.items() if v > 0), key=lambda t: -spend[t])[:6]


def _tenant_panel(fig: Figure, data: ReportInput, tenant: str, at: dict[str, int],
                  in_legend: set[str]) -> str:
    """Draw one tenant's spend and nearby limits at row/col `at`; returns the panel title."""
    per_bin = data.binned.tenant_cloud_bins.get(tenant, np.zeros(len(data.bins) - 1))
    cum = np.concatenate([[0.0], np.cumsum(per_bin)])
    fig.add_trace(go.Scatter(x=data.bins, y=cum, mode="lines", name="cloud spend",
                             legendgroup="spend", showlegend="spend" not in in_legend,
                             line={"color": SERIES_COLORS[0], "width": 2.2},
                             hovertemplate="spent $%{y:,.4g}<extra></extra>"), **at)
    in_legend.add("spend")
    spent = float(cum[-1])
    top, title, far = spent * 1.25, f"<b>{tenant}</b><br>{usd(spent)} spent", []
    limits = data.result.limits.get(tenant)
    if limits:
        soft, hard = data.policy.budgets.fractions(tenant)
        ends = [t for t, _ in limits[1:]] + [data.span]
        for kind, frac in (("soft", soft), ("hard", hard)):
            near = [v * frac for _, v in limits if v * frac <= NEAR * spent]
            if near:  # near enough to read against the spend: draw it (clipped elsewhere)
                fig.add_trace(_limit_trace(limits, frac, data.span, kind,
                                           kind not in in_legend), **at)
                in_legend.add(kind)
                top = max(top, max(near) * 1.08)
            far += [f"{kind} limit {usd(v * frac)}"
                    + (f" ({t:g}–{end:g} s)" if len(limits) > 1 else "")
                    for (t, v), end in zip(limits, ends, strict=True) if v * frac > NEAR * spent]
        hard_now = limits[-1][1] * hard
        if hard_now:
            title += f"<br>of {usd(hard_now)} hard ({100 * spent / hard_now:.2g} %)"
    # short lines of title and one far limit per line: side-by-side panels are a third of
    # the page wide, and one long line ran into the next panel's
    fig.update_yaxes(range=[0, top or 1.0], tickprefix="$", **at)
    if far:
        fig.add_annotation(text=plain("<br>".join(["off this scale:", *far])), xref="x domain",
                           yref="y domain", x=0.02, y=0.98, xanchor="left", yanchor="top",
                           align="left", bgcolor="rgba(255,255,255,0.85)", showarrow=False,
                           font={"size": 11, "color": "#555"}, **at)
    return title


def budget_burn(data: ReportInput) -> Figure | None:
    """Each tenant's cumulative cloud spend against its soft and hard limits."""
    tenants = tenants_to_show(data)
    if not tenants:
        return None
    cols = min(3, len(tenants))
    rows = math.ceil(len(tenants) / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.09,
                        vertical_spacing=0.3 / rows, subplot_titles=[" "] * len(tenants))
    in_legend: set[str] = set()
    titles = [_tenant_panel(fig, data, tenant, {"row": i // cols + 1, "col": i % cols + 1},
                            in_legend) for i, tenant in enumerate(tenants)]
    for i, title in enumerate(titles):  # the subplot titles are the first annotations
        fig.layout.annotations[i].text = plain(title)
    add_events(fig, data.events, data.span, labels=False, grid=True)
    layout(fig, height=180 + 300 * rows, top=104)
    fig.update_xaxes(title_text=TIME_AXIS, range=[0, data.span], showline=True, linecolor="#888")
    fig.update_yaxes(title_text="cloud spend (USD)", col=1)
    fig.update_layout(hovermode="x")
    return fig
