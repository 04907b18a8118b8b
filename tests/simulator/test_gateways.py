"""Several gateways in the simulator: leased slots never add up past a node, a gateway's
loss, affinity kept across gateways, and the scenario keys that state them."""

from __future__ import annotations

from pathlib import Path

from simulator.cli import router_for
from simulator.gateways import Gateways
from simulator.routers import Adaptive, Choice
from simulator.run import simulate
from simulator.scenario import TrafficClass, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """\
version: 1
policy: {policy}
duration_s: 60
seed: 5
traffic:
  rate_rps: {rate}
  keys: {{count: 400, zipf_s: 1.0}}
  classes:
    - {{name: vision, residency: [GDPR], slo_ms: 400, degrade: false, payload_kb: 4}}
gateways: [{{share: 0.7}}, {{share: 0.2}}, {{share: 0.1}}]
lease_sync_s: 0.25
events:
  - {{at_s: 20, gateway_down: 0}}
  - {{at_s: 40, gateway_up: 0}}
"""


def scenario(rate: float, tmp_path: Path):  # type: ignore[no-untyped-def]
    text = SCENARIO.format(policy=ROOT / "policies" / "example.yaml", rate=rate)
    parsed, problems = parse_scenario(text, str(tmp_path / "s.yaml"))
    assert parsed is not None, problems
    return parsed


class Checked(Gateways):
    """Gateways that check the fleet-wide bound after every decision."""

    worst = 0

    def route(self, cls: TrafficClass, key: str, now: float, payload_bytes: int) -> Choice:
        choice = super().route(cls, key, now, payload_bytes)
        for node in self.routers[0].runtime.snapshot.nodes:
            total = sum(r.runtime.tracker.load(node.id) for r in self.routers)
            self.worst = max(self.worst, total - node.slots)
        return choice


def test_three_gateways_never_put_more_than_a_node_holds(tmp_path: Path) -> None:
    sc = scenario(900.0, tmp_path)  # past the GDPR edge's slots: overflow goes to cloud
    from router.policy.loader import load_policy

    policy = load_policy(sc.policy)
    router = Checked(policy, [g.share for g in sc.gateways], sync_s=sc.lease_sync_s)
    result = simulate(sc, policy, router, requests=20_000)
    assert router.worst == 0  # some node full (the bound is reached), none past it
    assert result.mode.count("edge") > 0 and result.mode.count("cloud") > 0


def test_affinity_holds_across_gateways_at_low_load(tmp_path: Path) -> None:
    """The same ring everywhere: a key's requests land on the node one router would pick."""
    from router.policy.loader import load_policy

    sc = scenario(20.0, tmp_path)
    policy = load_policy(sc.policy)
    fleet = simulate(sc, policy, router_for(sc, policy), requests=1500)
    alone = simulate(sc, policy, Adaptive(policy), requests=1500)
    edge = [i for i, m in enumerate(alone.mode) if m == "edge"]
    assert len(edge) > 1000
    same = sum(fleet.node[i] == alone.node[i] for i in edge)
    assert same >= 0.95 * len(edge)


def test_a_gateway_event_must_name_a_gateway(tmp_path: Path) -> None:
    text = SCENARIO.format(policy=ROOT / "policies" / "example.yaml", rate=10).replace(
        "gateway_up: 0", "gateway_up: 3")
    parsed, problems = parse_scenario(text, "s.yaml")
    assert parsed is None
    assert any("gateway 3 is not one of the 3" in p.message for p in problems), problems
