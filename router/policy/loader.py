"""Policy YAML → typed `Policy`, reporting every problem with its location.

Phase one (here) is strict: unknown keys are refused with a did-you-mean,
types and bounds are checked, defaults applied, ids and addresses
cross-checked. Phase two, the runtime form (rings, tables), is built by
`router.core.table` from the `Policy` this returns.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path as FsPath
from typing import Any

from router.core.model import (
    BudgetConfig,
    CloudPool,
    Defaults,
    EdgeNode,
    FeedConfig,
    Policy,
    QualityConfig,
    SloConfig,
    SplitConfig,
    TenantBudget,
)
from router.policy.yamlloc import Checker, Path, Problem, load_located

TOP_KEYS = ("version", "refresh_seconds", "feed", "hashing", "slo", "edge", "cloud", "split",
            "budgets", "quality", "defaults")
NODE_KEYS = ("id", "address", "hardware", "weight", "slots", "residency", "models",
             "base_latency_ms", "cost_per_inference_usd")
POOL_KEYS = ("id", "address", "residency", "models", "instance_type", "latency_ms", "compute_ms",
             "egress_usd_per_gb", "usd_per_hour", "max_inflight")
PERIODS = ("hour", "day", "week", "month")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTPORT = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")


class PolicyError(Exception):
    """A policy failed validation; `problems` holds every located message."""

    def __init__(self, problems: list[Problem]) -> None:
        """Wrap the problems found."""
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def valid_hostport(value: str) -> bool:
    """Whether `value` is host:port with a port in 1..65535."""
    m = _HOSTPORT.match(value)
    return bool(m) and 0 < int(m.group("port")) < 65536  # type: ignore[union-attr]


def _feed(c: Checker, raw: Any) -> FeedConfig:
    p: Path = ("feed",)
    if raw is None:
        return FeedConfig()
    m = c.mapping(raw, p, ("source", "stale_after_seconds", "stale_weight", "missing_node",
                           "max_bytes"))
    source = c.string(m, "source", p)
    if source is not None and not (source.startswith(("file:", "http://", "https://", "grpc://"))):
        c.error((*p, "source"), f"must start with file:, http://, https:// or grpc://, "
                                f"got '{source}'")
    return FeedConfig(
        source=source,
        stale_after_seconds=c.number(m, "stale_after_seconds", p, 90.0, positive=True) or 90.0,
        stale_weight=c.number(m, "stale_weight", p, 0.5, minimum=0.0, maximum=1.0) or 0.0,
        missing_node=c.string(m, "missing_node", p, "keep", choices=("keep", "unhealthy"))
        or "keep",
        max_bytes=int(c.number(m, "max_bytes", p, 4 * 1024 * 1024, positive=True, integer=True)
                      or 4 * 1024 * 1024),
    )


def _node(c: Checker, raw: Any, i: int, edge_cost: float) -> EdgeNode | None:
    p: Path = ("edge", "nodes", i)
    m = c.mapping(raw, p, NODE_KEYS)
    if not m:
        return None
    before = len(c.problems)
    node_id = c.string(m, "id", p, required=True)
    if node_id is not None and not _ID.match(node_id):
        c.error((*p, "id"), f"'{node_id}' is not a valid id (letters, digits, . _ -)")
    address = c.string(m, "address", p, required=True)
    if address is not None and not valid_hostport(address):
        c.error((*p, "address"), f"'{address}' is not host:port")
    hardware = c.string(m, "hardware", p, "generic") or "generic"
    weight = c.number(m, "weight", p, 1.0, positive=True)
    slots = c.number(m, "slots", p, 4, positive=True, integer=True)
    base = c.number(m, "base_latency_ms", p, 50.0, positive=True)
    cost = c.number(m, "cost_per_inference_usd", p, None, minimum=0.0)
    residency = c.strings(m, "residency", p)
    models = c.strings(m, "models", p) or frozenset({"*"})
    if len(c.problems) != before or node_id is None or address is None:
        return None
    return EdgeNode(id=node_id, address=address, hardware=hardware, weight=float(weight or 1),
                    slots=int(slots or 1), residency=residency, models=models,
                    base_latency_ms=float(base or 50),
                    cost_per_inference_usd=cost if cost is not None else edge_cost)


def _pool(c: Checker, raw: Any, i: int) -> CloudPool | None:
    p: Path = ("cloud", "pools", i)
    m = c.mapping(raw, p, POOL_KEYS)
    if not m:
        return None
    before = len(c.problems)
    pool_id = c.string(m, "id", p, required=True)
    if pool_id is not None and not _ID.match(pool_id):
        c.error((*p, "id"), f"'{pool_id}' is not a valid id (letters, digits, . _ -)")
    address = c.string(m, "address", p, required=True)
    if address is not None and not valid_hostport(address):
        c.error((*p, "address"), f"'{address}' is not host:port")
    pool = CloudPool(
        id=pool_id or "",
        address=address or "",
        residency=c.strings(m, "residency", p),
        models=c.strings(m, "models", p) or frozenset({"*"}),
        instance_type=c.string(m, "instance_type", p, "gpu") or "gpu",
        latency_ms=c.number(m, "latency_ms", p, 120.0, positive=True) or 120.0,
        compute_ms=c.number(m, "compute_ms", p, 40.0, positive=True) or 40.0,
        egress_usd_per_gb=c.number(m, "egress_usd_per_gb", p, 0.09, minimum=0.0) or 0.0,
        usd_per_hour=c.number(m, "usd_per_hour", p, 2.0, minimum=0.0) or 0.0,
        max_inflight=int(c.number(m, "max_inflight", p, 0, minimum=0, integer=True) or 0),
    )
    return pool if len(c.problems) == before else None


def _budgets(c: Checker, raw: Any) -> BudgetConfig:
    p: Path = ("budgets",)
    if raw is None:
        return BudgetConfig()
    m = c.mapping(raw, p, ("period", "store", "soft_fraction", "hard_fraction", "tenants",
                           "unknown_tenant"))
    period = c.string(m, "period", p, "month", choices=PERIODS) or "month"
    store = c.string(m, "store", p, "memory") or "memory"
    if not (store == "memory" or store.startswith(("sqlite:", "redis://"))):
        c.error((*p, "store"), f"must be memory, sqlite:PATH or redis://HOST:PORT/DB, "
                               f"got '{store}'")
    soft = c.number(m, "soft_fraction", p, 0.8, minimum=0.0)
    hard = c.number(m, "hard_fraction", p, 1.0, positive=True)
    if soft is not None and hard is not None and soft > hard:
        c.error((*p, "soft_fraction"), f"soft fraction {soft:g} is above the hard fraction "
                                       f"{hard:g}")
    tenants: list[tuple[str, TenantBudget]] = []
    raw_tenants = m.get("tenants", {})
    if not isinstance(raw_tenants, dict):
        c.error((*p, "tenants"), "expected a mapping of tenant name to {limit_usd: N}")
        raw_tenants = {}
    for name, t in raw_tenants.items():
        tp: Path = (*p, "tenants", name)
        tm = c.mapping(t, tp, ("limit_usd", "soft_fraction", "hard_fraction"))
        limit = c.number(tm, "limit_usd", tp, None, minimum=0.0, required=True)
        ts = c.number(tm, "soft_fraction", tp, None, minimum=0.0)
        th = c.number(tm, "hard_fraction", tp, None, positive=True)
        es, eh = (ts if ts is not None else soft), (th if th is not None else hard)
        if (ts is not None or th is not None) and es is not None and eh is not None and es > eh:
            c.error(tp, f"soft fraction {es:g} is above the hard fraction {eh:g}")
        if limit is not None:
            tenants.append((str(name), TenantBudget(limit, ts, th)))
    unknown = c.string(m, "unknown_tenant", p, "default", choices=("default", "refuse"))
    return BudgetConfig(period=period, store=store, soft_fraction=soft if soft is not None else 0.8,
                        hard_fraction=hard if hard is not None else 1.0, tenants=tuple(tenants),
                        unknown_tenant=unknown or "default")


def _check_ids(c: Checker, raws: list[Any], section: Path, seen: dict[str, Path],
               addresses: dict[str, Path]) -> None:
    """Duplicate ids and addresses, checked on the raw entries so that an entry with
    another error still counts."""
    for i, raw in enumerate(raws):
        if not isinstance(raw, dict):
            continue
        ip: Path = (*section, i)
        rid, raddr = raw.get("id"), raw.get("address")
        if isinstance(rid, str):
            if rid in seen:
                c.error((*ip, "id"), f"duplicate id '{rid}' (first at {_fmt(c, seen[rid])})")
            else:
                seen[rid] = (*ip, "id")
        if isinstance(raddr, str):
            if raddr in addresses:
                c.error((*ip, "address"), f"address '{raddr}' is already used at "
                                          f"{_fmt(c, addresses[raddr])}")
            else:
                addresses[raddr] = (*ip, "address")


def _fmt(c: Checker, path: Path) -> str:
    line, _col = c.loc.where(path)
    return f"line {line}"


def _build(c: Checker, doc: dict[str, Any], digest: str) -> Policy | None:
    m = c.mapping(doc, (), TOP_KEYS)
    version = c.number(m, "version", (), 1, integer=True, required=True)
    if version is not None and version != 1:
        c.error(("version",), f"unsupported policy version {version}; this router reads 1")
    refresh = c.number(m, "refresh_seconds", (), 30.0, positive=True) or 30.0
    feed = _feed(c, m.get("feed"))
    hashing = c.mapping(m.get("hashing", {}), ("hashing",), ("balance_factor",))
    eps = c.number(hashing, "balance_factor", ("hashing",), 0.25, positive=True) or 0.25
    slo_m = c.mapping(m.get("slo", {}), ("slo",), ("default_latency_ms", "degraded_slack"))
    slo = SloConfig(
        default_latency_ms=c.number(slo_m, "default_latency_ms", ("slo",), 100.0, positive=True)
        or 100.0,
        degraded_slack=c.number(slo_m, "degraded_slack", ("slo",), 1.5, minimum=1.0) or 1.5,
    )
    edge_m = c.mapping(m.get("edge", {}), ("edge",), ("cost_per_inference_usd", "nodes"))
    edge_cost = c.number(edge_m, "cost_per_inference_usd", ("edge",), 0.0012, minimum=0.0)
    edge_cost = edge_cost if edge_cost is not None else 0.0012
    raw_nodes = edge_m.get("nodes", [])
    if not isinstance(raw_nodes, list):
        c.error(("edge", "nodes"), "expected a list of nodes")
        raw_nodes = []
    nodes = [(i, _node(c, n, i, edge_cost)) for i, n in enumerate(raw_nodes)]
    cloud_m = c.mapping(m.get("cloud", {}), ("cloud",), ("pools",))
    raw_pools = cloud_m.get("pools", [])
    if not isinstance(raw_pools, list):
        c.error(("cloud", "pools"), "expected a list of pools")
        raw_pools = []
    pools = [(i, _pool(c, p, i)) for i, p in enumerate(raw_pools)]
    if not raw_nodes and not raw_pools:
        c.error((), "the policy has neither edge nodes nor cloud pools")
    seen: dict[str, Path] = {}
    addresses: dict[str, Path] = {}
    _check_ids(c, raw_nodes, ("edge", "nodes"), seen, addresses)
    _check_ids(c, raw_pools, ("cloud", "pools"), seen, addresses)
    split_m = c.mapping(m.get("split", {}), ("split",),
                        ("cloud_cost_fraction", "extra_latency_ms", "payload_fraction"))
    split = SplitConfig(
        cloud_cost_fraction=c.number(split_m, "cloud_cost_fraction", ("split",), 0.3,
                                     minimum=0.0, maximum=1.0) or 0.0,
        extra_latency_ms=c.number(split_m, "extra_latency_ms", ("split",), 15.0, minimum=0.0)
        or 0.0,
        payload_fraction=c.number(split_m, "payload_fraction", ("split",), 0.1, minimum=0.0,
                                  maximum=1.0) or 0.0,
    )
    budgets = _budgets(c, m.get("budgets"))
    quality = _quality(c, m.get("quality"))
    defaults = _defaults(c, m.get("defaults"), budgets)
    if not c.ok:
        return None
    policy = Policy(
        version=1, refresh_seconds=refresh, feed=feed, balance_factor=eps, slo=slo,
        edge_cost_per_inference_usd=edge_cost,
        nodes=tuple(n for _, n in nodes if n), pools=tuple(p for _, p in pools if p),
        split=split, budgets=budgets, quality=quality, defaults=defaults, digest=digest,
    )
    _reachability_warnings(c, policy, nodes, pools)
    return policy


def _quality(c: Checker, raw: Any) -> QualityConfig:
    p: Path = ("quality",)
    if raw is None:
        return QualityConfig()
    m = c.mapping(raw, p, ("constrained_above", "minimal_above"))
    ca = c.number(m, "constrained_above", p, 0.85, minimum=0.0, maximum=1.0)
    ma = c.number(m, "minimal_above", p, 0.95, minimum=0.0, maximum=1.0)
    if ca is not None and ma is not None and ca > ma:
        c.error((*p, "constrained_above"), "must not be above minimal_above")
    return QualityConfig(constrained_above=ca or 0.85, minimal_above=ma or 0.95)


def _defaults(c: Checker, raw: Any, budgets: BudgetConfig) -> Defaults:
    p: Path = ("defaults",)
    if raw is None:
        return Defaults()
    m = c.mapping(raw, p, ("tenant", "residency", "model", "accept_degradation",
                           "max_cost_usd"))
    return Defaults(
        tenant=c.string(m, "tenant", p, "default") or "default",
        residency=c.strings(m, "residency", p),
        model=c.string(m, "model", p, None),
        accept_degradation=c.boolean(m, "accept_degradation", p, True),
        max_cost_usd=c.number(m, "max_cost_usd", p, None, minimum=0.0),
    )


def _reachability_warnings(c: Checker, policy: Policy, nodes: list[tuple[int, Any]],
                           pools: list[tuple[int, Any]]) -> None:
    """Warn about residency tags or models that nothing can ever satisfy together."""
    targets: list[EdgeNode | CloudPool] = [*policy.nodes, *policy.pools]
    tags = set(policy.defaults.residency)
    for tag in sorted(tags):
        if not any(tag in t.residency for t in targets):
            c.warn(("defaults", "residency"), f"residency tag '{tag}' is satisfied by no node "
                                              "or pool; such requests will be refused (503)")
    model = policy.defaults.model
    if model and not any(t.serves(model) for t in targets):
        c.warn(("defaults", "model"), f"model '{model}' is served by no node or pool")
    pool_tags = set().union(*(p.residency for p in policy.pools)) if policy.pools else set()
    warned: set[str] = set()
    for i, node in nodes:
        if node is None:
            continue
        for tag in sorted(node.residency - pool_tags - warned):
            warned.add(tag)
            c.warn(("edge", "nodes", i, "residency"),
                   f"residency tag '{tag}' is satisfied by no cloud pool; when its edge nodes "
                   "are full or down these requests are refused (503)")
        for model in sorted(node.models - {"*"}):
            if model not in warned and not any(p.serves(model) for p in policy.pools):
                warned.add(model)
                c.warn(("edge", "nodes", i, "models"),
                       f"model '{model}' is served by no cloud pool; when its edge nodes are "
                       "full or down these requests are refused (503)")


def policy_digest(text: str) -> str:
    """Short, stable version hash of a policy's source text."""
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def parse_policy(text: str, file: str = "<policy>") -> tuple[Policy | None, list[Problem]]:
    """Parse policy text; returns the policy (None on any error) and all problems."""
    loc, problems = load_located(text, file)
    if problems and loc.data is None:
        return None, problems
    checker = Checker(loc, problems)
    policy = _build(checker, loc.data if isinstance(loc.data, dict) else {}, policy_digest(text))
    if not isinstance(loc.data, dict):
        checker.error((), "a policy must be a YAML mapping")
    return (policy if checker.ok else None), checker.problems


def load_policy(path: str | FsPath) -> Policy:
    """Read and validate a policy file; raises `PolicyError` listing every problem."""
    file = str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(file, 1, 1, f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem(file, 1, 1, f"not UTF-8 text: {exc}")]) from exc
    policy, problems = parse_policy(text, file)
    if policy is None:
        raise PolicyError([p for p in problems if p.severity == "error"] or problems)
    return policy


def load_policy_or_report(path: str | FsPath) -> Policy | None:
    """`load_policy` for commands: on failure print every problem to stderr, return None."""
    try:
        return load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
