"""Capacity and spot-price feed snapshots (CONTRACT.md section 6), validated whole.

`parse_feed` takes an already-decoded JSON document and either returns an
immutable `FeedSnapshot` or raises `FeedError` with the reason; a snapshot that
fails any check is dropped whole by the caller, which keeps the last good one.
`decode_feed` does the same from the raw bytes a source fetched, checking the
policy's size limit and refusing JSON's non-standard NaN/Infinity first.
Reason codes: invalid, bad-json, oversize, future, older, unknown-node.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router.core.model import Policy

MAX_FUTURE_SKEW_S = 60.0


class FeedError(ValueError):
    """A feed snapshot failed validation; `reason` is a short code for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        """Record the reason code and the human detail."""
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the feed says about one edge node."""

    healthy: bool = True
    compute_score: float = 1.0
    slots: int | None = None
    inflight: int = 0
    vram_used_fraction: float = 0.0
    p95_ms: float | None = None


@dataclass(frozen=True, slots=True)
class FeedSnapshot:
    """One validated feed document; `received_at` is when this router accepted it."""

    generated_at: float
    received_at: float
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)
    spend: Mapping[str, float] = field(default_factory=dict)

    def age(self, now: float) -> float:
        """Seconds since this snapshot was generated."""
        return max(0.0, now - self.generated_at)


def parse_time(value: Any) -> float:
    """RFC 3339 UTC timestamp → epoch seconds; raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 timestamp string, got {value!r}")
    text = value.strip().replace("Z", "+00:00")
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def format_time(epoch: float) -> str:
    """Epoch seconds → RFC 3339 UTC with a Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(value: Any, what: str, *, minimum: float = 0.0, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FeedError("invalid", f"{what}: expected a finite number, got {value!r}")
    if value < minimum:
        raise FeedError("invalid", f"{what}: must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise FeedError("invalid", f"{what}: must be <= {maximum:g}, got {value!r}")
    return float(value)


def _node(raw: Any, i: int) -> tuple[str, NodeState]:
    where = f"nodes[{i}]"
    if not isinstance(raw, dict):
        raise FeedError("invalid", f"{where}: expected an object")
    known = {"id", "healthy", "compute_score", "slots", "inflight", "vram_used_fraction", "p95_ms"}
    extra = sorted(set(raw) - known)
    if extra:
        raise FeedError("invalid", f"{where}: unknown field {extra[0]!r}")
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise FeedError("invalid", f"{where}.id: expected a non-empty string")
    healthy = raw.get("healthy", True)
    if not isinstance(healthy, bool):
        raise FeedError("invalid", f"{where}.healthy: expected true or false")
    slots = raw.get("slots")
    if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 0):
        raise FeedError("invalid", f"{where}.slots: expected an integer >= 0, got {slots!r}")
    inflight = raw.get("inflight", 0)
    if isinstance(inflight, bool) or not isinstance(inflight, int) or inflight < 0:
        raise FeedError("invalid", f"{where}.inflight: expected an integer >= 0, got {inflight!r}")
    p95 = raw.get("p95_ms")
    return node_id, NodeState(
        healthy=healthy,
        compute_score=_finite(raw.get("compute_score", 1.0), f"{where}.compute_score",
                              maximum=1000.0),
        slots=slots,
        inflight=inflight,
        vram_used_fraction=_finite(raw.get("vram_used_fraction", 0.0),
                                   f"{where}.vram_used_fraction", maximum=1.0),
        p95_ms=None if p95 is None else _finite(p95, f"{where}.p95_ms"),
    )


def parse_feed(doc: Any, policy: Policy, *, now: float,
               previous: FeedSnapshot | None = None) -> FeedSnapshot:
    """Validate a decoded feed document against `policy`; raises `FeedError`."""
    if not isinstance(doc, dict):
        raise FeedError("invalid", "feed document must be a JSON object")
    extra = sorted(set(doc) - {"version", "generated_at", "nodes", "prices", "spend"})
    if extra:
        raise FeedError("invalid", f"unknown top-level field {extra[0]!r}")
    if doc.get("version") != 1:
        raise FeedError("invalid", f"unsupported feed version {doc.get('version')!r}; want 1")
    try:
        generated = parse_time(doc.get("generated_at"))
    except ValueError as exc:
        raise FeedError("invalid", f"generated_at: {exc}") from None
    if generated > now + MAX_FUTURE_SKEW_S:
        raise FeedError("future", f"generated_at {format_time(generated)} is in the future")
    if previous is not None and generated < previous.generated_at:
        raise FeedError("older", f"generated_at {format_time(generated)} is older than the "
                                 f"snapshot in force ({format_time(previous.generated_at)})")
    known_nodes = {n.id for n in policy.nodes}
    nodes: dict[str, NodeState] = {}
    raw_nodes = doc.get("nodes", [])
    if not isinstance(raw_nodes, list):
        raise FeedError("invalid", "nodes: expected a list")
    for i, raw in enumerate(raw_nodes):
        node_id, state = _node(raw, i)
        if node_id not in known_nodes:
            raise FeedError("unknown-node", f"nodes[{i}].id: '{node_id}' is not in the policy")
        if node_id in nodes:
            raise FeedError("invalid", f"nodes[{i}].id: duplicate node '{node_id}'")
        nodes[node_id] = state
    prices: dict[str, float] = {}
    raw_prices = doc.get("prices", [])
    if not isinstance(raw_prices, list):
        raise FeedError("invalid", "prices: expected a list")
    for i, raw in enumerate(raw_prices):
        if not isinstance(raw, dict) or not isinstance(raw.get("instance_type"), str):
            raise FeedError("invalid", f"prices[{i}]: expected {{instance_type, usd_per_hour}}")
        prices[raw["instance_type"]] = _finite(raw.get("usd_per_hour"),
                                               f"prices[{i}].usd_per_hour")
    spend: dict[str, float] = {}
    raw_spend = doc.get("spend", [])
    if not isinstance(raw_spend, list):
        raise FeedError("invalid", "spend: expected a list")
    for i, raw in enumerate(raw_spend):
        if not isinstance(raw, dict) or not isinstance(raw.get("tenant"), str):
            raise FeedError("invalid", f"spend[{i}]: expected {{tenant, usd}}")
        spend[raw["tenant"]] = _finite(raw.get("usd"), f"spend[{i}].usd")
    return FeedSnapshot(generated_at=generated, received_at=now, nodes=nodes, prices=prices,
                        spend=spend)


def _no_constants(name: str) -> Any:
    raise FeedError("invalid", f"{name} is not a number JSON allows")


def decode_feed(raw: bytes, policy: Policy, *, now: float,
                previous: FeedSnapshot | None = None) -> FeedSnapshot:
    """Size-check, decode and validate raw feed bytes; raises `FeedError`."""
    limit = policy.feed.max_bytes
    if len(raw) > limit:
        raise FeedError("oversize", f"document is {len(raw)} bytes, over the {limit} limit")
    try:
        doc = json.loads(raw, parse_constant=_no_constants)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise FeedError("bad-json", f"not valid JSON: {exc}") from None
    return parse_feed(doc, policy, now=now, previous=previous)
