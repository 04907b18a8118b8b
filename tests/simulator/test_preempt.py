"""Spot preemption in the world: the notice reaches the router through the feed, the reclaim
ends what the reclaimed instances were computing, and the report counts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.core.policy import CloudPool
from simulator.baselines import make_baseline
from simulator.pools import Pool
from simulator.report import summarize
from simulator.routers import Adaptive, Router
from simulator.run import Result, simulate
from simulator.scenario import parse_scenario
from tests.core.factory import policy as make_policy

SCENARIO = """\
version: 1
policy: {policy}
duration_s: 40
seed: 3
traffic:
  rate_rps: 100
  classes: [{{name: any, slo_ms: 500, degrade: false, payload_kb: 1}}]
events:
  - {{at_s: 10, preempt: {{pool: spot, fraction: 1.0, notice_s: {notice}}}}}
"""


def run(tmp_path: Path, notice: float, which: str) -> tuple[Result, dict[str, object]]:
    """The scenario through hybrid-router or a baseline, and its summary."""
    pool = CloudPool(id="spot", address="127.0.0.1:9902", instance_type="h100-spot",
                     latency_ms=120.0, compute_ms=200.0, usd_per_hour=2.1)
    pol = make_policy([], [pool], limit=1000.0)
    (tmp_path / "p.yaml").write_text("version: 1\n")  # the scenario names a file; unused here
    scenario, problems = parse_scenario(SCENARIO.format(policy="p.yaml", notice=notice),
                                        str(tmp_path / "s.yaml"))
    assert scenario is not None, problems
    router: Router = Adaptive(pol) if which == "hybrid-router" else make_baseline(pol, which)
    res = simulate(scenario, pol, router)
    return res, summarize(res, pol)


def test_the_router_stops_at_the_notice_and_loses_nothing(tmp_path: Path) -> None:
    res, report = run(tmp_path, notice=5.0, which="hybrid-router")
    after = [m for t, m in zip(res.t, res.mode, strict=True) if t >= 10.0]
    before = [m for t, m in zip(res.t, res.mode, strict=True) if t < 10.0]
    assert set(before) == {"cloud"} and set(after) == {"refused"}  # nowhere else to go
    assert report["preempted_in_flight"] == 0


def test_a_router_that_ignores_the_notice_loses_what_was_in_flight(tmp_path: Path) -> None:
    res, report = run(tmp_path, notice=5.0, which="cloud-only")
    caught = report["preempted_in_flight"]
    # ~100 requests/s for ~0.32 s each are in flight at the reclaim: all of them are lost
    assert 15 <= caught <= 60, caught
    lost = [i for i, t in enumerate(res.t) if 14.0 < t < 15.0]
    assert all(res.mode[i] == "cloud" for i in lost)
    assert report["slo_attainment"] < 0.5  # after the reclaim every request times out


@pytest.mark.parametrize(("bound", "fraction", "computing", "caught", "cap"), [
    pytest.param(16, 0.5, 6, 0, 8, id="bounded-router-obeyed"),
    pytest.param(16, 0.5, 12, 4, 8, id="bounded-over-what-is-left"),
    pytest.param(0, 0.25, 12, 3, None, id="elastic-spread-evenly"),
    pytest.param(0, 1.0, 12, 12, 0, id="elastic-all-gone"),
])
def test_a_reclaim_ends_what_the_instances_that_went_were_computing(
        bound: int, fraction: float, computing: int, caught: int, cap: int | None) -> None:
    pool = Pool(CloudPool(id="spot", address="127.0.0.1:9902", max_inflight=bound))
    assert pool.reclaim(fraction, computing) == caught
    assert pool.cap == cap
