"""`hybrid-router simulate --trace FILE --policy CANDIDATE`: read, replay, report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from router.logline import LogEntry
from router.policy.loader import load_policy_or_report
from simulator.accesslog import join, parse_access
from simulator.report import ReportInput, html_report
from simulator.report.replay import replay_report
from simulator.row import DecisionsOut
from simulator.trace import replay
from simulator.tracelog import Trace, TraceError, open_trace
from simulator.tracestream import entries

PROG = "hybrid-router simulate"


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _check(args: argparse.Namespace) -> str | None:
    """Why these arguments cannot run (None: they can), before anything is read."""
    if args.scenario is not None:
        return "--trace replays a request log; it does not take --scenario"
    if args.trace is None and args.access_log is None:
        return "give --trace FILE, --access-log FILE or both"
    if args.policy is None:
        return "--trace needs --policy CANDIDATE (the policy to replay the log through)"
    if args.compare is not None or args.baselines or args.requests is not None:
        return "--compare, --baselines and --requests are for --scenario runs"
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        return f"--out {out} exists and is not a directory"
    return None


def _write(out: Path, report: dict[str, Any], page: str) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.html").write_text(page, encoding="utf-8")


def _decisions(args: argparse.Namespace, out: Path | None) -> DecisionsOut:
    """The decisions files to write: --decisions-out, and DIR/decisions.jsonl with --out."""
    paths = [Path(args.decisions_out)] if args.decisions_out else []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        paths.append(out / "decisions.jsonl")
    return DecisionsOut(paths)


def _read(args: argparse.Namespace) -> tuple[Trace, Iterator[LogEntry]]:
    """The request log, joined with Envoy's access log when given, or the access log alone:
    its first pass done, and its lines to stream."""
    if args.trace is None:
        trace = open_trace(args.access_log, last_s=args.last, parse=parse_access)
        trace.source = "access_log"
        return trace, entries(trace)
    trace = open_trace(args.trace, last_s=args.last)
    if args.access_log is None:
        return trace, entries(trace)
    if not Path(args.access_log).is_file():
        raise TraceError(f"{args.access_log}: no such file")
    trace.source = "request_log+access_log"
    return trace, join(entries(trace), args.access_log, trace)


def _warn(trace: Trace, last: float | None) -> None:
    """What was left out of the replay, on stderr."""
    def lines(n: int) -> str:
        return f"{n} request-log line{'s' if n != 1 else ''}"

    if trace.skipped:
        print(f"{PROG}: warning: skipped {trace.skipped} malformed "
              f"{lines(trace.skipped).partition(' ')[2]} ({'; '.join(trace.problems)})",
              file=sys.stderr)
    if trace.outliers:
        print(f"{PROG}: warning: skipped {lines(trace.outliers)} whose time lies far outside "
              f"the rest of the log ({'; '.join(trace.outlier_shown)})", file=sys.stderr)
    if trace.unmatched:
        print(f"{PROG}: warning: {lines(trace.unmatched)} had no access-log line with their "
              "request id: their status and duration are the router's", file=sys.stderr)
    if trace.late:
        print(f"{PROG}: warning: {lines(trace.late)} reached the reader after later ones had "
              "been replayed (a request longer than the reorder hold, or a clock step): each "
              "was replayed at the time of the line before it", file=sys.stderr)
    if last is not None and trace.before_window:
        print(f"{PROG}: --last {last:g}: replaying {trace.kept} lines; "
              f"{lines(trace.before_window)} arrived earlier", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Replay the log through the candidate; exit 2 on a bad log, policy or argument."""
    problem = _check(args)
    if problem is not None:
        return _fail(problem)
    try:
        trace, lines = _read(args)
    except TraceError as exc:
        return _fail(str(exc))
    policy = load_policy_or_report(args.policy)
    if policy is None:
        return 2
    seed = 1 if args.seed is None else args.seed
    out = Path(args.out) if args.out else None
    made = out is not None and not out.exists()
    try:
        decisions = _decisions(args, out)  # written as the candidate's requests end
    except OSError as exc:
        return _fail(f"{exc.filename}: {exc.strerror or exc}")
    try:
        rep = replay(trace, policy, seed=seed, lines=lines, sinks=[decisions.add])
    except (TraceError, OSError) as exc:
        decisions.close(ok=False)
        if made and out is not None and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves nothing behind
        return _fail(str(exc) if isinstance(exc, TraceError)
                     else f"{exc.filename or args.trace}: {exc.strerror or exc}")
    decisions.close(ok=True)
    _warn(trace, args.last)
    report = replay_report(rep, policy, str(args.policy), seed)
    if out is not None:
        page = html_report(ReportInput(rep.candidate, report["candidate"], policy,
                                       caps=rep.candidate.caps or None, trace=report,
                                       folded=rep.bins.binned()))
        _write(out, report, page)
    print(json.dumps(report, indent=2))
    return 0
