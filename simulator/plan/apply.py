"""One point of the search space made real: the policy and scenario a trial runs.

The policy is changed as the YAML data its file holds (so `recommended.yaml` is a
whole policy file, validated by the policy's own loader before any run):

- an added node copies its template node (`like`, else the first node of its
  preset) with the preset as `hardware`, its own id (`SITE-PRESET-N`), a placeholder
  address (127.0.0.1, ports from 20001: set the real one before deploying), the
  entry's residency if given, and joins its site's uplink in the scenario's world;
- a removed node leaves the policy and its site;
- reserved slots on a reserved pool set its `reserved_slots` (0 drops the pool); on a
  spot or on-demand pool, N > 0 adds a reserved pool `POOL-reserved` beside it, the
  same speed and price key, a placeholder address (127.0.0.1, ports from 20101), and
  `usd_per_hour` the entry's fee per slot (else the pool's);
- a knob sets the policy key at its dotted path (`budgets.tenants.acme.limit_usd`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from router.core.policy import Policy
from router.policy.loader import PolicyError, policy_from_text
from simulator.plan.space import Space
from simulator.scenario import Scenario
from simulator.sites import check_world

FIRST_PORT = 20001  # placeholder addresses of added nodes


@dataclass(frozen=True)
class Choice:
    """A point of the space: nodes added per entry, removed, reserved slots, knob values."""

    add: tuple[int, ...] = ()
    remove: frozenset[str] = frozenset()
    reserved: dict[str, int] = field(default_factory=dict)
    knobs: dict[str, float] = field(default_factory=dict)

    def readable(self, space: Space) -> dict[str, Any]:
        """The choice as pareto.json shows it."""
        adds = {f"{a.preset}@{a.site or 'own-uplink'}#{i}": n
                for i, (a, n) in enumerate(zip(space.add_nodes, self.add, strict=True))}
        return {"add_nodes": adds, "remove_nodes": sorted(self.remove),
                "reserved_slots": dict(self.reserved), "knobs": dict(self.knobs)}


class KnobError(ValueError):
    """A knob's path cannot be set in this policy."""


def set_key(data: dict[str, Any], path: str, value: float) -> None:
    """Set the policy key at dotted `path`; a top-level section may be absent, any deeper
    mapping must be in the file (so a misspelt tenant is an error, not a new tenant)."""
    parts = path.split(".")
    if len(parts) < 2 or parts[0] not in Policy.model_fields or not all(parts):
        raise KnobError(f"'{path}' is not a policy key (SECTION.KEY, a section one of "
                        f"{', '.join(Policy.model_fields)})")
    at: Any = data.setdefault(parts[0], {})
    for depth, part in enumerate(parts[1:-1], start=1):
        if not isinstance(at, dict) or part not in at:
            raise KnobError(f"'{path}': the policy has no '{'.'.join(parts[:depth + 1])}'")
        at = at[part]
    if not isinstance(at, dict):
        raise KnobError(f"'{path}': '{'.'.join(parts[:-1])}' is not a mapping")
    at[parts[-1]] = value


def knob_checker(data: dict[str, Any], file: str) -> Any:
    """A `knob_error(path, value)` for `space.cross_check`: the first reason the policy
    refuses the value there, or None."""

    def knob_error(path: str, value: float) -> str | None:
        trial = copy.deepcopy(data)
        try:
            set_key(trial, path, value)
            policy_from_text(yaml.safe_dump(trial, sort_keys=False), file)
        except KnobError as exc:
            return str(exc)
        except PolicyError as exc:
            first = next((p for p in exc.problems if p.severity == "error"), exc.problems[0])
            return f"the policy refuses {value!r} here: {first.message}"
        return None

    return knob_error


def _added(data: dict[str, Any], space: Space, choice: Choice, uplinks: dict[str, float]
           ) -> list[tuple[str, str | None]]:
    """Append the chosen nodes to the policy data; (node id, site) of each."""
    nodes = data["edge"]["nodes"]
    taken = {n["id"] for n in nodes}
    out: list[tuple[str, str | None]] = []
    port = FIRST_PORT
    for entry, count in zip(space.add_nodes, choice.add, strict=True):
        like = next(n for n in nodes if (n["id"] == entry.like if entry.like
                                          else n.get("hardware") == entry.preset))
        for k in range(1, count + 1):
            node = copy.deepcopy(like)
            if node.get("hardware") != entry.preset:
                node.pop("usd_per_hour", None)  # the template's own figure is not this preset's
            node_id = f"{entry.site or 'own'}-{entry.preset}-{k}"
            while node_id in taken:
                node_id += "x"
            taken.add(node_id)
            node.update(id=node_id, address=f"127.0.0.1:{port}", hardware=entry.preset)
            port += 1
            if entry.residency is not None:
                node["residency"] = sorted(entry.residency)
            if entry.site is not None:
                node["uplink_mbps"] = uplinks[entry.site]
            nodes.append(node)
            out.append((node_id, entry.site))
    return out


def _reserve(data: dict[str, Any], space: Space, choice: Choice) -> None:
    pools = data["cloud"]["pools"]
    for pid, slots in choice.reserved.items():
        pool = next(p for p in pools if p["id"] == pid)
        if pool.get("pricing") == "reserved":
            if slots:
                pool["reserved_slots"] = slots
            else:
                pools.remove(pool)
        elif slots:
            fee = space.reserved_slots[pid].usd_per_hour
            extra = {k: v for k, v in pool.items() if k not in ("max_inflight", "id")}
            port = FIRST_PORT + 100 + len(pools)  # its own gateway address: a placeholder
            extra.update(pricing="reserved", reserved_slots=slots, address=f"127.0.0.1:{port}",
                         usd_per_hour=fee if fee is not None else pool.get("usd_per_hour", 2.0))
            pools.insert(pools.index(pool), {"id": f"{pid}-reserved", **extra})


def candidate(data: dict[str, Any], scenario: Scenario, space: Space, choice: Choice,
              file: str) -> tuple[str, Policy, Scenario]:
    """(policy text, policy, scenario) of `choice`; PolicyError or ValueError when the
    result is not a valid policy and world."""
    out = copy.deepcopy(data)
    edge = out.setdefault("edge", {})
    edge["nodes"] = [n for n in edge.get("nodes", []) if n["id"] not in choice.remove]
    out.setdefault("cloud", {}).setdefault("pools", [])
    uplinks = {s.id: float(s.uplink_mbps) for s in scenario.world.sites}
    added = _added(out, space, choice, uplinks)
    _reserve(out, space, choice)
    for path, value in choice.knobs.items():
        set_key(out, path, value)
    text = yaml.safe_dump(out, sort_keys=False, width=100)
    policy = policy_from_text(text, file)
    sites = []
    for site in scenario.world.sites:
        nodes = [n for n in site.nodes if n not in choice.remove]
        nodes += [nid for nid, at in added if at == site.id]
        sites.append(site.model_copy(update={"nodes": tuple(nodes)}))
    world = scenario.world.model_copy(update={"sites": tuple(sites)})
    planned = scenario.model_copy(update={"world": world})
    wrong = check_world(world, policy)
    if wrong:
        raise ValueError("; ".join(wrong))
    return text, policy, planned
