"""Numbers as people read them: units, thousands separators, and HTML tables of a summary.

Every report.json key has a label, a kind (which says its unit) and a one-line
meaning here. A key this table does not know yet is still shown, its kind
guessed from its name, so a new report key never breaks the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

# key -> its one-line meaning. Its label is the key in words, less a `_usd` or `_ms`
# suffix (LABELS where that does not say it); its kind, which says the unit, comes from the
# suffix (KIND_SUFFIXES), else from its value. Kinds: text, count, pct (a 0..1 fraction),
# usd, ms, seconds, ratio.
KEYS: dict[str, str] = {
    "router": "which router made these decisions",
    "requests": "requests in the run",
    "slo_attainment": "requests answered within their SLO, refused ones counted as missed",
    "fixed_cost_per_hour_usd": "owned edge fleet and reserved cloud capacity, used or not",
    "fixed_cost_usd": "fixed cost per hour over the run's span",
    "variable_cost_usd": "what pools billed plus the edge's marginal cost per inference",
    "total_cost_usd": "fixed plus variable",
    "cost_per_1k_requests_usd": "total cost / requests × 1,000",
    "fleet_utilization": "share of the edge's slot-seconds busy over the run",
    "break_even_utilization": "fleet utilization from which owning the edge fleet costs less "
                              "than cloud-only (with --baselines)",
    "cloud_fraction": "requests sent to a cloud pool, whole or split",
    "cloud_spend_usd": "what pools billed: what tenant budgets count",
    "max_load_over_cap": "largest (in flight + 1) / cap at any pick, by the router's own caps",
    "affinity_hit_rate": "edge requests that ran on their key's home node",
    "warm_hit_rate": "edge inferences that found their key warm on the node",
    "split_fraction": "requests split between an edge node and a pool",
    "mode_flap": "largest change of the mode mix between two steady 10-s windows (0..1)",
    "quality_flap_rate": "a key's consecutive requests whose mode or quality changed",
    "residency_violations": "requests that ran somewhere breaking their residency (must be 0)",
    "budget_overrun_usd": "cloud spend past a tenant's hard limit (must be 0)",
    "refused": "requests refused (429 or 503)",
    "preempted_in_flight": "requests a spot reclaim ended unanswered (counted as SLO missed)",
    "wall_seconds": "real time the simulation took",
    "mode_counts": "where requests went",
    "latency_ms": "over served requests, refused ones left out",
}
LABELS = {"slo_attainment": "SLO attainment", "cost_per_1k_requests_usd": "cost per 1,000 requests",
          "fleet_utilization": "edge fleet utilization",
          "break_even_utilization": "break-even utilization", "cloud_fraction": "cloud share",
          "warm_hit_rate": "warm-key hit rate", "split_fraction": "split share",
          "wall_seconds": "wall time", "mode_counts": "requests per mode",
          "latency_ms": "latency percentiles"}
KIND_SUFFIXES = (("_usd", "usd"), ("_ms", "ms"), ("_seconds", "seconds"), ("_s", "seconds"),
                 ("_fraction", "pct"), ("_rate", "pct"), ("_share", "pct"),
                 ("_attainment", "pct"), ("_utilization", "pct"))
MODE_ORDER = ("edge", "edge-degraded", "split", "cloud", "refused")


def unit_kind(key: str) -> str | None:
    """The kind a key's unit suffix says, if it has one."""
    return next((kind for suffix, kind in KIND_SUFFIXES if key.endswith(suffix)), None)


def guess_kind(key: str, value: Any) -> str:
    """The kind of a key: from its unit suffix, else from its value."""
    kind = unit_kind(key)
    if kind is not None:
        return kind
    if isinstance(value, bool | str):
        return "text"
    return "count" if isinstance(value, int) else "ratio"


def usd(value: float) -> str:
    """US dollars with as many digits as the amount needs ($1,234, $12.35, $0.00123)."""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 100:
        return f"${value:,.0f}"
    if size >= 1 or size == 0:
        return f"${value:,.2f}"
    return f"${value:.3g}" if size >= 1e-4 else f"${value:.2e}"


def number(kind: str, value: Any) -> str:
    """`value` formatted with the unit of `kind`."""
    if value is None:
        return "–"
    if isinstance(value, bool | str) or kind == "text":
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return str(value)
    if kind == "count":
        return f"{v:,.0f}"
    if kind == "pct":
        return f"{100 * v:.1f} %" if abs(v) >= 0.001 or v == 0 else f"{100 * v:.3f} %"
    if kind == "usd":
        return usd(v)
    if kind == "ms":  # minutes of queueing read better in seconds than as 518,702.9 ms
        return f"{v:,.1f} ms" if abs(v) < 10_000 else f"{v / 1000:,.1f} s"
    if kind == "seconds":
        return f"{v:,.1f} s" if abs(v) >= 10 else f"{v:.2f} s"
    return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def label(key: str) -> str:
    """The human label of a report key."""
    if key in LABELS:
        return LABELS[key]
    if key in KEYS:  # the unit goes without saying; an unknown key shows as it is
        key = key.removesuffix("_usd").removesuffix("_ms")
    return key.replace("_", " ")


def meaning(key: str) -> str:
    """The one-line meaning of a report key ('' when unknown)."""
    return KEYS.get(key, "")


def _esc(value: object) -> str:
    return html.escape(str(value))


def scalar_table(summary: Mapping[str, Any]) -> str:
    """Every non-nested key as a row: label, formatted value, meaning."""
    rows = []
    for key, value in summary.items():
        if isinstance(value, Mapping | list):
            continue
        rows.append(f"<tr><th scope='row' title='{_esc(key)}'>{_esc(label(key))}</th>"
                    f"<td class='num'>{_esc(number(guess_kind(key, value), value))}</td>"
                    f"<td class='meaning'>{_esc(meaning(key))}</td></tr>")
    return ("<table class='summary'><thead><tr><th>measure</th><th>value</th><th>meaning</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def mode_table(counts: Mapping[str, int]) -> str:
    """Requests per mode with their share, in ladder order."""
    total = sum(counts.values()) or 1
    names = [m for m in MODE_ORDER if m in counts] + sorted(set(counts) - set(MODE_ORDER))
    rows = "".join(
        f"<tr><th scope='row'><span class='swatch mode-{_esc(m)}'></span>{_esc(m)}</th>"
        f"<td class='num'>{counts[m]:,}</td>"
        f"<td class='num'>{100 * counts[m] / total:.1f} %</td></tr>" for m in names)
    return ("<table class='nested'><caption>requests per mode</caption><thead><tr><th>mode</th>"
            "<th>requests</th><th>share</th></tr></thead><tbody>" + rows + "</tbody></table>")


def nested_table(key: str, value: Mapping[str, Any]) -> str:
    """A nested report value (latency_ms and the like) as its own two-column table."""
    if key == "mode_counts":
        return mode_table(value)
    known = unit_kind(key)
    rows = "".join(f"<tr><th scope='row'>{_esc(k)}</th><td class='num'>"
                   f"{_esc(number(known or guess_kind(str(k), v), v))}</td></tr>"
                   for k, v in value.items() if not isinstance(v, Mapping))
    return (f"<table class='nested'><caption title='{_esc(meaning(key))}'>{_esc(label(key))}"
            f"</caption><tbody>{rows}</tbody></table>")


def summary_html(summary: Mapping[str, Any]) -> str:
    """The run's summary: the scalar table beside one small table per nested key."""
    nested = "".join(nested_table(k, v) for k, v in summary.items() if isinstance(v, Mapping))
    return (f"<div class='summary-grid'><div>{scalar_table(summary)}</div>"
            f"<div class='nested-col'>{nested}</div></div>")


COMPARE_COLS: tuple[tuple[str, str, str], ...] = (
    ("p50", "p50 latency", "ms"), ("p95", "p95 latency", "ms"),
    ("slo_attainment", "SLO attainment", "pct"), ("cloud_fraction", "cloud share", "pct"),
    ("split_fraction", "split share", "pct"), ("cloud_spend_usd", "cloud spend", "usd"),
    ("fixed_cost_usd", "fixed cost", "usd"), ("variable_cost_usd", "variable cost", "usd"),
    ("total_cost_usd", "total cost", "usd"),
    ("cost_per_1k_requests_usd", "cost per 1,000 requests", "usd"),
    ("break_even_utilization", "break-even utilization", "pct"),
    ("max_load_over_cap", "max load over cap", "ratio"),
    ("affinity_hit_rate", "affinity hit rate", "pct"), ("warm_hit_rate", "warm hits", "pct"),
    ("mode_flap", "mode flap", "ratio"),
    ("residency_violations", "residency violations", "count"), ("refused", "refused", "count"),
)


def _col(report: Mapping[str, Any], key: str) -> Any:
    if key in ("p50", "p95", "p99"):
        return report.get("latency_ms", {}).get(key)
    return report.get(key)


def _vs(value: float | None, ref: float | None) -> str:
    if value is None or not ref:
        return "–"
    return f"{100 * (value / ref - 1):+.0f} %"


def comparison_html(reports: Sequence[Mapping[str, Any]]) -> str:
    """Every run side by side, with cloud share and spend relative to cloud-only."""
    ref = next((r for r in reports if r.get("router") == "cloud-only"), None)
    head = "".join(f"<th>{_esc(name)}</th>" for _, name, _ in COMPARE_COLS)
    if ref is not None:
        head += "<th>cloud share vs cloud-only</th><th>cloud spend vs cloud-only</th>"
    rows = []
    for i, r in enumerate(reports):
        cells = "".join(f"<td class='num'>{_esc(number(kind, _col(r, key)))}</td>"
                        for key, _, kind in COMPARE_COLS)
        if ref is not None:
            cells += (f"<td class='num'>{_vs(r.get('cloud_fraction'), ref.get('cloud_fraction'))}"
                      f"</td><td class='num'>"
                      f"{_vs(r.get('cloud_spend_usd'), ref.get('cloud_spend_usd'))}</td>")
        cls = " class='main'" if i == 0 else ""
        rows.append(f"<tr{cls}><th scope='row'>{_esc(r.get('router', '?'))}</th>{cells}</tr>")
    return ("<table class='compare'><thead><tr><th>router</th>" + head + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")
