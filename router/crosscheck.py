"""What `hybrid-router validate` checks across files: names and paths one file gives another.

A file can be valid alone and still name what its neighbour does not have:

- a tenant (a scenario's `traffic.classes[].tenant` or `events[].budget.tenant`, a feed's
  `spend[].tenant`) that the policy's `budgets.tenants` does not name. A warning, with a
  did-you-mean: such a tenant is legal by design (it shares the `default` account, or is
  refused 403 under `budgets.unknown_tenant: refuse`), and a feed is shared by routers whose
  policies name different tenants, so refusing the file would refuse valid setups; but it is
  never silent, since `acmee` for `acme` would spend from the default budget unnoticed.
- a policy's `file:` feed source that does not exist. A warning: the exporter may write it
  after the router starts (the router serves on the policy until it appears, counting the
  feed `unreachable`), but a mistyped path would never appear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.core.policy import BudgetConfig, Policy
from router.core.schema import KeyPath, did_you_mean
from router.policy.yamlloc import Located, Problem


def tenant_problem(file: str, at: tuple[int, int], tenant: str, budgets: BudgetConfig,
                   policy_file: str, *, feed: bool = False) -> Problem | None:
    """A warning if `budgets` does not name `tenant`, saying what happens to it instead."""
    if tenant == budgets.default_tenant or budgets.tenant(tenant) is not None:
        return None
    hint = did_you_mean(tenant, budgets.tenants)
    if feed:
        fate = "its spend is ignored (not this router's account to merge)"
    elif budgets.unknown_tenant == "refuse":
        fate = "its requests are refused (403 unknown_tenant)"
    else:
        default = budgets.tenant(budgets.default_tenant)
        limit = "no limit" if default is None else f"limit ${default.limit_usd:,.0f}"
        fate = f"its requests share the '{budgets.default_tenant}' account ({limit})"
    return Problem(file, *at, f"tenant '{tenant}' is not in budgets.tenants of {policy_file}: "
                              f"{fate}{hint}", "warning")


def scenario_tenants(loc: Located) -> list[tuple[str, KeyPath]]:
    """Tenants a located scenario names, with where, in file order."""
    data: Any = loc.data
    out: list[tuple[str, KeyPath]] = []
    for i, cls in enumerate((data.get("traffic") or {}).get("classes") or []):
        if isinstance(cls, dict) and isinstance(cls.get("tenant"), str):
            out.append((cls["tenant"], ("traffic", "classes", i, "tenant")))
    for i, event in enumerate(data.get("events") or []):
        budget = event.get("budget") if isinstance(event, dict) else None
        if isinstance(budget, dict) and isinstance(budget.get("tenant"), str):
            out.append((budget["tenant"], ("events", i, "budget", "tenant")))
    return out


def feed_file_problem(policy: Policy, loc: Located) -> Problem | None:
    """A warning if the policy's `file:` feed exists neither from the CWD nor beside it
    (where `serve` looks, in that order)."""
    source = policy.feed.source or ""
    if not source.startswith("file:"):
        return None
    path = Path(source.removeprefix("file:"))
    beside = Path(loc.file).parent / path
    if path.exists() or (not path.is_absolute() and beside.exists()):
        return None
    near = next((d for d in (path.parent, beside.parent) if d.is_dir()), None)
    names = [p.name for p in near.iterdir()] if near is not None else []
    # a relative path names both places serve looks in, once when they are one
    where = str(path) if path.is_absolute() or beside.resolve() == path.resolve() \
        else f"{path} (nor {beside}, beside the policy)"
    return Problem(loc.file, *loc.where(("feed", "source")),
                   f"feed.source: {where} does not exist: the router serves on the policy "
                   f"alone and counts the feed unreachable until it appears"
                   f"{did_you_mean(path.name, names)}", "warning")
