"""`hybrid-router explain`: one request's decision, every candidate and why.

It builds the same `Runtime` the server does from the policy (and a feed),
applies any `--spend`/`--load` the SRE wants to try, and asks it for the plan
(the pure ranking the server admits from) and a preview of admission, so
nothing is held and the answer is exactly what the mode ladder saw: excluded
targets, the bounded-load walk with each node's load against its cap, every
rung's latency estimate and cost, the tenant's budget standing, the decision
and the headers Envoy would get.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from router import wire
from router.cliargs import number
from router.core.budget import BudgetState, period_key
from router.core.decision import Candidate, Decision
from router.core.feedsnapshot import FeedError, FeedSnapshot, decode_feed, format_time, parse_time
from router.core.policy import Policy
from router.core.request import RouteRequest
from router.core.table import Snapshot
from router.policy.loader import PolicyError, load_policy
from router.runtime import Runtime


class UsageError(Exception):
    """A bad argument; reported on stderr with exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register explain's options."""
    parser.add_argument("--policy", required=True, metavar="FILE", help="policy YAML")
    parser.add_argument("--feed", metavar="FILE",
                        help="feed JSON (default: the policy's file: feed, if it exists)")
    parser.add_argument("--no-feed", action="store_true", help="explain as if no feed arrived")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a request header, e.g. -H 'x-affinity-tenant: acme' (repeatable)")
    parser.add_argument("--payload-bytes", type=number(int, 0), default=None, metavar="N",
                        help="request body size, for transfer and egress estimates "
                             "(default: the policy's defaults.payload_kb)")
    parser.add_argument("--spend", action="append", default=[], metavar="TENANT=USD",
                        help="committed spend this period, replacing the feed's (repeatable)")
    parser.add_argument("--load", action="append", default=[], metavar="TARGET=N",
                        help="in-flight requests on a node or pool (repeatable)")
    parser.add_argument("--now", metavar="RFC3339",
                        help="decision time (default: now, as serve sees it: an old feed "
                             "shows its age and, past stale_after_seconds, its lowered weights)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--{what} {item!r}: expected NAME=VALUE")
        out.append((name.strip(), value.strip()))
    return out


def parse_headers(items: list[str]) -> dict[str, str]:
    """'Name: value' strings → a lower-case header mapping."""
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"-H {item!r}: expected 'NAME: VALUE'")
        headers[name.strip().lower()] = value.strip()
    return headers


def _feed(args: argparse.Namespace, policy: Policy) -> tuple[FeedSnapshot | None, str | None]:
    path = args.feed
    source = policy.feed.source or ""
    if path is None and not args.no_feed and source.startswith("file:"):
        candidate = Path(source.removeprefix("file:"))
        if not candidate.is_absolute() and not candidate.exists():
            candidate = Path(args.policy).parent / candidate
        path = str(candidate) if candidate.exists() else None
    if path is None or args.no_feed:
        return None, None
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"--feed {path}: {exc.strerror or exc}") from exc
    try:
        # validate as of far in the future: explain accepts old snapshots on purpose
        return decode_feed(raw, policy, now=4e9), path
    except FeedError as exc:
        raise UsageError(f"--feed {path}: {exc}") from exc


def _setup(args: argparse.Namespace) -> tuple[Runtime, float, str | None]:
    """The same runtime the server builds, at the decision time, with the SRE's what-ifs."""
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        raise UsageError(str(exc)) from exc
    feed, feed_path = _feed(args, policy)
    if args.now is not None:
        try:
            now = parse_time(args.now)
        except ValueError as exc:
            raise UsageError(f"--now: {exc}") from exc
    else:
        now = time.time()  # the clock serve reads, so both report the same age
    rt = Runtime(policy, clock=lambda: now)
    if feed is not None:
        rt.install(feed=dataclasses.replace(feed, received_at=now), now=now)
    snap = rt.snapshot
    known = {n.id for n in snap.nodes} | {p.id for p in snap.pools}
    for name, value in _pairs(args.load, "load"):
        if name not in known:
            raise UsageError(f"--load {name}: no node or pool with that id in the policy")
        if not value.isascii() or not value.isdigit():
            raise UsageError(f"--load {name}={value}: expected a whole number")
        for _ in range(int(value)):
            rt.tracker.acquire(rt.tracker.slot(name))
    # the feed's bills count in the period it was generated in, as serve counts them
    billed = feed.generated_at if feed is not None else now
    spend = {t: (usd, billed) for t, usd in feed.spend.items()} if feed is not None else {}
    for name, value in _pairs(args.spend, "spend"):
        try:
            spend[name] = (float(value), now)
        except ValueError as exc:
            raise UsageError(f"--spend {name}={value}: expected a number of USD") from exc
    for tenant, (usd, as_of) in spend.items():
        rt.ledger.bill(tenant, period_key(as_of, policy.budgets.period), usd, None)
    return rt, now, feed_path


def explain(args: argparse.Namespace) -> dict[str, Any]:
    """The whole explanation as a JSON-ready dict."""
    rt, now, feed_path = _setup(args)
    policy = rt.policy
    headers = parse_headers(args.header)
    stripped = sorted(h for h in headers if h.startswith(wire.ROUTE_PREFIX))
    for name in stripped:
        del headers[name]
    parsed = rt.parse(headers, payload_bytes=args.payload_bytes, request_id="explain")
    req: RouteRequest | None = None
    budget = None
    trace: tuple[Candidate, ...] = ()
    if isinstance(parsed, Decision):
        decision = parsed
    else:
        req = parsed
        plan = rt.plan(req)
        decision, trace = rt.preview(plan)
        if plan.account is not None:
            budget = _budget_info(rt.ledger.state(policy.budgets, plan.account, now), req.tenant)
    out: dict[str, Any] = {
        "policy": {"file": args.policy, "version": policy.digest},
        "feed": _feed_info(rt.snapshot, feed_path, now),
        "now": format_time(now),
        "request": None if req is None else _request_info(req),
        "stripped_headers": stripped,
        "budget": budget,
        "candidates": [dataclasses.asdict(c) for c in trace],
        "decision": _decision_info(decision),
    }
    return out


def _feed_info(table: Snapshot, path: str | None, now: float) -> dict[str, Any] | None:
    if table.feed is None:
        return None
    return {"file": path, "generated_at": format_time(table.feed.generated_at),
            "age_s": round(table.feed.age(now), 1), "stale": table.stale}


def _request_info(req: RouteRequest) -> dict[str, Any]:
    return {"key": req.key, "tenant": req.tenant, "residency": sorted(req.residency),
            "slo_ms": req.slo_ms, "model": req.model, "degrade": req.accept_degradation,
            "max_cost_usd": req.max_cost_usd, "payload_bytes": req.payload_bytes}


def _budget_info(state: BudgetState, tenant: str) -> dict[str, Any]:
    limit = state.limit_usd
    if limit is None:
        standing = "unlimited"
    elif state.used_usd >= state.hard_usd:
        standing = "at hard limit: cloud refused"
    elif state.over_soft:
        standing = "over soft limit: cloud only when nothing cheaper meets the SLO"
    else:
        standing = "under soft limit"
    return {"tenant": tenant, "account": state.tenant, "period": state.period,
            "limit_usd": limit,
            "used_usd": state.used_usd, "committed_usd": state.committed_usd,
            "reserved_usd": state.reserved_usd,
            "soft_usd": None if limit is None else state.soft_usd,
            "hard_usd": None if limit is None else state.hard_usd, "standing": standing}


def _decision_info(d: Decision) -> dict[str, Any]:
    info: dict[str, Any] = {"status": d.status, "mode": d.mode, "reason": d.reason}
    if d.routed:
        info |= {"target": d.target, "node": d.node, "quality": d.quality,
                 "split_cloud": d.split_cloud, "cost_usd": d.cost_usd, "est_ms": d.est_ms,
                 "headers": dict(d.headers())}
    else:
        headers = {wire.H_REASON: d.reason}
        if d.retry_after is not None:
            headers[wire.H_RETRY_AFTER] = str(d.retry_after)
        info |= {"error": d.error, "detail": d.detail, "retry_after": d.retry_after,
                 "response_headers": headers, "body": d.body().decode()}
    return info


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(info: dict[str, Any]) -> str:
    """The explanation as terminal text."""
    lines = [f"policy   {info['policy']['file']} (version {info['policy']['version']})"]
    feed = info["feed"]
    lines.append("feed     none: policy defaults, no spot prices" if feed is None else
                 f"feed     {feed['file']} generated {feed['generated_at']}, age {feed['age_s']}s"
                 + (" (STALE: weights lowered)" if feed["stale"] else ""))
    lines.append(f"now      {info['now']}")
    req = info["request"]
    if req is not None:
        lines.append(
            f"request  key={req['key'] or '-'} tenant={req['tenant']} "
            f"residency={','.join(req['residency']) or '-'} slo={req['slo_ms']:g}ms "
            f"model={req['model'] or '-'} degrade={str(req['degrade']).lower()} "
            f"max-cost={_num(req['max_cost_usd'], 'g')} payload={req['payload_bytes']}B")
    if info["stripped_headers"]:
        lines.append(f"removed  client-sent {', '.join(info['stripped_headers'])}")
    b = info["budget"]
    if b is not None:
        who = b["tenant"] if b["account"] == b["tenant"] else \
            f"{b['tenant']} (shares account {b['account']})"
        if b["limit_usd"] is None:
            lines.append(f"budget   {who} {b['period']}: unlimited")
        else:
            lines.append(
                f"budget   {who} {b['period']}: used ${b['used_usd']:.2f} of "
                f"${b['limit_usd']:.2f} (soft ${b['soft_usd']:.2f}, hard ${b['hard_usd']:.2f})"
                f": {b['standing']}")
    lines += ["", "candidates (in the order the router considered them)",
              f"  {'TARGET':<22}{'MODE':<15}{'QUALITY':<12}{'EST ms':>8}{'COST usd':>11}"
              f"{'LOAD/CAP':>10}  VERDICT"]
    for c in info["candidates"]:
        loadcap = "-" if c["load"] is None else f"{c['load']}/{c['cap']}"
        mode = "excluded" if c["mode"] == "-" else c["mode"]
        lines.append(f"  {c['target']:<22}{mode:<15}{c['quality'] or '-':<12}"
                     f"{_num(c['est_ms'], '.1f'):>8}{_num(c['cost_usd'], '.6f'):>11}"
                     f"{loadcap:>10}  {c['verdict']}")
    d = info["decision"]
    lines.append("")
    if d["status"] == 200:
        lines.append(f"decision {d['mode']} on {d['node']} ({d['target']}), reason {d['reason']},"
                     f" est {d['est_ms']:.1f} ms, ${d['cost_usd']:.6f}")
        lines.append("headers Envoy would get")
        lines += [f"  {k}: {v}" for k, v in d["headers"].items()]
    else:
        lines.append(f"decision refused {d['status']} {d['error']}: {d['detail']}")
        lines.append("Envoy answers with an immediate response")
        lines += [f"  {k}: {v}" for k, v in d["response_headers"].items()]
        lines.append(f"  body: {d['body']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Explain one request; exit 0 when answered (even a refusal), 2 on bad input."""
    try:
        info = explain(args)
    except UsageError as exc:
        print(f"hybrid-router explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0
