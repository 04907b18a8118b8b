"""Simulator vs live stack: each shipped scenario's first minute, simulated and live.

    .venv/bin/python bench/twin.py [--seconds 60] [--only NAME ...]

Each scenario runs through the simulator and through real Envoy, the router and the
live world (`simulate --live`), one after the other; the table is the fidelity of
each. Real time: about (seconds + 15) per scenario.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
from router.policy.loader import load_policy
from simulator.live.run import count_of, run_twin
from simulator.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"
# What 2 shared cores drive live with room to spare (Envoy alone tops out near 1,500 req/s with
# a do-nothing ext_proc here; the load generator, the router and the world share the same cores).
MAX_RPS = 400.0
MAX_MB_S = 50.0


def offered(scenario: Scenario, count: int, seconds: float) -> tuple[float, float]:
    """(requests/s, MB/s of request bodies) of the first `seconds` of the scenario."""
    classes = scenario.classes
    total = sum(c.weight for c in classes)
    mean_kb = sum(c.weight * c.payload_kb for c in classes) / total
    rps = count / seconds
    return rps, rps * mean_kb * 1024 / 1e6


def _row(name: str, doc: dict[str, Any], seconds: float) -> str:
    sim, live, f = doc["sim"], doc["live"], doc["fidelity"]
    up, e2e = f["upstream_latency_ratio"], f["latency_ratio"]

    def r(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f}"

    worst = max(f["max_mode_diff_points"], f["max_node_diff_points"])
    met = "yes" if f["goal"]["shares_met"] and f["goal"]["upstream_p50_met"] else "no"
    return (f"| {name} | {doc['requests'] / seconds:,.0f} | {doc['requests']:,} | "
            f"{f['max_mode_diff_points']:.1f} | {f['max_node_diff_points']:.1f} | "
            f"{sim['latency_ms']['p50']:.1f} | {live['upstream_latency_ms']['p50']:.1f} | "
            f"{r(up['p50'])} | {r(up['p95'])} | {live['latency_ms']['p50']:.1f} | "
            f"{r(e2e['p50'])} | "
            f"{live['proxy_overhead_ms']['p50']:.1f} | {live['send_lag_ms']['p99']:.1f} | "
            f"{live['fail_open']} | {met} (worst share Δ {worst:.1f}) |")


def main() -> int:
    """Run every scenario's first minute both ways and record the fidelity."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME")
    args = parser.parse_args()
    rows = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        if args.only and path.stem not in args.only:
            continue
        scenario, _ = load_scenario(path)
        assert scenario is not None, path
        policy = load_policy(scenario.policy)
        count = count_of(scenario, None, args.seconds) or 0
        rps, mbs = offered(scenario, count, args.seconds)
        if rps > MAX_RPS or mbs > MAX_MB_S:
            rows.append(f"| {path.stem} | {rps:,.0f} | {count:,} | not run live: {rps:,.0f} "
                        f"req/s and {mbs:,.0f} MB/s of bodies are past what this machine "
                        f"drives ({MAX_RPS:g} req/s, {MAX_MB_S:g} MB/s) |" + " |" * 11)
            print(rows[-1], flush=True)
            continue
        state = Path(tempfile.mkdtemp(prefix=f"bench-twin-{path.stem}-"))
        twin = run_twin(scenario, policy, state, count)
        rows.append(_row(path.stem, twin.doc, args.seconds))
        print(rows[-1], flush=True)
    head = ("| scenario | req/s | requests | max mode Δ (points) | max node Δ (points) "
            "| sim p50 ms | live world p50 ms | world p50 ratio | world p95 ratio "
            "| live client p50 ms | client p50 ratio | proxy hop p50 ms | send lag p99 ms "
            "| fail-opens | goal met |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    write_section("twin", "Simulator vs live stack", head + "\n".join(rows) + NOTE)
    return 0


NOTE = """

Each row: the scenario's first minute of arrivals (the same times, classes and keys on both
sides), once through the simulator and once in real time through real Envoy (the project's
generated gateway config, xDS), `hybrid-router serve` and the live world: emulated nodes and
pools driven by the simulator's own world model (`simulator.physics`) on asyncio timers, its feed
pushed to the router every `refresh_seconds`, the scenario's events applied at their times.
Δ: live share minus simulated share of all requests, per mode and per node or pool, the largest
in absolute value. "world" latency is the time a request spent at the emulated upstream (what
the simulator models); "client" latency adds the proxy hop (Envoy, the router's ext_proc round
trip, the HTTP client), reported apart. Goal (issue #13): shares within 5 points, world p50
within 10 %. Send lag: how late the load generator sent its requests; fail-opens: requests
Envoy routed without the router's answer (its 200 ms deadline missed). Rows with a large send
lag or fail-opens measure the machine (2 shared cores carry the load generator, Envoy, the
router and the world) more than the simulator.

Reproduce: `.venv/bin/python bench/twin.py` (about 75 s of real time per scenario)."""


if __name__ == "__main__":
    sys.exit(main())
