"""The simulator drives the server's `RequestControl`: a lease-throttled request waits on the
simulated clock and is decided again, and the open-request bound refuses as in production."""

from __future__ import annotations

import time
from pathlib import Path

from router.control import BUDGET_WAIT_S
from router.core.budget import BudgetLedger, Standing
from router.core.request import RouteRequest
from router.policy.loader import load_policy
from simulator.routers import EPOCH, REFUSED, WAIT, Adaptive, Choice, resume
from simulator.run import simulate
from simulator.scenario import load_scenario
from tests.server.test_workers import policy

ROOT = Path(__file__).resolve().parents[2]
# $0.01 of $0.03 in the HIPAA pool's tenant 'tight', within the SLO
CLOUD = RouteRequest(key="k", tenant="tight", residency=frozenset({"HIPAA"}), slo_ms=2000.0,
                     model=None, accept_degradation=True, max_cost_usd=None, payload_bytes=0)


def topup(adaptive: Adaptive, usd: float) -> None:
    """What the budget keeper's round brings: a lease of `usd` for 'tight'."""
    period = time.strftime("%Y-%m", time.gmtime(EPOCH))
    adaptive.runtime.ledger.sync("tight", period, Standing(0.0, usd, EPOCH + 60))


def test_a_throttled_request_waits_then_routes_once_the_lease_grows() -> None:
    adaptive = Adaptive(policy("redis://127.0.0.1:1/0"), ledger=BudgetLedger(leased=True))
    first = adaptive.decide(CLOUD, 1.0)
    assert first.mode == WAIT and first.wait_s == BUDGET_WAIT_S
    assert adaptive.control.open == 1  # still open while it waits, as a stream would be
    topup(adaptive, 0.02)
    routed = resume(first, 1.0 + first.wait_s)
    assert routed.mode == "cloud" and adaptive.control.held == 1
    adaptive.done(routed)
    assert (adaptive.control.open, adaptive.control.held) == (0, 0)


def test_no_top_up_is_a_refusal_after_one_wait() -> None:
    adaptive = Adaptive(policy("redis://127.0.0.1:1/0"), ledger=BudgetLedger(leased=True))
    first = adaptive.decide(CLOUD, 1.0)
    assert resume(first, 1.05) is REFUSED and adaptive.control.open == 0


class Watched(Adaptive):
    """Adaptive, remembering when each decision of a request was made (first or again)."""

    seen: list[tuple[bool, float]]

    def _decide(self, req: RouteRequest, first: bool, now: float) -> Choice:
        self.seen.append((first, now))
        return super()._decide(req, first, now)


def test_a_what_if_waits_on_its_own_clock_and_closes_every_request() -> None:
    scenario, problems = load_scenario(ROOT / "simulator" / "scenarios" / "fintech.yaml")
    assert scenario is not None, problems
    pol = load_policy(scenario.policy)
    adaptive = Watched(pol, ledger=BudgetLedger(leased=True))  # a lease nobody grants
    adaptive.seen = []
    result = simulate(scenario, pol, adaptive, requests=3000)
    again = [t for first, t in adaptive.seen if not first]
    # every request decided once by the core or the fast path, and again after each wait
    assert adaptive.fast is not None
    assert again and len(adaptive.seen) + adaptive.fast.taken == len(result.t) + len(again)
    assert "cloud" not in result.mode and WAIT not in result.mode and "" not in result.mode
    assert (adaptive.control.open, adaptive.control.held) == (0, 0)
    firsts = sorted(t for first, t in adaptive.seen if first)
    assert all(any(abs(t - BUDGET_WAIT_S - f) < 1e-9 for f in firsts) for t in again[:50])


def test_the_open_request_bound_refuses_in_a_what_if_as_in_production() -> None:
    scenario, problems = load_scenario(ROOT / "simulator" / "scenarios" / "fintech.yaml")
    assert scenario is not None, problems
    pol = load_policy(scenario.policy)
    bounded, free = Adaptive(pol, max_open=3), Adaptive(pol)
    few = simulate(scenario, pol, bounded, requests=3000)
    many = simulate(scenario, pol, free, requests=3000)
    assert few.mode.count("refused") > many.mode.count("refused")
    assert bounded.control.open == 0 and free.control.open == 0
