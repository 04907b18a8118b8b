"""`hybrid-router validate FILE...`: policies, scenarios and feed files, all located errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from router.policy.loader import parse_policy
from router.policy.yamlloc import Problem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's arguments."""
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="policy or scenario YAML, or feed JSON")
    parser.add_argument("--policy", help="policy to check feed files against "
                                         "(default: policies/example.yaml if present)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def _kind(path: str, text: str) -> str:
    if path.endswith(".json"):
        return "feed"
    head = text[:4000]
    if "\ntraffic:" in head or head.startswith("traffic:") or "\nduration_s:" in head:
        return "scenario"
    return "policy"


def check_file(path: str, policy_path: str | None = None) -> list[Problem]:
    """Every problem in one file, whatever its kind."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(path, 1, 1, f"cannot read: {exc}")]
    kind = _kind(path, text)
    if kind == "scenario":
        from simulator.scenario import parse_scenario

        _, problems = parse_scenario(text, path)
        return problems
    if kind == "feed":
        return _check_feed(path, text, policy_path)
    _, problems = parse_policy(text, path)
    return problems


def _check_feed(path: str, text: str, policy_path: str | None) -> list[Problem]:
    import time

    from router.core.feed import FeedError, decode_feed
    from router.policy.loader import PolicyError, load_policy

    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return [Problem(path, exc.lineno, exc.colno, f"invalid JSON: {exc.msg}")]
    candidate = policy_path or "policies/example.yaml"
    try:
        policy = load_policy(candidate)
    except PolicyError as exc:
        return [Problem(path, 1, 1, f"cannot check against policy {candidate}: "
                                    f"{exc.problems[0]}")]
    try:
        # The same checks the running router applies: size limit, NaN refusal, schema.
        decode_feed(text.encode(), policy, now=time.time())
    except FeedError as exc:
        return [Problem(path, 1, 1, f"feed rejected ({exc.reason}): {exc.detail}")]
    return []


def run(args: argparse.Namespace) -> int:
    """Validate each file; exit 2 if any has an error."""
    failed = False
    for path in args.files:
        problems = sorted(check_file(path, args.policy), key=lambda p: (p.line, p.col))
        errors = [p for p in problems if p.severity == "error"]
        for problem in problems:
            if problem.severity == "error" or not args.quiet:
                print(problem, file=sys.stderr if problem.severity == "error" else sys.stdout)
        if errors:
            failed = True
        elif not args.quiet:
            print(f"{path}: ok")
    return 2 if failed else 0
