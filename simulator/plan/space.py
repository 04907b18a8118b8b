"""A planner's search space (`plan --space FILE`), with located errors.

The SPACE file names what the planner may change and how far: nodes it may add per
hardware preset and site, nodes it may remove, reserved slots per cloud pool, and
numeric policy keys (`knobs`). The schema checks the file's shape; `cross_check`
then checks every name against the scenario and its policy (a node, a site, a
pool, a policy key), each finding placed at its FILE:LINE:COL like the policy's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from router.core.hardware import PRESETS, not_a_preset
from router.core.policy import Policy
from router.core.schema import Breach, Finding, Int, Num, Schema, Tags, Text, enforce
from router.policy.loader import place, validate_located
from router.policy.yamlloc import MAX_BYTES, Problem, load_located, read_text
from simulator.scenario import Scenario

Range = tuple[Num, Num]


def _ordered(value: Range) -> Range:
    if value[0] > value[1]:
        raise ValueError(f"expected [low, high] with low <= high, got {list(value)}")
    return value


Bounds = Annotated[Range, AfterValidator(_ordered)]


class AddNodes(Schema):
    """`add_nodes[]`: up to `max` more nodes of a hardware preset, at a site."""

    preset: Text = Field(description="hardware preset of the new nodes")
    site: Text | None = Field(default=None, description="the scenario's world.sites id; null: "
                                                        "each its own uplink")
    residency: Tags | None = Field(default=None, description="null: the template node's")
    min: Int = Field(default=0, ge=0, description="fewest to add")
    max: Int = Field(ge=0, le=64, description="most to add")
    like: Text | None = Field(default=None, description="the policy node whose slots, speed and "
                                                        "models they copy; null: the first of "
                                                        "the preset")

    @model_validator(mode="after")
    def _range(self) -> AddNodes:
        if self.preset not in PRESETS:
            enforce([Breach(("preset",), not_a_preset(self.preset))])
        if self.min > self.max:
            enforce([Breach(("min",), f"min {self.min} is above max {self.max}")])
        return self


class Reserved(Schema):
    """`reserved_slots.POOL` in its long form: a range and the fee per slot."""

    slots: Annotated[tuple[Int, Int], AfterValidator(_ordered)] = Field(
        description="[low, high] reserved slots")
    usd_per_hour: Num | None = Field(default=None, ge=0,
                                     description="fee per reserved slot; null: the pool's price")


def _reserved(value: Any) -> Any:
    return {"slots": value} if isinstance(value, list | tuple) else value


class Space(Schema):
    """A whole SPACE file."""

    version: Int = Field(default=1, ge=1, le=1, description="format version")
    add_nodes: tuple[AddNodes, ...] = Field(default=(), description="nodes that may be added")
    remove_nodes: tuple[Text, ...] = Field(default=(), description="nodes that may be removed")
    reserved_slots: dict[Text, Reserved] = Field(
        default_factory=dict, description="reserved slots per pool")
    knobs: dict[Text, Bounds] = Field(default_factory=dict,
                                      description="policy keys and their [low, high]")

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("reserved_slots"), dict):
            data = {**data, "reserved_slots": {k: _reserved(v)
                                               for k, v in data["reserved_slots"].items()}}
        return data

    @model_validator(mode="after")
    def _something(self) -> Space:
        if not (self.add_nodes or self.remove_nodes or self.reserved_slots or self.knobs):
            enforce([Breach((), "names nothing that may change: give add_nodes, remove_nodes, "
                                "reserved_slots or knobs")])
        return self


def _node_findings(space: Space, scenario: Scenario, policy: Policy) -> list[Finding]:
    nodes = {n.id: n for n in policy.nodes}
    sites = [s.id for s in scenario.world.sites]
    out: list[Finding] = []
    for i, add in enumerate(space.add_nodes):
        if add.site is not None and add.site not in sites:
            out.append(Finding(("add_nodes", i, "site"), f"'{add.site}' is not one of the "
                               f"scenario's world.sites ({', '.join(sites) or 'none'})"))
        if add.like is not None and add.like not in nodes:
            out.append(Finding(("add_nodes", i, "like"), f"'{add.like}' is not a node of the "
                               "policy"))
        elif add.like is None and not any(n.hardware == add.preset for n in policy.nodes):
            out.append(Finding(("add_nodes", i, "preset"), f"the policy has no '{add.preset}' "
                               "node to copy slots and speed from: name one with like"))
    for i, nid in enumerate(space.remove_nodes):
        if nid not in nodes:
            out.append(Finding(("remove_nodes", i), f"'{nid}' is not a node of the policy"))
    if len(set(space.remove_nodes)) < len(space.remove_nodes):
        out.append(Finding(("remove_nodes",), "names a node twice"))
    pools = {p.id for p in policy.pools}
    for pid in space.reserved_slots:
        if pid not in pools:
            out.append(Finding(("reserved_slots", pid), f"'{pid}' is not a cloud pool of the "
                               f"policy ({', '.join(sorted(pools))})", key=True))
    return out


def cross_check(space: Space, scenario: Scenario, policy: Policy,
                knob_error: Any) -> list[Finding]:
    """Every name in `space` the scenario or its policy does not have; `knob_error(path,
    value)` says what is wrong with setting a policy key (None when nothing is)."""
    out = _node_findings(space, scenario, policy)
    for path, (low, high) in space.knobs.items():
        for value in dict.fromkeys((low, high)):
            why = knob_error(path, value)
            if why:
                out.append(Finding(("knobs", path), why, key=True))
                break
    return out


def load_space(path: str | Path, scenario: Scenario, policy: Policy, knob_error: Any
               ) -> tuple[Space | None, list[Problem]]:
    """Read, validate and cross-check a SPACE file; (space or None, every located problem)."""
    text, problems = read_text(str(path), MAX_BYTES)
    if text is None:
        return None, problems
    loc, problems = load_located(text, str(path))
    if loc.data is None:
        return None, problems
    space, problems = validate_located(Space, loc)
    if not isinstance(space, Space):
        return None, problems
    found = [place(loc, f) for f in cross_check(space, scenario, policy, knob_error)]
    return (None if found else space), problems + found
