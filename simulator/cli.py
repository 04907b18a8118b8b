"""`hybrid-router simulate`: a what-if run through the same routing core as the server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from router.cliargs import POSITIVE, number
from router.core.policy import Policy
from router.policy.loader import load_policy_or_report
from simulator import tracecli
from simulator.baselines import BASELINES, make_baseline
from simulator.gateways import Gateways
from simulator.report import ReportInput, html_report, summarize, table, write_decisions
from simulator.report.data import Run
from simulator.report.summary import add_break_even
from simulator.report.verdict import text as verdict_text
from simulator.report.verdict import versus
from simulator.routers import Adaptive, Router
from simulator.run import Result, simulate
from simulator.scenario import SEED_MAX, Scenario
from simulator.sites import load_checked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's arguments."""
    parser.add_argument("--scenario", metavar="FILE", help="the scenario to run (or --trace)")
    parser.add_argument("--trace", metavar="FILE",
                        help="replay a request log (serve --request-log FILE) through --policy: "
                             "FILE, its rotated FILE.N and per-worker FILE.w<i>[.N], merged by "
                             "arrival time")
    parser.add_argument("--access-log", metavar="FILE",
                        help="Envoy's JSON access log (envoy-config --access-log FILE): with "
                             "--trace, production's status and duration come from it, joined by "
                             "request id; alone, it is the trace")
    parser.add_argument("--policy", metavar="CANDIDATE",
                        help="the policy to run instead of the scenario's; with --trace, the "
                             "policy to replay the log through")
    parser.add_argument("--last", type=POSITIVE, metavar="SECONDS",
                        help="with --trace: only the lines within SECONDS of the newest")
    parser.add_argument("--seed", type=number(int, 0, high=SEED_MAX), metavar="N",
                        help="with --trace: the simulated world's random seed (default 1)")
    parser.add_argument("--requests", type=number(int, 1), metavar="N",
                        help="stop after N requests instead of at duration_s")
    parser.add_argument("--out", metavar="DIR", help="write report.json, decisions.jsonl and "
                                                     "report.html here")
    parser.add_argument("--decisions-out", metavar="FILE", help="decisions as JSON lines")
    parser.add_argument("--compare", nargs="*", metavar="POLICY", default=None,
                        help="also run these candidate policies on the same traffic and events: "
                             "their charts beside the current ones, and each one's difference "
                             "from the current policy with a verdict per goal")
    parser.add_argument("--baselines", action="store_true",
                        help="compare with every baseline: " + ", ".join(BASELINES))
    parser.add_argument("--progress", action="store_true", help="progress on stderr")
    parser.add_argument("--live", action="store_true",
                        help="also run the scenario in real time through real Envoy, the "
                             "router and emulated nodes, and report both side by side")
    parser.add_argument("--seconds", type=POSITIVE, metavar="S",
                        help="with --live: only the arrivals of the first S seconds")


def _inputs(args: argparse.Namespace) -> tuple[Scenario, Policy, list[tuple[str, Policy]]] | None:
    """The scenario, its policy and the policies to compare, or None after reporting why."""
    loaded = load_checked(args.scenario, args.policy)
    if loaded is None:
        return None
    scenario, policy = loaded
    others = [(Path(extra).stem, load_policy_or_report(extra)) for extra in args.compare or []]
    if any(pol is None for _, pol in others):
        return None
    return scenario, policy, [(name, pol) for name, pol in others if pol is not None]


def _write(out: Path, main: Result, reports: list[dict[str, Any]], policy: Policy,
           scenario: Scenario, candidates: tuple[Run, ...]) -> None:
    """report.json, decisions.jsonl and report.html of the main run (and its candidates')."""
    out.mkdir(parents=True, exist_ok=True)
    summary = reports[0]
    (out / "report.json").write_text(json.dumps(
        {**summary, "comparison": reports[1:]} if len(reports) > 1 else summary, indent=2))
    write_decisions(main, out / "decisions.jsonl")
    page = html_report(ReportInput(main, summary, policy, scenario, tuple(reports[1:]),
                                   main.caps or None, candidates=candidates))
    (out / "report.html").write_text(page, encoding="utf-8")


def router_for(scenario: Scenario, policy: Policy, name: str = "hybrid-router") -> Router:
    """hybrid-router as the scenario deploys it: one router, or its `gateways` on leases."""
    if scenario.gateways:
        return Gateways(policy, [g.share for g in scenario.gateways],
                        sync_s=scenario.lease_sync_s, name=name)
    return Adaptive(policy, name=name)


def run(args: argparse.Namespace) -> int:
    """Run the scenario (and comparisons, or its live twin), or replay a trace; exit 2 on bad
    input."""
    if args.trace is not None or args.access_log is not None:
        return tracecli.run(args)
    if args.scenario is None or any(x is not None for x in (args.last, args.seed)):
        print("hybrid-router simulate: give --scenario FILE [--policy CANDIDATE] (the scenario "
              "names its policy and seed) or --trace FILE --policy CANDIDATE", file=sys.stderr)
        return 2
    if args.live or args.seconds is not None:
        from simulator.live.run import run_live  # the live twin's processes, only when asked

        return run_live(args)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        # Checked before the run, so a long simulation is not lost to a typo at the end.
        print(f"hybrid-router simulate: --out {out} exists and is not a directory",
              file=sys.stderr)
        return 2
    inputs = _inputs(args)  # every file read before any run, for the same reason
    if inputs is None:
        return 2
    scenario, policy, compares = inputs
    progress = args.progress or sys.stderr.isatty()
    main = simulate(scenario, policy, router_for(scenario, policy), requests=args.requests,
                    progress=progress)
    reports = [summarize(main, policy)]
    candidates: list[Run] = []
    for name, pol in compares:
        res = simulate(scenario, pol, router_for(scenario, pol, name), requests=args.requests,
                       progress=progress)
        reports.append(summarize(res, pol))
        reports[-1]["versus_current"] = versus(reports[0], reports[-1])
        candidates.append(Run(res, reports[-1], pol))
    for kind in BASELINES if args.baselines else ():
        res = simulate(scenario, policy, make_baseline(policy, kind, scenario.seed),
                       requests=args.requests, progress=progress)
        reports.append(summarize(res, policy))
    add_break_even(reports)
    if args.decisions_out:
        write_decisions(main, Path(args.decisions_out))
    if out is not None:
        _write(out, main, reports, policy, scenario, tuple(candidates))
    print(json.dumps(reports[0], indent=2))
    if len(reports) > 1:
        print()
        print(table(reports))
    if candidates:
        print()
        print(verdict_text(reports))
    return 0
