"""The look every chart shares: colours per mode, axes with units, legends and event markers.

Legends sit under the plot area and event labels above it, so neither covers
a line; every axis names its quantity and unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simulator.report.fmt import usd
from simulator.scenario import Event

Figure = Any  # plotly ships no type hints

MODE_COLORS = {"edge": "#2a9d8f", "edge-degraded": "#8ab17d", "split": "#e9a23b",
               "cloud": "#4c78a8", "refused": "#d62728"}
SERIES_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6",
                 "#9d755d", "#bab0ac", "#eeca3b")
LIMIT_COLORS = {"soft": "#e9a23b", "hard": "#d62728"}
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
TIME_AXIS = "simulated time (s)"
CHAR_PX = 6.5  # average width of a label character at the annotation font size


def plain(text: str) -> str:
    """`text` safe for a chart label: Plotly reads two $ signs as TeX, an entity shows one."""
    return text.replace("$", "&#36;")


def mode_color(mode: str) -> str:
    """The colour of a mode, the same in every chart and in the summary's swatches."""
    return MODE_COLORS.get(mode, "#7f7f7f")


def layout(fig: Figure, *, height: int, x_title: str | None = None,
           y_title: str | None = None, top: int = 30, legend: bool = True) -> Figure:
    """Common layout: white template, readable font, legend under the x axis title."""
    bottom = 60 + (44 if legend else 0)
    plot_px = max(height - top - bottom, 100)
    fig.update_layout(
        template="plotly_white", height=height, font={"family": FONT, "size": 13},
        margin={"l": 70, "r": 24, "t": top, "b": bottom},
        showlegend=legend, hovermode="x unified",
        # Legend y is a fraction of the plot area: place it a fixed 58 px below the axis.
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -58 / plot_px,
                "yanchor": "top", "title": {"text": ""}, "traceorder": "normal"},
    )
    if x_title is not None:
        fig.update_xaxes(title_text=x_title, showline=True, linecolor="#888", ticks="outside")
    if y_title is not None:
        fig.update_yaxes(title_text=y_title, showline=True, linecolor="#888", ticks="outside")
    return fig


def event_label(event: Event) -> str:
    """A short, readable label for a scenario event."""
    a = event.args
    if event.kind in ("node_down", "node_up"):
        return f"{a['node']} {'down' if event.kind == 'node_down' else 'up'}"
    if event.kind == "throttle":
        return f"{a['node']} throttled to {float(a['compute_score']):g}×"
    if event.kind == "spot_price":
        return "spot " + ", ".join(f"{k} ${float(v):.2f}/h" for k, v in a["prices"].items())
    if event.kind == "partition":
        return f"{a['pool']} cut off {float(a['for_s']):g} s"
    if event.kind == "budget":
        return f"{a['tenant']} limit → {usd(float(a['limit_usd']))}"
    if event.kind == "preempt":
        return (f"{a['pool']} spot notice: {100 * float(a['fraction']):g} % reclaimed in "
                f"{float(a['notice_s']):g} s")
    return event.kind


def label_spans(xs: Sequence[float], labels: Sequence[str], span: float,
                plot_px: float = 560.0) -> list[tuple[float, float]]:
    """Where each label lies on the time axis: right of its event, or left of it near the end."""
    per_px = span / plot_px if span > 0 else 1.0
    out = []
    for x, text in zip(xs, labels, strict=True):
        width = (len(text) * CHAR_PX + 12) * per_px
        out.append((x - width, x) if x > 0.55 * span else (x, x + width))
    return out


def label_rows(spans: Sequence[tuple[float, float]]) -> list[int]:
    """Row (0 = lowest) for each label so that no two in a row overlap."""
    taken: list[list[tuple[float, float]]] = []
    rows = []
    for lo, hi in spans:
        row = next((i for i, used in enumerate(taken)
                    if all(hi < a or lo > b for a, b in used)), len(taken))
        if row == len(taken):
            taken.append([])
        taken[row].append((lo, hi))
        rows.append(row)
    return rows


def add_events(fig: Figure, events: Sequence[Event], span: float, *,
               labels: bool = True, grid: bool = False, plot_px: float = 560.0) -> int:
    """Dotted lines at each event (shaded while a partition lasts); labels above the plot.

    `grid`: the figure has subplots, and every one gets the lines. `plot_px`: about how wide
    the plot area is drawn, to keep labels apart. Returns how many label rows were used, so
    the caller can make room at the top.
    """
    where: dict[str, Any] = {"row": "all", "col": "all"} if grid else {}
    shown = [e for e in events if 0 <= e.at_s <= span]
    for e in shown:
        fig.add_vline(x=e.at_s, line={"color": "#555", "width": 1.2, "dash": "dot"},
                      **where)
        if e.kind == "partition":
            end = min(span, e.at_s + float(e.args["for_s"]))
            fig.add_vrect(x0=e.at_s, x1=end, fillcolor="#d62728", opacity=0.07, line_width=0,
                          **where)
    if not labels or not shown:
        return 0
    texts = [event_label(e) for e in shown]
    spans = label_spans([e.at_s for e in shown], texts, span, plot_px)
    rows = label_rows(spans)
    for e, text, row, (lo, _) in zip(shown, texts, rows, spans, strict=True):
        fig.add_annotation(x=e.at_s, xref="x", y=1.0, yref="paper", yanchor="bottom",
                           xanchor="left" if lo == e.at_s else "right", yshift=4 + 18 * row,
                           text=plain(text), showarrow=False, font={"size": 11, "color": "#333"},
                           bgcolor="rgba(255,255,255,0.85)")
    return max(rows) + 1
