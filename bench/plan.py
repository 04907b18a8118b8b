"""The planner's goal runs: 40-trial plans on the camera and fintech scenarios.

    .venv/bin/python bench/plan.py [--trials 40] [--jobs 2] [--slo 0.95] [--requests N]
                                   [--only camera|fintech ...] [--out DIR]

Runs `hybrid-router plan` on each scenario with its shipped space
(simulator/scenarios/spaces/) and writes the planner section of docs/BENCHMARKS.md:
today's policy and the recommendation (cost per hour, SLO attainment, p95), whether
it is cheaper at the same or better SLO, the Pareto points and the wall time.
Each plan's files stay in DIR/NAME (default out/plan-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
from router.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "simulator" / "scenarios"
NAMES = ("camera", "fintech")


def plan(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], float, int]:
    """One plan: (pareto.json, wall seconds, exit code)."""
    out = Path(args.out) / name
    argv = ["plan", "--scenario", str(SCENARIOS / f"{name}.yaml"), "--space",
            str(SCENARIOS / "spaces" / f"{name}.yaml"), "--slo", str(args.slo), "--trials",
            str(args.trials), "--jobs", str(args.jobs), "--out", str(out)]
    if args.requests:
        argv += ["--requests", str(args.requests)]
    start = time.perf_counter()
    code = cli(argv)
    wall = time.perf_counter() - start
    return json.loads((out / "pareto.json").read_text()), wall, code


def _cells(point: dict[str, Any] | None) -> str:
    if point is None:
        return "– | – | –"
    return (f"${point['total_cost_per_hour_usd']:.3f} | {100 * point['slo_attainment']:.2f} % | "
            f"{point['p95_ms']:.1f}")


def row(name: str, doc: dict[str, Any], wall: float) -> str:
    """One scenario's line of the table."""
    today, rec = doc["today"], doc["recommended"]
    cheaper = "–"
    if rec is not None:
        cheaper = "yes" if (rec["total_cost_per_hour_usd"] < today["total_cost_per_hour_usd"]
                            and rec["slo_attainment"] >= today["slo_attainment"]) else "no"
    return (f"| {name} | {doc['trials']} | {_cells(today)} | {_cells(rec)} | {cheaper} | "
            f"{len(doc['pareto'])} | {wall:.0f} s |")


def chosen(doc: dict[str, Any]) -> str:
    """What the recommended point changes, in words."""
    rec = doc["recommended"]
    if rec is None:
        return "nothing"
    par = rec["parameters"]
    out = [f"add {n} × {name.split('#')[0]}" for name, n in par.get("add_nodes", {}).items() if n]
    out += [f"remove {', '.join(par['remove_nodes'])}"] if par.get("remove_nodes") else []
    out += [f"reserve {n} slots of {pool}" for pool, n in par.get("reserved_slots", {}).items()
            if n]
    out += [f"{k} {v:.2f}" for k, v in par.get("knobs", {}).items()]
    return "; ".join(out)


def main() -> int:
    """Run the plans and write the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--slo", type=float, default=0.95)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--only", nargs="*", choices=NAMES, default=list(NAMES))
    parser.add_argument("--out", default=str(ROOT / "out" / "plan-bench"))
    args = parser.parse_args()
    rows, verdicts = [], []
    load_before = os.getloadavg()
    for name in args.only:
        cpu0 = _cpu()
        doc, wall, _ = plan(name, args)
        rows.append(row(name, doc, wall))
        verdicts.append(f"- **{name}** ({_cpu() - cpu0:.0f} CPU s): {doc['verdict']} "
                        f"It changes: {chosen(doc)}.")
    load = " ".join(f"{v:.2f}" for v in (*load_before, *os.getloadavg()))
    capped = f", each run capped at {args.requests:,} requests" if args.requests else ""
    body = (f"`bench/plan.py --trials {args.trials} --jobs {args.jobs} --slo {args.slo}`"
            f"{capped}: `hybrid-router plan` on each scenario with its shipped space "
            "(`simulator/scenarios/spaces/`). Cost is the total per hour (owned fleet and "
            "reservations plus what the run spent); \"cheaper\" means cheaper than today's "
            "policy at the same or better SLO attainment. Wall time depends on how busy the "
            f"machine was: load average (1, 5, 15 min) before and after {load}.\n\n"
            "| scenario | trials | today $/h | today SLO | today p95 ms | recommended $/h | "
            "recommended SLO | recommended p95 ms | cheaper | Pareto points | wall |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            + "\n".join(verdicts))
    write_section("plan", "Planner: the cheapest fleet meeting the SLO", body)
    print(body)
    return 0


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the trial workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    raise SystemExit(main())
