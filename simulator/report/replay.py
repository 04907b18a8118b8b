"""A trace replay's report.json: production and the candidate side by side, and the differences.

Production's side is folded from the log as it streams (`simulator.tally`),
the candidate's from its requests as they end (`simulator.fold`), summarized by
`summarize` as a scenario run is; both give a key the same meaning. Production
has only what a log can say (COMPARED); the candidate, a simulated run, also
has the simulator's own keys (residency violations, max load over cap,
affinity and warm hits, ...).
"""

from __future__ import annotations

from typing import Any

from router.core.policy import Policy
from simulator.report.fmt import MODE_ORDER
from simulator.report.summary import summarize
from simulator.trace import Replay

COMPARED = ("requests", "mode_counts", "node_counts", "latency_ms", "slo_attainment",
            "fixed_cost_usd", "variable_cost_usd", "total_cost_usd", "cost_per_1k_requests_usd",
            "cloud_fraction", "split_fraction", "refused")


def candidate_side(rep: Replay, policy: Policy) -> dict[str, Any]:
    """The candidate's summary from its folded requests: every simulator key."""
    return {**summarize(rep.candidate, policy, rep.fold.totals()),
            "node_counts": rep.fold.node_counts()}


def _shares(counts: dict[str, int], n: int) -> dict[str, float]:
    return {k: 100.0 * v / n if n else 0.0 for k, v in counts.items()}


def _points(prod: dict[str, int], cand: dict[str, int], n: int,
            order: tuple[str, ...] = ()) -> dict[str, float]:
    """Per name, the candidate's share minus production's, in percentage points."""
    a, b = _shares(prod, n), _shares(cand, n)
    names = set(a) | set(b)
    ordered = [m for m in order if m in names] + sorted(names - set(order))
    return {m: round(b.get(m, 0.0) - a.get(m, 0.0), 2) for m in ordered}


def difference(prod: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
    """Candidate minus production: shares in points, cost in USD and percent, latency in ms."""
    n = prod["requests"]
    cost_p, cost_c = prod["total_cost_usd"], cand["total_cost_usd"]
    return {
        "mode_share_points": _points(prod["mode_counts"], cand["mode_counts"], n, MODE_ORDER),
        "node_share_points": _points(prod["node_counts"], cand["node_counts"], n),
        "cost_usd": round(cost_c - cost_p, 6),
        "cost_pct": round(100.0 * (cost_c / cost_p - 1.0), 2) if cost_p else None,
        "slo_attainment_points": round(100.0 * (cand["slo_attainment"]
                                                - prod["slo_attainment"]), 2),
        "latency_ms": {q: round(cand["latency_ms"][q] - prod["latency_ms"][q], 2)
                       for q in ("p50", "p95")},
        "cloud_fraction_points": round(100.0 * (cand["cloud_fraction"]
                                                - prod["cloud_fraction"]), 2),
        "refused": cand["refused"] - prod["refused"],
    }


def replay_report(rep: Replay, policy: Policy, policy_file: str, seed: int) -> dict[str, Any]:
    """report.json of `simulate --trace` (docs/reference.md, "Trace replay report")."""
    prod = rep.production.summary(policy)
    cand = candidate_side(rep, policy)
    fold = rep.fold
    return {
        "trace": {
            "files": [str(f) for f in rep.trace.files],
            "lines": rep.trace.kept,
            "skipped_lines": rep.trace.skipped,
            "outlier_lines": rep.trace.outliers,
            "before_window": rep.trace.before_window,
            "source": rep.trace.source,
            "joined": rep.trace.joined,
            "unmatched": rep.trace.unmatched,
            "late_lines": rep.trace.late,
            "production_failed": rep.failed,
            "parse_refused": rep.parse_refused,
            "replayed": fold.n,
            "span_s": round(fold.last_t - (rep.first_row_t or 0.0), 3) if fold.n else 0.0,
            "start_epoch_s": rep.start_epoch_s,
            "production_policies": sorted(rep.policies),
            "candidate_policy": policy_file,
            "candidate_version": policy.digest,
            "seed": seed,
        },
        "production": prod,
        "candidate": cand,
        "difference": difference(prod, cand),
    }
