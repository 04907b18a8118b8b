"""Which uplink each transfer crosses: the scenario's sites, checked against the policy."""

from __future__ import annotations

import sys
from pathlib import Path

from router.core.policy import Policy
from router.policy.loader import load_policy_or_report
from simulator.jobs import PoolJob
from simulator.physics import Link
from simulator.scenario import Scenario, WorldConfig, load_scenario

GATEWAY = "gateway"  # the site of the gateway when the scenario names none


Uplink = Link[PoolJob]  # what crosses an uplink: a request bound for a pool


def site_links(policy: Policy, cfg: WorldConfig) -> tuple[dict[str, Uplink], dict[str, Uplink],
                                                          Uplink]:
    """(links by site, each node's site link, the gateway's) from `world.sites`.

    A node no site names has a site of its own with its `uplink_mbps`; the gateway
    is at `world.gateway_site`, or at a site of its own with `cloud.uplink_mbps`.
    """
    links: dict[str, Uplink] = {}
    node_link: dict[str, Uplink] = {}
    for site in cfg.sites:
        link = links[site.id] = Link(site.uplink_mbps)
        for nid in site.nodes:
            node_link[nid] = link
    for n in policy.nodes:
        if n.id not in node_link:
            node_link[n.id] = links[f"node:{n.id}"] = Link(n.uplink_mbps)
    if cfg.gateway_site is not None:
        gateway = links[cfg.gateway_site]
    else:
        gateway = links[GATEWAY] = Link(policy.cloud.uplink_mbps)
    return links, node_link, gateway


def check_world(cfg: WorldConfig, policy: Policy) -> list[str]:
    """What in the scenario's `world` the policy contradicts (unknown nodes, sites)."""
    known = {n.id for n in policy.nodes}
    out = []
    placed: dict[str, str] = {}
    for i, site in enumerate(cfg.sites):
        for nid in site.nodes:
            if nid not in known:
                out.append(f"world.sites[{i}].nodes: '{nid}' is not a node of the policy")
            elif nid in placed:
                out.append(f"world.sites[{i}].nodes: '{nid}' is already at site "
                           f"'{placed[nid]}'")
            placed.setdefault(nid, site.id)
    if cfg.gateway_site is not None and cfg.gateway_site not in {s.id for s in cfg.sites}:
        out.append(f"world.gateway_site: '{cfg.gateway_site}' is not one of world.sites")
    return out


def load_checked(path: str | Path, policy_file: str | None = None
                 ) -> tuple[Scenario, Policy] | None:
    """A scenario file, the policy it names (or `policy_file` instead) and its world checked
    against that policy, or None after printing every problem (FILE:LINE:COL) on stderr."""
    scenario, problems = load_scenario(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if scenario is None or any(p.severity == "error" for p in problems):
        return None
    if policy_file is not None:
        scenario = scenario.model_copy(update={"policy": Path(policy_file)})
    policy = load_policy_or_report(scenario.policy)
    if policy is None:
        return None
    contradictions = check_world(scenario.world, policy)
    for line in contradictions:
        print(f"{scenario.file}: {line}", file=sys.stderr)
    return None if contradictions else (scenario, policy)
