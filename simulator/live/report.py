"""The live twin's report: the live run as a `Result`, both sides' figures, their fidelity.

`report.json` holds `sim` and `live` (each: `mode_counts`, `node_counts`, `latency_ms`
percentiles, the fixed, variable and total costs, and the simulator's other summary keys) and
`fidelity`.
Shares are of all requests of the run (the same arrivals on both sides), in
percentage points. Latency is compared twice: `latency_ratio` is the client's
end-to-end latency live over the simulator's, and `upstream_latency_ratio` the time
requests spent in the emulated world (what the simulator models) live over the
simulator's; the difference between the live client's and the world's latency is
the proxy hop (Envoy, the router's ext_proc round trip, the HTTP client), reported
apart as `live.proxy_overhead_ms`, never folded into either side. How late the
world's own timers fired (`live.timer_lateness_ms`: a busy event loop wakes a request
after its service time has passed) is part of the live world's latency and reported
too, so a world ratio above 1 on a busy machine can be told from a model that is off.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from router.core.policy import Policy
from simulator.live.load import Recorded
from simulator.report.summary import summarize
from simulator.routers import edge_cost
from simulator.run import Result
from simulator.scenario import Scenario

GOAL_SHARE_POINTS = 5.0  # issue #13's goal: per-mode and per-node shares within 5 points
GOAL_P50_RATIO = 0.10  # and p50 latency within 10 %


def live_result(sim: Result, rec: Recorded, policy: Policy, wall_s: float) -> Result:
    """The live run with the simulator's columns (same arrivals, so t, key, class are shared)."""
    n = len(sim.t)
    costs = {nd.id: edge_cost(nd, policy) for nd in policy.nodes}
    cloud = [c if m == "cloud" else max(0.0, c - costs.get(nd, 0.0)) if m == "split" else 0.0
             for m, nd, c in zip(rec.mode, rec.node, rec.cost_usd, strict=True)]
    return Result(
        "live", t=sim.t, key=sim.key, tenant=sim.tenant, cls=sim.cls, mode=list(rec.mode),
        node=list(rec.node), latency_ms=list(rec.latency_ms), cost_usd=list(rec.cost_usd),
        slo_ms=sim.slo_ms, quality=list(rec.quality), fill=[None] * n, cloud_usd=cloud,
        warm=list(rec.warm), pool=list(rec.pool), limits=sim.limits, slots=sim.slots,
        event_times=sim.event_times, settle_s=sim.settle_s, wall_seconds=wall_s)


def _pcts(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if not len(arr):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in (50, 95, 99)}


def side(r: Result, policy: Policy) -> dict[str, Any]:
    """One side's figures: the simulator's summary plus requests per node or pool."""
    out = summarize(r, policy)
    out["node_counts"] = dict(sorted(Counter(x for x in r.node if x).items()))
    return out


def live_side(r: Result, rec: Recorded, policy: Policy) -> dict[str, Any]:
    """The live side: `side` plus what only a live run has (module docstring)."""
    out = side(r, policy)
    answered = [i for i, u in enumerate(rec.upstream_ms) if math.isfinite(u)]
    overhead = [rec.latency_ms[i] - rec.upstream_ms[i] for i in answered]
    out["upstream_latency_ms"] = _pcts([rec.upstream_ms[i] for i in answered])
    out["proxy_overhead_ms"] = _pcts(overhead)
    out["send_lag_ms"] = _pcts(rec.lag_ms)
    out["timer_lateness_ms"] = _pcts(rec.late_ms)
    out["fail_open"] = sum(1 for m in rec.mode if m == "fail-open")
    out["errors"] = sum(1 for m in rec.mode if m == "error")
    out["status_counts"] = {str(k): v for k, v in sorted(Counter(rec.status).items())}
    return out


def gateway_side(rec: Recorded, shares: list[float], events: list[dict[str, Any]],
                 counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """What a run through several gateways adds: per gateway its share and what it served,
    the down / up events as they happened, and the nodes' own concurrency counts."""
    n, total = len(rec.gateway), sum(shares) or 1.0
    per = []
    for g, share in enumerate(shares):
        mine = [i for i, x in enumerate(rec.gateway) if x == g]
        per.append({"configured_share": round(share / total, 4), "requests": len(mine),
                    "served_share": round(len(mine) / max(n, 1), 4),
                    "mode_counts": dict(sorted(Counter(rec.mode[i] for i in mine).items()))})
    return {"gateways": per, "gateway_events": events, "node_concurrency": counts,
            "over_slots": sum(c["over_slots"] for c in counts.values())}


def _share_diffs(sim: dict[str, int], live: dict[str, int], n: int) -> dict[str, float]:
    keys = sorted(set(sim) | set(live))
    return {k: round(100.0 * (live.get(k, 0) - sim.get(k, 0)) / max(n, 1), 2) for k in keys}


def _ratios(live: dict[str, float], sim: dict[str, float]) -> dict[str, float | None]:
    return {q: round(live[q] / sim[q], 4) if sim.get(q) else None for q in ("p50", "p95", "p99")}


def fidelity(sim: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """How far the live run is from the simulator's (module docstring)."""
    n = int(sim["requests"])
    modes = _share_diffs(sim["mode_counts"], live["mode_counts"], n)
    nodes = _share_diffs(sim["node_counts"], live["node_counts"], n)
    upstream = _ratios(live["upstream_latency_ms"], sim["latency_ms"])
    p50 = upstream["p50"]
    worst_mode = max((abs(v) for v in modes.values()), default=0.0)
    worst_node = max((abs(v) for v in nodes.values()), default=0.0)
    return {
        "mode_share_diff_points": modes, "node_share_diff_points": nodes,
        "max_mode_diff_points": worst_mode, "max_node_diff_points": worst_node,
        "latency_ratio": _ratios(live["latency_ms"], sim["latency_ms"]),
        "upstream_latency_ratio": upstream,
        "goal": {"shares_within_points": GOAL_SHARE_POINTS, "p50_within": GOAL_P50_RATIO,
                 "shares_met": max(worst_mode, worst_node) <= GOAL_SHARE_POINTS,
                 "upstream_p50_met": p50 is not None and abs(p50 - 1.0) <= GOAL_P50_RATIO},
    }


def report(scenario: Scenario, sim: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The whole report.json."""
    return {"scenario": scenario.file, "seed": scenario.seed, "requests": sim["requests"],
            "sim": sim, "live": live, "fidelity": fidelity(sim, live)}
