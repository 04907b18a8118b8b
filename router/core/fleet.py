"""Edge nodes and cloud pools as the policy declares them (`edge`, `cloud`; docs/reference.md).

Part of the policy model (`router.core.policy`); ids and addresses are checked here,
and their uniqueness across nodes and pools by `duplicates`, which reads raw entries so
that an entry with another error still counts as taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from router.core.hardware import PRESETS, not_a_preset, preset_usd_per_hour
from router.core.schema import Breach, Int, KeyPath, Num, Schema, Tags, Text, enforce, reraise

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTPORT = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")


def valid_hostport(value: str) -> bool:
    """Whether `value` is host:port with a port in 1..65535."""
    m = _HOSTPORT.match(value)
    return m is not None and 0 < int(m.group("port")) < 65536


def _id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"'{value}' is not a valid id (letters, digits, . _ -)")
    return value


def _hostport(value: str) -> str:
    if not valid_hostport(value):
        raise ValueError(f"'{value}' is not host:port")
    return value


Id = Annotated[Text, AfterValidator(_id)]
HostPort = Annotated[Text, AfterValidator(_hostport)]

# Keys of older policies that no longer exist, with what to write instead (a located error
# that says exactly what to change, rather than a bare "unknown key").
_EDGE_MOVED = ("removed: owned hardware costs per hour, not per inference. Put each node's "
               "amortized hardware, power and hosting in edge.nodes[].usd_per_hour (or name a "
               "hardware preset: docs/reference.md, 'Hardware presets'), and a marginal cost per "
               "inference (power), if any, in edge.usd_per_inference")
_NODE_MOVED = ("removed: owned hardware costs per hour, not per inference. Set this node's "
               "usd_per_hour (or name a hardware preset: docs/reference.md, 'Hardware "
               "presets'), and its marginal cost per inference (power), if any, in "
               "usd_per_inference")


def _without_removed(data: Any, handler: Any, title: str, moved: str) -> Any:
    """Validate `data` without `cost_per_inference_usd`, reporting that key as moved."""
    if not (isinstance(data, Mapping) and "cost_per_inference_usd" in data):
        return handler(data)
    rest = {k: v for k, v in data.items() if k != "cost_per_inference_usd"}
    gone = [Breach(("cost_per_inference_usd",), moved, key=True)]
    try:
        handler(rest)
    except ValidationError as exc:
        reraise(title, exc, gone)
    reraise(title, None, gone)
    raise AssertionError("unreachable")  # reraise raised: `gone` is not empty


class EdgeNode(Schema):
    """One edge node as the policy declares it (`edge.nodes[]`)."""

    id: Id = Field(description="unique id across nodes and pools (letters, digits, . _ -)")
    address: HostPort = Field(description="host:port Envoy sends this node's requests to")
    hardware: Text = Field(default="generic", description="hardware class, for reports")
    weight: Num = Field(default=1.0, gt=0, description="relative share of keys")
    slots: Int = Field(default=4, gt=0, description="concurrent inferences")
    residency: Tags = Field(default=frozenset(), description="residency tags this node satisfies")
    models: Tags = Field(default=frozenset({"*"}), description="models served; '*' means any")
    base_latency_ms: Num = Field(default=50.0, gt=0, description="unloaded latency")
    usd_per_hour: Num | None = Field(
        default=None, ge=0,
        description="fixed cost of owning the node (amortized hardware, power, hosting), "
                    "whether it serves or not; null: its hardware preset's")
    usd_per_inference: Num | None = Field(
        default=None, ge=0,
        description="marginal cost of one inference (power); null: edge.usd_per_inference")
    uplink_mbps: Num = Field(
        default=100.0, gt=0, description="site uplink for split payloads")
    feature_ms: Num = Field(
        default=5.0, ge=0, description="feature extraction time for a split")
    feature_slots: Int = Field(
        default_factory=lambda data: data["slots"], ge=0,
        description="concurrent feature extractions, apart from slots; default: slots")

    @model_validator(mode="wrap")
    @classmethod
    def _moved(cls, data: Any, handler: Any) -> EdgeNode:
        node: EdgeNode = _without_removed(data, handler, cls.__name__, _NODE_MOVED)
        return node

    @model_validator(mode="after")
    def _priced(self) -> EdgeNode:
        if self.usd_per_hour is None and self.hardware not in PRESETS:
            enforce([Breach(("hardware",), f"{not_a_preset(self.hardware)}: name one, or set "
                            "usd_per_hour for this node")])
        return self

    @property
    def fixed_usd_per_hour(self) -> float:
        """What owning the node costs per hour: `usd_per_hour`, else its preset's."""
        if self.usd_per_hour is not None:
            return self.usd_per_hour
        return preset_usd_per_hour(self.hardware) or 0.0

    def serves(self, model: str | None) -> bool:
        """Whether this node serves `model` (None means any)."""
        return model is None or "*" in self.models or model in self.models


class CloudPool(Schema):
    """One cloud GPU pool (`cloud.pools[]`)."""

    id: Id = Field(description="unique id across nodes and pools")
    address: HostPort = Field(description="host:port of the pool's gateway")
    residency: Tags = Field(default=frozenset(), description="residency tags this pool satisfies")
    models: Tags = Field(default=frozenset({"*"}), description="models served; '*' means any")
    pricing: Literal["spot", "on_demand", "reserved"] = Field(
        default="spot",
        description="spot: the feed's price, preemptible; on_demand: usd_per_hour per "
                    "instance-hour used; reserved: usd_per_hour per reserved slot, paid whether "
                    "used or not")
    reserved_slots: Int = Field(
        default=0, ge=0, description="reserved: requests the paid-for capacity holds at once")
    instance_type: Text = Field(default="gpu", description="the feed's price key for this pool")
    latency_ms: Num = Field(default=120.0, gt=0, description="network round trip to the pool")
    compute_ms: Num = Field(default=40.0, gt=0, description="inference time per request")
    egress_usd_per_gb: Num = Field(
        default=0.09, ge=0, description="egress price of payloads")
    usd_per_hour: Num = Field(
        default=2.0, ge=0,
        description="spot: price until the feed states one; on_demand: the price; reserved: "
                    "the fee per reserved slot")
    max_inflight: Int = Field(default=0, ge=0, description="concurrent requests; 0: unbounded")
    bill_failed: Literal["full", "none"] = Field(
        default="full",
        description="what a request the pool failed is charged (an upstream 5xx, or Envoy's "
                    "503/504 for a reset or timeout): full: its estimate; none: nothing")

    @model_validator(mode="after")
    def _reservation(self) -> CloudPool:
        out: list[Breach] = []
        if self.pricing == "reserved":
            if self.reserved_slots <= 0:
                out.append(Breach(("reserved_slots",), "a reserved pool needs reserved_slots "
                                  "> 0: the capacity its fee pays for"))
            if self.max_inflight:
                out.append(Breach(("max_inflight",), "a reserved pool holds reserved_slots "
                                  "requests at once; drop max_inflight"))
        elif self.reserved_slots:
            out.append(Breach(("reserved_slots",), f"only a reserved pool has reserved_slots "
                              f"(this one is {self.pricing}); set pricing: reserved or drop it"))
        enforce(out)
        return self

    @property
    def capacity(self) -> int:
        """Requests the pool holds at once (0: unbounded)."""
        return self.reserved_slots if self.pricing == "reserved" else self.max_inflight

    @property
    def fixed_usd_per_hour(self) -> float:
        """What the pool costs per hour whether used or not (a reservation's fee)."""
        return self.reserved_slots * self.usd_per_hour if self.pricing == "reserved" else 0.0

    def serves(self, model: str | None) -> bool:
        """Whether this pool serves `model` (None means any)."""
        return model is None or "*" in self.models or model in self.models


class Edge(Schema):
    """The edge fleet (`edge`)."""

    usd_per_inference: Num = Field(
        default=0.0, ge=0,
        description="marginal cost of one edge inference (power), for nodes without their own")
    tail_factor: Num = Field(
        default=1.4, ge=1.0,
        description="a lone inference's p95 at full quality over its mean (base_latency_ms): "
                    "the floor of every edge estimate, and all of it until the feed reports a "
                    "p95")
    queue_per_slot: Num = Field(
        default=0.0, ge=0,
        description="requests a node may hold waiting per slot, sent there when every "
                    "node a request may walk to is full, or at a key's home whose slots alone "
                    "are full when the wait meets the SLO (0: a full edge spills to split or "
                    "cloud)")
    nodes: tuple[EdgeNode, ...] = Field(default=(), description="the edge nodes")

    @model_validator(mode="wrap")
    @classmethod
    def _moved(cls, data: Any, handler: Any) -> Edge:
        edge: Edge = _without_removed(data, handler, cls.__name__, _EDGE_MOVED)
        return edge


class Cloud(Schema):
    """The cloud side (`cloud`)."""

    uplink_mbps: Num = Field(
        default=1000.0, gt=0,
        description="the gateway site's uplink, for cloud-mode payloads")
    pools: tuple[CloudPool, ...] = Field(default=(), description="the cloud pools")


def _entries(data: Any, section: str, key: str) -> list[Any]:
    part = data.get(section) if isinstance(data, Mapping) else None
    items = part.get(key) if isinstance(part, Mapping) else getattr(part, key, None)
    return list(items) if isinstance(items, list | tuple) else []


def duplicates(data: Any) -> list[Breach]:
    """Ids and addresses used twice across nodes and pools, each pointing at its first use."""
    first: dict[tuple[str, str], KeyPath] = {}
    out: list[Breach] = []
    for section, key in (("edge", "nodes"), ("cloud", "pools")):
        for i, item in enumerate(_entries(data, section, key)):
            for name in ("id", "address"):
                value = item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)
                if not isinstance(value, str):
                    continue
                here: KeyPath = (section, key, i, name)
                seen = first.setdefault((name, value), here)
                if seen is here:
                    continue
                message = (f"duplicate id '{value}' (first at {{ref}})" if name == "id"
                           else f"address '{value}' is already used at {{ref}}")
                out.append(Breach(here, message, seen))
    return out
