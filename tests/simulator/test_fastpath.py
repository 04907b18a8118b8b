"""The simulator's fast path (simulator/fastpath.py) decides every request as the core does.

Each test runs the same scenario twice, once with every request decided by the core
(`Adaptive(fast=False)`) and once with the fast path on, and finds the runs identical:
every request's mode, node, quality, latency and cost, the time series, and the load
tracker's counts the shares are set from. The world runs the choices it is given, so one
request decided otherwise would change the rows after it. The runs: shipped scenarios with
their events moved into the first minutes (a throttled node, a lost node and its return, a
spot price spike, a preemption and a budget cut fall within the requests run); a node that
degrades keys and queues, so that every request is the fast path's; gateways that lease the
slots of one fleet; and fleets, policies and traffic drawn from seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from router.policy.loader import load_policy
from simulator.gateways import Gateways
from simulator.routers import Adaptive, Router
from simulator.run import Result, simulate
from simulator.scenario import Scenario, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "simulator" / "scenarios"
COLUMNS = ("t", "key", "cls", "tenant", "mode", "node", "pool", "quality", "latency_ms",
           "cost_usd", "cloud_usd", "home", "fill", "warm", "violations", "preempted", "util",
           "caps", "loads")
COUNTS = ("arrivals", "rigid", "loose", "loose_rigid", "ended", "blocked", "group_totals")


def shipped(name: str, events_at: tuple[float, ...] | None) -> Scenario:
    """A shipped scenario, its events (in order) moved to `events_at`."""
    scenario, problems = load_scenario(SCENARIOS / name)
    assert scenario is not None, problems
    if events_at is None:
        return scenario
    assert len(events_at) == len(scenario.events)
    return scenario.model_copy(update={"events": tuple(
        e.model_copy(update={"at_s": at}) for e, at in zip(scenario.events, events_at,
                                                           strict=True))})


def same(core: Result, fast: Result) -> None:
    for column in COLUMNS:
        assert getattr(fast, column) == getattr(core, column), column


def compared(scenario: Scenario, requests: int | None = None
             ) -> tuple[Adaptive, Adaptive, Result]:
    """(the core alone, the fast path, the run) of `scenario`, run both ways and found alike:
    every request's columns, the tracker's counts the shares are set from, the requests
    still open and held (none), and the classes the last table built."""
    policy = load_policy(scenario.policy)
    core_router, fast_router = Adaptive(policy, fast=False), Adaptive(policy)
    core = simulate(scenario, policy, core_router, requests=requests)
    same(core, simulate(scenario, policy, fast_router, requests=requests))
    for count in COUNTS:
        assert getattr(fast_router.runtime.tracker, count) == \
            getattr(core_router.runtime.tracker, count), count
    assert (fast_router.control.open, fast_router.control.held) == \
        (core_router.control.open, core_router.control.held) == (0, 0)
    assert fast_router.runtime.snapshot.class_keys() == core_router.runtime.snapshot.class_keys()
    return core_router, fast_router, core


@pytest.mark.parametrize(("name", "events_at", "requests"), [
    ("twin.yaml", None, None),  # a node lost at 25 s and back at 45 s, 5-s refreshes
    ("fintech.yaml", (30.0, 60.0), 80_000),  # queues, degraded keys, a throttle, a node lost
    ("camera.yaml", (30.0, 60.0), 30_000),  # 1.5 MB frames, split and shed keys, a node back
    ("spot-spike.yaml", (30.0, 50.0, 60.0, 70.0), 30_000),  # prices, preemption, budget cut
])
def test_the_fast_path_decides_every_request_as_the_core(
        name: str, events_at: tuple[float, ...] | None, requests: int | None) -> None:
    core_router, fast_router, core = compared(shipped(name, events_at), requests)
    # both paths decided requests: most took the fast one, the others the core
    assert fast_router.fast is not None and core_router.fast is None
    taken = fast_router.fast.taken
    assert 0.6 * len(core.t) < taken < len(core.t)
    assert {"edge", "edge-degraded"} <= set(core.mode) and \
        {"split", "cloud"} & set(core.mode)


DEGRADING = """\
version: 1
refresh_seconds: 10
edge:
  queue_per_slot: 1
  nodes:
    - {id: n1, address: "127.0.0.1:9101", hardware: rtx-4090, weight: 1, slots: 16,
       residency: [GDPR], models: [vision-v3], base_latency_ms: 20}
cloud:
  pools:
    - {id: eu, address: "127.0.0.1:9201", residency: [GDPR], models: ["*"], latency_ms: 120}
budgets: {store: memory}
"""


def test_a_degraded_rung_builds_the_class_the_cores_ranking_builds(tmp_path: Path) -> None:
    """A node that degrades a share of its keys (their load past half its fill, under it
    degraded) and queues rather than spill: every request is the fast path's, full or
    degraded. The core ranks a degraded request's rungs off the edge too, and its walk over
    feature slots builds the class of the residency with any model, which the report's caps
    count (the largest cap over the classes built): the fast path builds it alike."""
    (tmp_path / "policy.yaml").write_text(DEGRADING)
    text = ("version: 1\npolicy: policy.yaml\nduration_s: 60\nseed: 3\ntraffic:\n"
            "  rate_rps: [[0, 100], [20, 450]]\n  keys: {count: 2000, zipf_s: 1.0}\n  classes:\n"
            "    - {name: v, residency: [GDPR], model: vision-v3, slo_ms: 200, payload_kb: 8}\n")
    scenario, problems = parse_scenario(text, str(tmp_path / "s.yaml"))
    assert scenario is not None, problems
    core_router, fast_router, core = compared(scenario)
    assert set(core.mode) == {"edge", "edge-degraded"}
    assert core.mode.count("edge-degraded") > 0.1 * len(core.t)
    assert fast_router.fast is not None and fast_router.fast.taken == len(core.t)
    assert (frozenset({"GDPR"}), None) in core_router.runtime.snapshot.class_keys()


GATEWAYS = """\
version: 1
policy: {policy}
duration_s: 30
seed: 11
traffic:
  rate_rps: 900
  keys: {{count: 400, zipf_s: 1.0}}
  classes:
    - {{name: vision, residency: [GDPR], slo_ms: 400, degrade: false, payload_kb: 4}}
    - {{name: chat, residency: [GDPR], slo_ms: 120, payload_kb: 8}}
gateways: [{{share: 0.7}}, {{share: 0.3}}]
lease_sync_s: 0.25
events:
  - {{at_s: 10, gateway_down: 0}}
  - {{at_s: 20, gateway_up: 0}}
"""


def test_under_slot_leases_too(tmp_path: Path) -> None:
    """Several gateways lease the slots of one fleet: their walks count unmet demand, which
    the fast path leaves to the core where it could count any."""
    text = GATEWAYS.format(policy=ROOT / "policies" / "example.yaml")
    scenario, problems = parse_scenario(text, str(tmp_path / "s.yaml"))
    assert scenario is not None, problems
    policy = load_policy(scenario.policy)

    def gateways(fast: bool) -> Router:
        router = Gateways(policy, [g.share for g in scenario.gateways],
                          sync_s=scenario.lease_sync_s)
        if not fast:
            for r in router.routers:
                r.fast = None
        return router

    core_router, fast_router = gateways(False), gateways(True)
    core = simulate(scenario, policy, core_router, requests=20_000)
    fast = simulate(scenario, policy, fast_router, requests=20_000)
    same(core, fast)
    assert isinstance(fast_router, Gateways)
    taken = sum(r.fast.taken for r in fast_router.routers if r.fast is not None)
    assert 0 < taken < len(core.t)
    assert {"edge", "cloud"} <= set(core.mode)


HARDWARE = ("generic", "jetson-agx-orin", "rtx-4090", "nvidia-l4", "a100-80g")
MODELS = (["a"], ["b"], ["a", "b"], ['"*"'])


def drawn(seed: int, tmp_path: Path) -> Scenario:
    """A fleet, a policy and traffic drawn from `seed`: 2-5 nodes of mixed slots, residency
    and models, two pools, tenants with a small budget or rules, classes of every kind
    (degradable or not, a max cost that an edge inference's marginal cost may pass, a model,
    a payload from 4 KB to 1 MB), an offered load from half to over the edge's slots, and a
    node lost and back or throttled."""
    rng = np.random.default_rng(seed)
    nodes, slots, base = [], 0, 0.0
    for i in range(int(rng.integers(2, 6))):
        tags = [t for t in ("GDPR", "CCPA") if rng.random() < 0.6] or ["GDPR"]
        models = MODELS[int(rng.integers(len(MODELS)))]
        n, ms = int(rng.choice([1, 2, 4, 8])), int(rng.integers(40, 200))
        slots, base = slots + n, base + ms
        nodes.append(f'    - {{id: n{i}, address: "127.0.0.1:{9100 + i}", '
                     f"hardware: {HARDWARE[int(rng.integers(len(HARDWARE)))]}, "
                     f"weight: {int(rng.integers(1, 5))}, slots: {n}, "
                     f"residency: [{', '.join(tags)}], models: [{', '.join(models)}], "
                     f"base_latency_ms: {ms}}}")
    refusing = "refuse" if rng.random() < 0.3 else "default"
    (tmp_path / "policy.yaml").write_text(
        f"version: 1\nrefresh_seconds: {int(rng.choice([5, 10]))}\n"
        f"hashing: {{balance_factor: {rng.choice([0.1, 0.25, 0.5])}, "
        f"min_cap_fraction: {rng.choice([0.0, 0.5])}}}\n"
        f"edge:\n  queue_per_slot: {int(rng.choice([0, 1]))}\n"
        f"  usd_per_inference: {rng.choice([0.0, 0.00002]):.1e}\n  nodes:\n"
        + "\n".join(nodes) + "\ncloud:\n  pools:\n"
        '    - {id: eu, address: "127.0.0.1:9201", residency: [GDPR], models: ["*"], '
        "latency_ms: 110, usd_per_hour: 2.0}\n"
        '    - {id: us, address: "127.0.0.1:9202", residency: [CCPA], models: ["*"], '
        "latency_ms: 140, usd_per_hour: 1.5}\n"
        f"budgets:\n  store: memory\n  unknown_tenant: {refusing}\n  tenants:\n"
        "    default: {limit_usd: 1000}\n    thrifty: {limit_usd: 0.02}\n"
        "    ruled: {limit_usd: 1000, models: [a], residency: [GDPR]}\n")
    classes = []
    for i in range(int(rng.integers(2, 5))):
        tenant = ("default", "thrifty", "ruled", "stranger")[int(rng.integers(4))]
        tags = [t for t in ("GDPR", "CCPA") if rng.random() < 0.4]
        model = ("a", "b", "null")[int(rng.integers(3))]
        cost = "null" if rng.random() < 0.7 else "0.00001"
        classes.append(f"    - {{name: c{i}, tenant: {tenant}, residency: [{', '.join(tags)}], "
                       f"model: {model}, slo_ms: {int(rng.choice([100, 250, 500, 1000]))}, "
                       f"degrade: {str(rng.random() < 0.6).lower()}, max_cost_usd: {cost}, "
                       f"payload_kb: {int(rng.choice([4, 64, 1024]))}}}")
    rate = float(rng.uniform(0.5, 1.3)) * slots * 1000.0 / (base / len(nodes))
    events = ("  - {at_s: 15, node_down: n0}\n  - {at_s: 30, node_up: n0}\n"
              if rng.random() < 0.5 else
              "  - {at_s: 15, throttle: {node: n1, compute_score: 0.4}}\n")
    text = (f"version: 1\npolicy: policy.yaml\nduration_s: 45\nseed: {seed}\ntraffic:\n"
            f"  rate_rps: {rate:.0f}\n  keys: {{count: 600, zipf_s: 1.1}}\n  classes:\n"
            + "\n".join(classes) + "\nevents:\n" + events)
    scenario, problems = parse_scenario(text, str(tmp_path / "s.yaml"))
    assert scenario is not None, problems
    return scenario


@pytest.mark.parametrize("seed", range(12))
def test_on_a_drawn_fleet_and_traffic_the_fast_path_decides_as_the_core(
        seed: int, tmp_path: Path) -> None:
    _, fast_router, core = compared(drawn(seed, tmp_path), 6000)
    assert fast_router.fast is not None and fast_router.fast.taken < len(core.t)
