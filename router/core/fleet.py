"""Edge nodes and cloud pools as the policy declares them (`edge`, `cloud`; docs/reference.md).

Part of the policy model (`router.core.model`); ids and addresses are checked here,
and their uniqueness across nodes and pools by `duplicates`, which reads raw entries so
that an entry with another error still counts as taken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from router.core.schema import Breach, Int, KeyPath, Num, Schema, Tags, Text

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
    cost_per_inference_usd: Num | None = Field(
        default=None, ge=0,
        description="edge cost of one inference; null: edge.cost_per_inference_usd")
    uplink_mbps: Num = Field(
        default=100.0, gt=0, description="site uplink for split payloads")
    feature_ms: Num = Field(
        default=5.0, ge=0, description="feature extraction time for a split")
    feature_slots: Int = Field(
        default_factory=lambda data: data["slots"], ge=0,
        description="concurrent feature extractions, apart from slots; default: slots")

    def serves(self, model: str | None) -> bool:
        """Whether this node serves `model` (None means any)."""
        return model is None or "*" in self.models or model in self.models


class CloudPool(Schema):
    """One cloud GPU pool (`cloud.pools[]`)."""

    id: Id = Field(description="unique id across nodes and pools")
    address: HostPort = Field(description="host:port of the pool's gateway")
    residency: Tags = Field(default=frozenset(), description="residency tags this pool satisfies")
    models: Tags = Field(default=frozenset({"*"}), description="models served; '*' means any")
    instance_type: Text = Field(default="gpu", description="the feed's price key for this pool")
    latency_ms: Num = Field(default=120.0, gt=0, description="network round trip to the pool")
    compute_ms: Num = Field(default=40.0, gt=0, description="inference time per request")
    egress_usd_per_gb: Num = Field(
        default=0.09, ge=0, description="egress price of payloads")
    usd_per_hour: Num = Field(
        default=2.0, ge=0, description="price until the feed states one")
    max_inflight: Int = Field(default=0, ge=0, description="concurrent requests; 0: unbounded")

    def serves(self, model: str | None) -> bool:
        """Whether this pool serves `model` (None means any)."""
        return model is None or "*" in self.models or model in self.models


class Edge(Schema):
    """The edge fleet (`edge`)."""

    cost_per_inference_usd: Num = Field(
        default=0.0012, ge=0, description="default cost of one edge inference")
    nodes: tuple[EdgeNode, ...] = Field(default=(), description="the edge nodes")


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
