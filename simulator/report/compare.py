"""The runs side by side: p95 latency, SLO attainment, cloud spend and total cost per router."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from simulator.baselines import BASELINES
from simulator.report.data import ReportInput
from simulator.report.fmt import number, usd
from simulator.report.style import SERIES_COLORS, Figure, layout, plain

PANELS: tuple[tuple[str, str], ...] = (
    ("p95 latency (ms)", "p95"),
    ("SLO attainment (%)", "slo"),
    ("cloud spend (USD)", "spend"),
    ("total cost, fixed + variable (USD)", "cost"),
)


def _value(report: Mapping[str, Any], what: str) -> float:
    if what == "p95":
        return float(report.get("latency_ms", {}).get("p95", 0.0))
    if what == "slo":
        return 100 * float(report.get("slo_attainment", 0.0))
    if what == "cost":
        return float(report.get("total_cost_usd", 0.0))
    return float(report.get("cloud_spend_usd", 0.0))


def _text(value: float, what: str) -> str:
    if what == "p95":
        return number("ms", value)
    if what == "slo":
        return f"{value:.1f} %"
    return usd(value)


def _range(values: list[float], what: str) -> dict[str, Any]:
    """Axis settings: room for the labels; latency on a log axis when runs differ widely."""
    if what == "slo":
        return {"range": [0, 118]}
    top = max(values, default=0.0) or 1.0
    low = min((v for v in values if v > 0), default=top)
    if what == "p95" and top / low > 20:
        # One baseline's seconds-long tail would flatten every other bar on a linear axis.
        return {"type": "log", "dtick": 1, "title_text": "p95 latency (ms, log scale)",
                "range": [math.log10(low / 2), math.log10(top * 6)]}
    return {"range": [0, top * 1.35]}


def _color(i: int, name: str) -> str:
    if i == 0:
        return "#2a9d8f"  # the run this report is about
    return "#b0b0b0" if name in BASELINES else SERIES_COLORS[0]


def baselines(data: ReportInput) -> Figure | None:
    """One horizontal bar per run in each panel (PANELS), the main run on top."""
    runs = data.runs
    if len(runs) < 2:
        return None
    names = [str(r.get("router", f"run {i}")) for i, r in enumerate(runs)]
    colors = [_color(i, n) for i, n in enumerate(names)]
    fig = make_subplots(rows=1, cols=len(PANELS), shared_yaxes=True, horizontal_spacing=0.05)
    for col, (title, what) in enumerate(PANELS, start=1):
        values = [_value(r, what) for r in runs]
        fig.add_trace(go.Bar(
            x=values, y=names, orientation="h", marker={"color": colors}, showlegend=False,
            text=[plain(_text(v, what)) for v in values], textposition="outside", cliponaxis=False,
            name=title, hovertemplate="%{y}: %{text}<extra>" + title + "</extra>"),
            row=1, col=col)
        fig.update_xaxes(**{"title_text": title, **_range(values, what)}, row=1, col=col)
    fig.update_xaxes(ticksuffix=" %", row=1, col=2)
    fig.update_xaxes(tickprefix="$", row=1, col=3)
    fig.update_xaxes(tickprefix="$", row=1, col=4)
    layout(fig, height=110 + 34 * len(runs), top=40, legend=False)
    fig.update_yaxes(autorange="reversed", ticks="")
    fig.update_layout(hovermode="closest", bargap=0.25)
    return fig
