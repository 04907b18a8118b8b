"""`hybrid-router plan`: the cheapest fleet and policy meeting an SLO, found by simulation.

Reads the scenario (and its policy) and a SPACE file, measures today's policy, runs
`--trials` points of the space through the simulator and writes DIR/pareto.json,
DIR/recommended.yaml (when a point meets `--slo`) and DIR/report.html. Exit 0 with
a recommendation, 1 when no trial meets `--slo` (the files say why), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from router.cliargs import number
from router.policy.loader import policy_from_text
from router.policy.yamlloc import MAX_BYTES, read_text
from simulator.plan.apply import candidate, knob_checker
from simulator.plan.page import frontier_html, with_frontier
from simulator.plan.search import Setup, Trial, pareto, progress, recommend, run_once, search
from simulator.plan.space import Space, load_space
from simulator.report import ReportInput, html_report
from simulator.report.data import Run
from simulator.report.fmt import usd
from simulator.report.verdict import versus
from simulator.scenario import SEED_MAX, Scenario
from simulator.sites import load_checked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's arguments."""
    parser.add_argument("--scenario", metavar="FILE", required=True,
                        help="the scenario to plan for (its policy is today's)")
    parser.add_argument("--space", metavar="FILE", required=True,
                        help="what may change and how far (docs/reference.md)")
    parser.add_argument("--slo", type=float, metavar="FRACTION", required=True,
                        help="SLO attainment the recommendation must meet, e.g. 0.99")
    parser.add_argument("--trials", type=number(int, 1), default=40, metavar="N",
                        help="points of the space to simulate (default 40)")
    parser.add_argument("--jobs", type=number(int, 1), default=1, metavar="J",
                        help="processes measuring trials at once (at most 4; default 1)")
    parser.add_argument("--seed", type=number(int, 0, high=SEED_MAX), metavar="N",
                        help="the search's random seed (default: the scenario's)")
    parser.add_argument("--requests", type=number(int, 1), metavar="N",
                        help="each run stops after N requests instead of at duration_s")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="write pareto.json, recommended.yaml and report.html here")


def _bad(args: argparse.Namespace) -> str:
    if not 0.0 < args.slo <= 1.0:
        return f"--slo {args.slo} must be a fraction in (0, 1]"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a directory"
    return ""


def _inputs(args: argparse.Namespace) -> Setup | None:
    """Scenario, policy data and space, or None after printing every problem."""
    loaded = load_checked(args.scenario)
    if loaded is None:
        return None
    scenario, policy = loaded
    file = str(scenario.policy)
    text, problems = read_text(file, MAX_BYTES)
    data = yaml.safe_load(text) if text is not None else None
    if not isinstance(data, dict):
        for p in problems:
            print(p, file=sys.stderr)
        return None
    space, problems = load_space(args.space, scenario, policy, knob_checker(data, file))
    for p in problems:
        print(p, file=sys.stderr)
    if space is None or any(p.severity == "error" for p in problems):
        return None
    return Setup(scenario, data, file, space, args.requests)


def run(args: argparse.Namespace) -> int:
    """Plan; exit 0 with a recommendation, 1 without one, 2 on bad input."""
    why = _bad(args)
    if why:
        print(f"hybrid-router plan: {why}", file=sys.stderr)
        return 2
    setup = _inputs(args)
    if setup is None:
        return 2
    seed = setup.scenario.seed if args.seed is None else args.seed
    today_text = yaml.safe_dump(setup.data, sort_keys=False, width=100)
    today_run, today = run_once(setup.scenario, today_text, setup.file, setup.requests,
                                name="today")
    trials = search(setup, trials=args.trials, jobs=args.jobs, seed=seed,
                    report=progress(args.trials))
    front = pareto(trials)
    picked = recommend(trials, args.slo)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    verdict = _verdict(today, picked, args.slo, trials)
    doc = _pareto_doc(args, seed, setup.space, today, trials, front, picked, verdict)
    (out / "pareto.json").write_text(json.dumps(doc, indent=2))
    stale = out / "recommended.yaml"
    if picked is not None:
        stale.write_text(_recommended_text(args, picked))
    elif stale.exists():
        stale.unlink()  # a recommendation from an earlier plan would read as this one's
    _write_page(out, setup, (today_run, today), picked, trials, front, args.slo, verdict)
    print(verdict)
    return 0 if picked is not None else 1


def _verdict(today: dict[str, Any], picked: Trial | None, slo: float,
             trials: list[Trial]) -> str:
    """The plan's answer in one paragraph."""
    now = today["total_cost_per_hour_usd"]
    if picked is None:
        ran = [t for t in trials if t.ok]
        best = max((t.objectives[1] for t in ran), default=0.0)
        return (f"No trial meets SLO attainment {100 * slo:g} %: the best of {len(ran)} reached "
                f"{100 * best:.2f} % (today's policy {100 * today['slo_attainment']:.2f} %). "
                "Widen the space (more nodes, reserved slots) or ask for less.")
    cost, got, p95 = picked.objectives
    change = f"{100 * (cost / now - 1):+.1f} %" if now else "n/a"
    if cost < now and got >= today["slo_attainment"]:
        head = "Cheaper than today's policy at the same or better SLO: "
    else:
        head = (f"No trial of {len(trials)} is cheaper than today's policy at the same or "
                "better SLO attainment (today's configuration may already be the cheapest the "
                "space allows, or more trials may find one); the cheapest meeting the SLO is ")
    return (f"{head}trial {picked.number + 1}, {usd(cost)}/h against today's {usd(now)}/h "
            f"({change}), SLO attainment {100 * got:.2f} % (today "
            f"{100 * today['slo_attainment']:.2f} %), p95 {p95:,.1f} ms (today "
            f"{today['latency_ms']['p95']:,.1f} ms). recommended.yaml holds its policy.")


def _point(t: Trial, space: Space) -> dict[str, Any]:
    cost, slo, p95 = t.objectives
    return {"trial": t.number + 1, "parameters": t.choice.readable(space),
            "total_cost_per_hour_usd": cost, "slo_attainment": slo, "p95_ms": p95}


def _pareto_doc(args: argparse.Namespace, seed: int, space: Space, today: dict[str, Any],
                trials: list[Trial], front: list[Trial], picked: Trial | None,
                verdict: str) -> dict[str, Any]:
    return {
        "scenario": str(args.scenario), "space": str(args.space), "slo": args.slo,
        "seed": seed, "trials": len(trials), "failed_trials": sum(not t.ok for t in trials),
        "today": {"total_cost_per_hour_usd": today["total_cost_per_hour_usd"],
                  "slo_attainment": today["slo_attainment"],
                  "p95_ms": today["latency_ms"]["p95"]},
        "pareto": [_point(t, space) for t in sorted(front, key=lambda t: t.objectives[0])],
        "recommended": None if picked is None else {
            **_point(picked, space), "versus_today": versus(today, picked.summary)},
        "verdict": verdict,
    }


def _recommended_text(args: argparse.Namespace, picked: Trial) -> str:
    head = (f"# hybrid-router plan --scenario {args.scenario} --space {args.space} --slo "
            f"{args.slo}: trial {picked.number + 1}, the cheapest meeting the SLO.\n"
            "# Added nodes have placeholder addresses (127.0.0.1:20001...): set the real ones.\n")
    return head + picked.policy_text


def _write_page(out: Path, setup: Setup, today: tuple[Any, dict[str, Any]],
                picked: Trial | None, trials: list[Trial], front: list[Trial], slo: float,
                verdict: str) -> None:
    """report.html: the frontier, then the recommended point's what-if against today's."""
    today_run, today_summary = today
    policy = policy_from_text(yaml.safe_dump(setup.data, sort_keys=False), setup.file)
    scenario: Scenario = setup.scenario
    candidates: tuple[Run, ...] = ()
    if picked is not None:
        _, rec_policy, rec_scenario = candidate(setup.data, scenario, setup.space,
                                                picked.choice, setup.file)
        rec_run, rec_summary = run_once(rec_scenario, picked.policy_text, setup.file,
                                        setup.requests, name="recommended")
        rec_summary["versus_current"] = versus(today_summary, rec_summary)
        candidates = (Run(rec_run, rec_summary, rec_policy),)
    page = html_report(ReportInput(today_run, today_summary, policy, scenario,
                                   tuple(c.summary for c in candidates),
                                   today_run.caps or None, candidates=candidates))
    readable = {t.number: t.choice.readable(setup.space) for t in trials}
    section = frontier_html(trials, front, readable, today_summary, picked, slo, verdict)
    (out / "report.html").write_text(with_frontier(page, section), encoding="utf-8")
