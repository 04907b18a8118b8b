"""Charts of the run as a whole: latency CDF per mode, mode mix over time, cost over time."""

from __future__ import annotations

import itertools

import numpy as np
import plotly.graph_objects as go

from simulator.report.binned import LEVELS
from simulator.report.data import ReportInput
from simulator.report.fmt import MODE_ORDER
from simulator.report.style import TIME_AXIS, Figure, add_events, layout, mode_color


def _modes(data: ReportInput, *, refused: bool) -> list[str]:
    present = set(data.binned.modes)
    if not refused:
        present.discard("refused")
    return [m for m in MODE_ORDER if m in present] + sorted(present - set(MODE_ORDER))


def latency_cdf(data: ReportInput) -> Figure | None:
    """Share of each mode's requests answered within x ms, on a log axis, with the SLOs."""
    fig = go.Figure()
    lo, hi = np.inf, 0.0
    for m in _modes(data, refused=False):
        if m not in data.binned.latency_levels:
            continue
        count, q = data.binned.latency_levels[m]
        lo, hi = min(lo, float(q[0])), max(hi, float(q[-1]))
        fig.add_trace(go.Scatter(
            x=q, y=100 * LEVELS, mode="lines", name=f"{m} ({count:,} requests)",
            line={"color": mode_color(m), "width": 2.4},
            hovertemplate=f"{m}: %{{y:.1f}} % within %{{x:,.1f}} ms<extra></extra>"))
    if not fig.data:
        return None
    for (slo, classes), dash in zip(data.slos, itertools.cycle(("dash", "dot", "dashdot")),
                                    strict=False):
        # A trace, not a shape: it lands on data coordinates on the log axis and gets a
        # legend entry that names the classes it belongs to.
        fig.add_trace(go.Scatter(
            x=[slo, slo], y=[0, 100], mode="lines",
            name=f"SLO {slo:g} ms" + (f" ({classes})" if classes else ""),
            line={"color": "#d62728", "width": 1.8, "dash": dash},
            hovertemplate=f"SLO {slo:g} ms<extra></extra>"))
        lo, hi = min(lo, slo), max(hi, slo)
    error = data.binned.error  # a run folded as it went: read from histograms
    layout(fig, height=440, x_title="latency (ms, log scale" + (
        f"; each point within {100 * error:g} %)" if error else ")"),
           y_title="requests answered within x (%)")
    ticks = [m * 10.0 ** k for k in range(-3, 7) for m in (1, 2, 5)]
    fig.update_xaxes(type="log", range=[np.log10(lo / 1.3), np.log10(hi * 1.3)],
                     tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])
    fig.update_yaxes(range=[0, 101], ticksuffix=" %")
    fig.update_layout(hovermode="closest")
    return fig


def mode_mix(data: ReportInput) -> Figure | None:
    """Share of requests per mode in each time bin, stacked to 100 %, with the events."""
    if not data.binned.count:
        return None
    per_mode = data.binned.mode_bins
    total = np.sum([per_mode[m] for m in sorted(per_mode)], axis=0)
    x = data.bins[:-1] + data.bin_width / 2
    fig = go.Figure()
    for m in _modes(data, refused=True):
        counts = per_mode[m]
        share = np.divide(100 * counts, total, out=np.full_like(total, np.nan), where=total > 0)
        fig.add_trace(go.Scatter(
            x=x, y=share, mode="lines", name=m, stackgroup="mix",
            line={"color": mode_color(m), "width": 0.5}, fillcolor=mode_color(m),
            hovertemplate=f"{m}: %{{y:.1f}} %<extra></extra>"))
    rows = add_events(fig, data.events, data.span)
    layout(fig, height=440, x_title=f"{TIME_AXIS}, {data.bin_width:g}-s bins",
           y_title="share of requests (%)", top=30 + 18 * rows)
    fig.update_yaxes(range=[0, 100], ticksuffix=" %")
    fig.update_xaxes(range=[0, data.span])
    return fig


POOL_COLORS = ("#1f4e79", "#7b3294", "#008837", "#a6611a", "#c51b7d")  # none a mode's colour


def _cost_series(data: ReportInput) -> list[tuple[str, np.ndarray]]:
    """Variable cost per bin: per mode, and pure cloud per pool when several pools bill."""
    by = data.binned.cost_bins
    out = []
    for m in _modes(data, refused=False):
        parts = sorted(where for mode, where in by if mode == m)
        if len(parts) == 1:  # a mode as a whole (pure cloud too, when one pool billed)
            named = [(m, by[(m, parts[0])])]
        else:  # pure cloud by pool
            named = [(f"cloud · {where}", by[(m, where)]) for where in parts]
        out += [(name, usd) for name, usd in named if usd.any()]
    return out


def cost_rate(data: ReportInput) -> Figure | None:
    """What the run cost per minute: the fixed part, then the variable part stacked by mode
    (pure cloud by pool when several bill), with the events."""
    fixed = float(data.summary.get("fixed_cost_per_hour_usd") or 0.0) / 60.0
    if not data.binned.count or not (data.binned.cost_usd or fixed):
        return None
    x = data.bins[:-1] + data.bin_width / 2
    per_minute = 60.0 / data.bin_width
    fig = go.Figure()
    if fixed:
        fig.add_trace(go.Bar(x=x, y=np.full(len(x), fixed), name="fixed (owned, reserved)",
                             marker={"color": "#c9ced6"}, width=data.bin_width * 0.9,
                             hovertemplate="fixed: $%{y:,.4g}/min<extra></extra>"))
    shades = itertools.cycle(POOL_COLORS)
    for name, usd in _cost_series(data):
        color = mode_color(name) if "·" not in name else next(shades)
        fig.add_trace(go.Bar(x=x, y=usd * per_minute, name=name, marker={"color": color},
                             width=data.bin_width * 0.9,
                             hovertemplate=f"{name}: $%{{y:,.4g}}/min<extra></extra>"))
    # labels spaced for a half-width cell: with a candidate, every chart is drawn in one
    rows = add_events(fig, data.events, data.span)
    layout(fig, height=400, x_title=f"{TIME_AXIS}, {data.bin_width:g}-s bins",
           y_title="cost (USD per minute)", top=30 + 18 * rows)
    fig.update_layout(barmode="stack", bargap=0)
    fig.update_yaxes(tickprefix="$", rangemode="tozero")
    fig.update_xaxes(range=[0, data.span])
    return fig
