"""`hybrid-router validate FILE...`: policies, scenarios and feed files, all located errors."""

from __future__ import annotations

import argparse
import os
import sys

from router.crosscheck import feed_file_problem, scenario_tenants, tenant_problem
from router.policy.loader import PolicyError, load_policy, parse_policy
from router.policy.yamlloc import MAX_BYTES, Problem, load_located, read_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's arguments."""
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="policy or scenario YAML, or feed JSON")
    parser.add_argument("--policy", help="policy to check feed files against "
                                         "(default: policies/example.yaml if present)")
    parser.add_argument("--routers", type=int, default=1, metavar="N",
                        help="routers that will run each policy (HA gateways, sidecar pods,"
                             " serve --workers): over 1, a store that is not shared is an "
                             "error")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def _kind(path: str, text: str) -> str:
    if path.endswith(".json"):
        return "feed"
    head = text[:4000]
    if "\ntraffic:" in head or head.startswith("traffic:") or "\nduration_s:" in head:
        return "scenario"
    return "policy"


def check_file(path: str, policy_path: str | None = None, routers: int = 1) -> list[Problem]:
    """Every problem in one file, whatever its kind (`routers`: how many will run a policy)."""
    if path.endswith(".json"):
        return _check_feed(path, policy_path)
    text, problems = read_text(path, MAX_BYTES)
    if text is None:
        return problems
    if _kind(path, text) == "scenario":
        return _check_scenario(path, text)
    policy, problems = parse_policy(text, path)
    if policy is not None and routers > 1:
        from router.server.fleet import unshared_problem

        problem = unshared_problem(policy, f"--routers {routers} deploys {routers} routers")
        if problem is not None:
            problems.append(Problem(path, *_store_at(text), problem))
    if policy is not None:
        missing = feed_file_problem(policy, load_located(text, path)[0])
        problems += [missing] if missing is not None else []
    return problems


def _check_scenario(path: str, text: str) -> list[Problem]:
    """The scenario's own problems, then the tenants its policy does not name."""
    from simulator.scenario import parse_scenario

    scenario, problems = parse_scenario(text, path)
    if scenario is None:
        return problems
    try:
        policy = load_policy(scenario.policy)
    except PolicyError:
        return problems  # `simulate` reports the policy's own problems
    loc = load_located(text, path)[0]
    found = (tenant_problem(path, loc.where(where), tenant, policy.budgets, str(scenario.policy))
             for tenant, where in scenario_tenants(loc))
    return problems + [p for p in found if p is not None]


def _store_at(text: str) -> tuple[int, int]:
    """(line, column) of the policy's `store:` key, or of its first line."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("store:"):
            return number, len(line) - len(line.lstrip()) + 1
    return 1, 1


def _check_feed(path: str, policy_path: str | None) -> list[Problem]:
    import time

    from router.core.feedsnapshot import FeedError, decode_feed
    from router.policy.jsonloc import json_where
    candidate = policy_path or "policies/example.yaml"
    try:
        policy = load_policy(candidate)
    except PolicyError as exc:
        return [Problem(path, 1, 1, f"cannot check against policy {candidate}: "
                                    f"{exc.problems[0]}")]
    limit = policy.feed.max_bytes
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0  # read_text says why
    if size > limit:
        return [Problem(path, 1, 1, f"feed rejected (oversize): document is {size} bytes, "
                                    f"over the {limit} limit")]
    text, problems = read_text(path, limit)
    if text is None:
        return problems
    try:
        # The same checks the running router applies: size limit, NaN refusal, schema.
        snap = decode_feed(text.encode(), policy, now=time.time())
    except FeedError as exc:
        if exc.at is not None:
            return [Problem(path, *exc.at, f"feed rejected ({exc.reason}): {exc.detail}")]
        return [Problem(path, *json_where(text, f.path, key=f.key),
                        f"feed rejected ({exc.reason}): {f.text()}") for f in exc.findings]
    found = (tenant_problem(path, json_where(text, ("spend", i, "tenant")), tenant,
                            policy.budgets, candidate, feed=True)
             for i, tenant in enumerate(snap.spend))
    return [p for p in found if p is not None]


def run(args: argparse.Namespace) -> int:
    """Validate each file; exit 2 if any has an error."""
    failed = False
    for path in args.files:
        problems = sorted(check_file(path, args.policy, args.routers),
                          key=lambda p: (p.line, p.col))
        errors = [p for p in problems if p.severity == "error"]
        for problem in problems:
            if problem.severity == "error" or not args.quiet:
                print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
        if errors:
            failed = True
        elif not args.quiet:
            print(f"{path}: ok")
    return 2 if failed else 0
