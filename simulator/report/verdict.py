"""Should I ship this change? A candidate policy against the current one, goal by goal.

`versus` puts a compared policy's run beside the current one's on the four goals
an SRE judges a change by: SLO attainment, p95 latency, total cost (fixed and
variable) and the load bound (no pick over its cap). Each gets the difference
(candidate minus current) and a plain verdict: `better`, `worse` or `same` — a
difference inside the noise of one simulated run is `same` — and the load bound
`held` or `broken`. Baselines are not candidates and get none.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from simulator.report.fmt import number

SAME_SLO_POINTS = 0.1  # percentage points of SLO attainment
SAME_P95 = (0.5, 0.01)  # ms, and a share of the current p95: whichever is larger
SAME_COST = 0.005  # share of the current total cost


def _verdict(delta: float, same: float, lower_is_better: bool) -> str:
    if abs(delta) <= same:
        return "same"
    return "better" if (delta < 0) == lower_is_better else "worse"


def versus(current: Mapping[str, Any], candidate: Mapping[str, Any]) -> dict[str, Any]:
    """Candidate minus current per goal, with a verdict each (report.json `versus_current`)."""
    slo = 100.0 * (candidate["slo_attainment"] - current["slo_attainment"])
    p95_now = float(current["latency_ms"]["p95"])
    p95 = float(candidate["latency_ms"]["p95"]) - p95_now
    cost_now = float(current["total_cost_usd"])
    cost = float(candidate["total_cost_usd"]) - cost_now
    bound = candidate.get("max_load_over_cap")
    return {
        "slo_attainment_points": round(slo, 2),
        "p95_ms": round(p95, 2),
        "total_cost_usd": round(cost, 6),
        "total_cost_pct": round(100.0 * cost / cost_now, 2) if cost_now else None,
        "max_load_over_cap": bound,
        "verdict": {
            "slo": _verdict(slo, SAME_SLO_POINTS, lower_is_better=False),
            "p95": _verdict(p95, max(SAME_P95[0], SAME_P95[1] * p95_now), lower_is_better=True),
            "cost": _verdict(cost, SAME_COST * cost_now, lower_is_better=True),
            "load_bound": "held" if bound is None or bound <= 1.0 else "broken",
        },
    }


def _signed(value: float, unit: str) -> str:
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    size = abs(value)
    if unit == "usd":
        return sign + number("usd", size)
    return f"{sign}{size:,.1f}{unit}"


def rows(current: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """(goal, current, candidate, difference, verdict) for each goal."""
    v = candidate["versus_current"]
    said = v["verdict"]
    pct = v["total_cost_pct"]
    cost_delta = _signed(v["total_cost_usd"], "usd") + ("" if pct is None else
                                                        f" / {_signed(pct, ' %')}")
    return [
        ("SLO attainment", number("pct", current["slo_attainment"]),
         number("pct", candidate["slo_attainment"]),
         _signed(v["slo_attainment_points"], " pts"), said["slo"]),
        ("p95 latency", number("ms", current["latency_ms"]["p95"]),
         number("ms", candidate["latency_ms"]["p95"]), _signed(v["p95_ms"], " ms"), said["p95"]),
        ("total cost (fixed + variable)", number("usd", current["total_cost_usd"]),
         number("usd", candidate["total_cost_usd"]), cost_delta, said["cost"]),
        ("load bound (max load over cap ≤ 1)", number("ratio", current.get("max_load_over_cap")),
         number("ratio", v["max_load_over_cap"]), "", said["load_bound"]),
    ]


def delta_html(runs: Sequence[Mapping[str, Any]]) -> str:
    """One table per candidate: each goal, current, candidate, difference and verdict."""
    current = runs[0]
    out = []
    for cand in runs[1:]:
        if "versus_current" not in cand:
            continue
        body = "".join(
            f"<tr><th scope='row'>{html.escape(goal)}</th><td class='num'>{html.escape(a)}</td>"
            f"<td class='num'>{html.escape(b)}</td><td class='num'>{html.escape(d)}</td>"
            f"<td class='verdict {html.escape(said)}'>{html.escape(said)}</td></tr>"
            for goal, a, b, d, said in rows(current, cand))
        name = html.escape(str(cand.get("router", "candidate")))
        out.append(f"<table class='delta'><caption>{name} − current</caption><thead><tr>"
                   f"<th>goal</th><th>current</th><th>{name}</th><th>difference</th>"
                   f"<th>verdict</th></tr></thead><tbody>{body}</tbody></table>")
    return "".join(out)


def text(runs: Sequence[Mapping[str, Any]]) -> str:
    """The same verdicts as plain lines, for the terminal."""
    lines = []
    for cand in runs[1:]:
        if "versus_current" in cand:
            lines.append(f"{cand['router']} − current:")
            lines += [f"  {goal}: {a} → {b}{f' ({d})' if d else ''}: {said}"
                      for goal, a, b, d, said in rows(runs[0], cand)]
    return "\n".join(lines)
