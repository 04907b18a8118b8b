"""What a tenant may do (`budgets.tenants.NAME`): rules no request header can loosen.

A request's tags are what the client asks for; a tenant's rules are what the
operator allows. They are applied to every parsed request before it is planned,
for the budget account it spends from, so a tenant the policy does not name
(sharing `default`'s budget) also shares `default`'s rules, and inventing a
tenant name escapes none of them:

- `residency` is a floor: added to what the request names and to
  `defaults.residency` (already added when parsing), so residency only ever
  narrows — a tenant pinned to GDPR that declares CCPA needs both;
- `max_cost_usd` caps each request: the smaller of it and `x-affinity-max-cost`;
- `models`: the request's model (after `defaults.model`) must be one of them; a
  request naming none is refused rather than sent to a node of any model.

`floor` gives the same residency floor to the fail-open route table
(`router.xds.resources`), so Envoy routing alone never lowers it either.
"""

from __future__ import annotations

import dataclasses

from router.core.policy import BudgetConfig, Policy, TenantBudget
from router.core.request import RouteRequest
from router.core.spend import account_of


def rules(budgets: BudgetConfig, tenant: str) -> TenantBudget | None:
    """The rules `tenant` is held to: those of the budget account it spends from."""
    account = account_of(budgets, tenant)
    return None if account is None else budgets.tenant(account)


def floor(policy: Policy, tenant: str) -> frozenset[str]:
    """The residency every request of `tenant` carries whatever it sends."""
    found = rules(policy.budgets, tenant)
    extra = found.residency if found is not None else frozenset()
    return policy.defaults.residency | extra


def narrow(req: RouteRequest, tenant: TenantBudget) -> RouteRequest | str:
    """`req` held to `tenant`'s rules, or why the tenant may not make it (a 403)."""
    if tenant.models is not None and req.model not in tenant.models:
        allowed = ", ".join(sorted(tenant.models))
        asked = "no model" if req.model is None else f"model '{req.model}'"
        return f"tenant '{req.tenant}' asked for {asked}; it may use only: {allowed}"
    residency = req.residency | tenant.residency if tenant.residency else req.residency
    cap = tenant.max_cost_usd
    max_cost = req.max_cost_usd if cap is None or (
        req.max_cost_usd is not None and req.max_cost_usd <= cap) else cap
    if residency == req.residency and max_cost == req.max_cost_usd:
        return req
    return dataclasses.replace(req, residency=residency, max_cost_usd=max_cost)


def fail_open_floors(policy: Policy) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """Residency floors for Envoy's own routes: (the floor of a request no tenant route
    matches, {tenant: floor} for each named tenant whose floor differs from it).

    A request Envoy cannot place by name (no tenant header: `defaults.tenant`; a name
    the policy lacks: `default`'s account) gets the union of the floors it might have,
    which only ever narrows.
    """
    budgets = policy.budgets
    anyone = floor(policy, policy.defaults.tenant)
    if budgets.unknown_tenant == "default":
        anyone |= floor(policy, budgets.default_tenant)
    named = {name: floor(policy, name) for name in sorted(budgets.tenants)}
    return anyone, {name: f for name, f in named.items() if f != anyone}
