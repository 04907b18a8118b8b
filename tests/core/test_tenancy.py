"""A tenant's rules (residency floor, max cost, models) and the policy's residency floor:
no request header loosens them, and a made-up tenant name escapes none of them."""

from __future__ import annotations

import pytest

from router import wire
from router.core.admit import decide, finish
from router.core.policy import BudgetConfig, Defaults, Policy, TenantBudget
from router.core.tenancy import fail_open_floors, floor
from router.runtime import Runtime

from .factory import NOW, ledger, node, policy, pool, request, table

# one node per residency set, so where a request lands says which residency it carried
FLEET = policy([node(0, residency=["CCPA"]), node(1, residency=["GDPR"]),
                node(2, residency=["GDPR", "CCPA"])], [pool("eu", residency=["GDPR"])])
WHERE = {"n0000": {"CCPA"}, "n0001": {"GDPR"}, "n0002": {"GDPR", "CCPA"}}


def with_tenants(pol: Policy, unknown: str = "default", **tenants: TenantBudget) -> Policy:
    """`pol` with these tenant rules."""
    budgets = BudgetConfig(unknown_tenant=unknown, tenants=tenants)
    return pol.model_copy(update={"budgets": budgets}).with_digest("test")


def with_defaults(pol: Policy, **values: object) -> Policy:
    """`pol` with these `defaults`."""
    return pol.model_copy(update={"defaults": Defaults(**values)}).with_digest("test")


GDPR = frozenset({"GDPR"})


@pytest.mark.parametrize(("tenant", "sent", "needs"), [
    pytest.param("acme", [], {"GDPR"}, id="floor-without-a-header"),
    pytest.param("acme", ["CCPA"], {"GDPR", "CCPA"}, id="declaring-ccpa-needs-both"),
    pytest.param("acme", ["GDPR"], {"GDPR"}, id="the-floor-itself"),
    pytest.param("made-up", ["CCPA"], {"GDPR", "CCPA"}, id="unknown-name-shares-default-floor"),
    pytest.param("open", ["CCPA"], {"CCPA"}, id="a-tenant-without-a-floor"),
])
def test_a_tenant_residency_floor_is_added_to_what_it_sends(
        tenant: str, sent: list[str], needs: set[str]) -> None:
    pinned = TenantBudget(limit_usd=1, residency=GDPR)
    pol = with_tenants(FLEET, acme=pinned, default=pinned, open=TenantBudget(limit_usd=1))
    tab, led = table(pol), ledger(pol)
    for i in range(30):
        routed = decide(request(f"k{i}", residency=sent, tenant=tenant), tab, led, now=NOW)
        d = routed.decision
        assert d.status == 200 and needs <= WHERE[d.node], (d.node, d.reason)
        finish(routed, tab.tracker, led)


def test_a_floor_no_node_meets_is_refused_not_lowered() -> None:
    pol = with_tenants(FLEET, acme=TenantBudget(limit_usd=1, residency=frozenset({"HIPAA"})))
    d = decide(request("k", residency=["CCPA"], tenant="acme"), table(pol), ledger(pol),
               now=NOW).decision
    assert (d.status, d.reason) == (503, wire.R_RESIDENCY)


@pytest.mark.parametrize(("sent", "cap", "allowed"), [
    pytest.param(None, 0.00005, False, id="tenant-cap-below-the-pool"),
    pytest.param(1.0, 0.00005, False, id="a-larger-header-is-cut-to-the-cap"),
    pytest.param(None, 1.0, True, id="tenant-cap-above-the-pool"),
    pytest.param(0.00005, 1.0, False, id="a-smaller-header-still-applies"),
])
def test_a_tenant_max_cost_caps_every_request(sent: float | None, cap: float,
                                              allowed: bool) -> None:
    pol = with_tenants(policy([], [pool()]), acme=TenantBudget(limit_usd=10, max_cost_usd=cap))
    d = decide(request("k", tenant="acme", max_cost=sent), table(pol), ledger(pol),
               now=NOW).decision
    assert (d.status == 200) is allowed, d.detail
    if not allowed:
        assert d.reason == wire.R_MAX_COST


@pytest.mark.parametrize(("model", "status"), [
    pytest.param("vision-v3", 200, id="allowed"),
    pytest.param("llm-70b", 403, id="another-model"),
    pytest.param(None, 403, id="no-model-named"),
])
def test_a_tenant_may_use_only_its_models(model: str | None, status: int) -> None:
    rules = TenantBudget(limit_usd=1, models=frozenset({"vision-v3"}))
    pol = with_tenants(FLEET, acme=rules)
    d = decide(request("k", tenant="acme", model=model), table(pol), ledger(pol),
               now=NOW).decision
    assert d.status == status
    if status == 403:
        assert (d.error, d.reason) == (wire.E_MODEL_NOT_ALLOWED, wire.R_TENANT_MODEL)
        assert "vision-v3" in d.detail


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-header"),
    pytest.param({wire.H_RESIDENCY: "CCPA"}, id="header-names-another"),
    pytest.param({wire.H_TAGS: '{"data_residency": []}'}, id="json-empty-list"),
    pytest.param({wire.H_TAGS: '{"data_residency": ["CCPA"]}'}, id="json-names-another"),
    pytest.param({wire.H_TAGS: '{"data_residency": null}'}, id="json-null"),
])
def test_no_header_form_clears_or_lowers_the_policy_default(headers: dict[str, str]) -> None:
    rt = Runtime(with_defaults(FLEET, residency=GDPR), clock=lambda: NOW)
    for i in range(20):
        routed = rt.route({wire.H_KEY: f"k{i}", **headers})
        assert routed.decision.status == 200
        assert "GDPR" in WHERE[routed.decision.node]
        rt.finish(routed)


def test_fail_open_floors_name_each_tenant_whose_floor_differs() -> None:
    pinned = TenantBudget(limit_usd=1, residency=frozenset({"HIPAA"}))
    pol = with_defaults(with_tenants(FLEET, acme=pinned, open=TenantBudget(limit_usd=1)),
                        residency=GDPR)
    assert floor(pol, "acme") == {"GDPR", "HIPAA"} and floor(pol, "open") == GDPR
    assert fail_open_floors(pol) == (GDPR, {"acme": frozenset({"GDPR", "HIPAA"})})
    # default's floor is what an unknown name gets, so it joins the floor of the unnamed
    shared = with_tenants(FLEET, default=pinned, acme=TenantBudget(limit_usd=1))
    assert fail_open_floors(shared) == (frozenset({"HIPAA"}), {"acme": frozenset()})
    # ... unless unknown names are refused
    refused = with_tenants(FLEET, unknown="refuse", default=pinned)
    assert fail_open_floors(refused) == (frozenset({"HIPAA"}), {})
