"""Capacity and spot-price feed snapshots (docs/reference.md), validated whole.

`decode_feed` takes the raw bytes a source fetched: it checks the policy's size limit,
decodes JSON refusing NaN/Infinity, duplicate keys (never last-wins) and integers
past `MAX_INT_DIGITS` digits, validates the document against the declarative
`FeedDocument` model (strict types, bounds, unique ids) and then against the policy
in force. It returns an immutable `FeedSnapshot` or raises `FeedError`; a snapshot that
fails any check is dropped whole by the caller, which keeps the last good one.
`parse_feed` does the same from an already-decoded document.
Reason codes: invalid, bad-json, oversize, future, older, unknown-node (a node or a pool the
policy does not have). A `FeedError`
names the JSON path of what it refuses (`nodes[0].slots`), and for bad JSON its line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator

from router.core.policy import Policy
from router.core.schema import (
    MAX_INT_DIGITS,
    Bool,
    Breach,
    Finding,
    Int,
    KeyPath,
    Num,
    Schema,
    Text,
    enforce,
    findings,
)

MAX_FUTURE_SKEW_S = 60.0
MAX_SLOTS = 1_000_000  # per node; far above any accelerator, far below overflow


class FeedError(ValueError):
    """A feed snapshot failed validation; `reason` is a short code for metrics.

    `path` is the JSON path refused (empty for the whole document), `findings` every
    problem found (the first is in `detail`), and `at` the (line, column) of bad JSON.
    """

    def __init__(self, reason: str, detail: str, *, path: KeyPath = (),
                 problems: tuple[Finding, ...] = (), at: tuple[int, int] | None = None) -> None:
        """Record the reason code, the human detail and where."""
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.path = path
        self.findings = problems or (Finding(path, detail),)
        self.at = at


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the feed says about one edge node."""

    healthy: bool = True
    compute_score: float = 1.0
    slots: int | None = None
    inflight: int = 0
    vram_used_fraction: float = 0.0
    p95_ms: float | None = None
    uplink_mbps: float | None = None  # measured; lowers the policy's uplink when present


@dataclass(frozen=True, slots=True)
class FeedSnapshot:
    """One validated feed document; `received_at` is when this router accepted it."""

    generated_at: float
    received_at: float
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    prices: Mapping[str, float] = field(default_factory=dict)
    spend: Mapping[str, float] = field(default_factory=dict)
    # per pool id, the share of its capacity the provider still offers (a spot notice lowers
    # it); a pool not named offers all of it
    pools: Mapping[str, float] = field(default_factory=dict)

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


class TooLarge:
    """An integer literal with more than `MAX_INT_DIGITS` digits, kept as text, never converted."""

    def __init__(self, text: str) -> None:
        """Keep the literal."""
        self.text = text

    def __repr__(self) -> str:
        return self.text[:20] + ("…" if len(self.text) > 20 else "")


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers a key it saw twice."""

    duplicate: str | None = None


class _Decoded(Schema):
    """A JSON object of the feed: refuses the duplicate keys and huge numbers decoding kept."""

    @model_validator(mode="before")
    @classmethod
    def _decoding(cls, data: Any) -> Any:
        if isinstance(data, dict):
            dup = getattr(data, "duplicate", None)
            out = [Breach((dup,), f"duplicate key '{dup}'", key=True)] if dup is not None else []
            out += [Breach((k,), f"number too large (more than {MAX_INT_DIGITS} digits)")
                    for k, v in data.items() if isinstance(v, TooLarge)]
            enforce(out)
        return data


class NodeReport(_Decoded):
    """One node in the feed (`nodes[]`)."""

    id: Text
    healthy: Bool = True
    compute_score: Num = Field(default=1.0, ge=0, le=1000)
    slots: Int | None = Field(default=None, ge=0, le=MAX_SLOTS)
    inflight: Int = Field(default=0, ge=0, le=MAX_SLOTS)
    vram_used_fraction: Num = Field(default=0.0, ge=0, le=1)
    p95_ms: Num | None = Field(default=None, ge=0)
    uplink_mbps: Num | None = Field(default=None, ge=0)


class PriceReport(_Decoded):
    """A spot price (`prices[]`). Never 0: a spot market has no free capacity, and a zero is
    an exporter that lost the price; taken as read it makes cloud free and unbudgeted."""

    instance_type: Text
    usd_per_hour: Num = Field(gt=0)


class PoolReport(_Decoded):
    """A cloud pool's capacity now (`pools[]`): what a spot reclaim notice leaves of it."""

    id: Text
    available_fraction: Num = Field(default=1.0, ge=0, le=1)


class SpendReport(_Decoded):
    """A tenant's billed spend this period (`spend[]`)."""

    tenant: Text
    usd: Num = Field(ge=0)


def _version_one(value: int) -> int:
    if value != 1:
        raise ValueError(f"unsupported feed version {value}; want 1")
    return value


def _epoch(value: Any) -> float:
    try:
        return parse_time(value)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range") from None


def _unique(items: tuple[Any, ...], section: str, name: str) -> list[Breach]:
    seen: set[str] = set()
    out: list[Breach] = []
    for i, item in enumerate(items):
        value = getattr(item, name)
        if value in seen:
            out.append(Breach((section, i, name), f"duplicate {name} '{value}'"))
        seen.add(value)
    return out


class FeedDocument(_Decoded):
    """A whole feed document, version 1."""

    version: Annotated[Int, AfterValidator(_version_one)]
    generated_at: Annotated[float, BeforeValidator(_epoch)]
    nodes: tuple[NodeReport, ...] = ()
    prices: tuple[PriceReport, ...] = ()
    spend: tuple[SpendReport, ...] = ()
    pools: tuple[PoolReport, ...] = ()

    @model_validator(mode="after")
    def _no_repeats(self) -> FeedDocument:
        enforce(_unique(self.nodes, "nodes", "id") + _unique(self.prices, "prices",
                "instance_type") + _unique(self.spend, "spend", "tenant")
                + _unique(self.pools, "pools", "id"))
        return self


def _refuse(reason: str, problems: list[Finding]) -> FeedError:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return FeedError(reason, first.text() + more, path=first.path, problems=tuple(problems))


def parse_feed(doc: Any, policy: Policy, *, now: float,
               previous: FeedSnapshot | None = None) -> FeedSnapshot:
    """Validate a decoded feed document against `policy`; raises `FeedError`."""
    if not isinstance(doc, dict):
        raise FeedError("invalid", "feed document must be a JSON object")
    try:
        feed = FeedDocument.model_validate(doc)
    except ValidationError as exc:
        raise _refuse("invalid", findings(exc, FeedDocument)) from None
    generated = feed.generated_at
    if generated > now + MAX_FUTURE_SKEW_S:
        raise FeedError("future", f"generated_at {format_time(generated)} is in the future",
                        path=("generated_at",))
    if previous is not None and generated < previous.generated_at:
        raise FeedError("older", f"generated_at {format_time(generated)} is older than the "
                                 f"snapshot in force ({format_time(previous.generated_at)})",
                        path=("generated_at",))
    known = {n.id for n in policy.nodes}
    unknown = [Finding(("nodes", i, "id"), f"'{n.id}' is not in the policy")
               for i, n in enumerate(feed.nodes) if n.id not in known]
    pools = {p.id for p in policy.pools}
    unknown += [Finding(("pools", i, "id"), f"'{p.id}' is not a pool of the policy")
                for i, p in enumerate(feed.pools) if p.id not in pools]
    if unknown:
        raise _refuse("unknown-node", unknown)
    nodes = {n.id: NodeState(healthy=n.healthy, compute_score=n.compute_score, slots=n.slots,
                             inflight=n.inflight, vram_used_fraction=n.vram_used_fraction,
                             p95_ms=n.p95_ms, uplink_mbps=n.uplink_mbps) for n in feed.nodes}
    return FeedSnapshot(generated_at=generated, received_at=now, nodes=nodes,
                        prices={p.instance_type: p.usd_per_hour for p in feed.prices},
                        spend={s.tenant: s.usd for s in feed.spend},
                        pools={p.id: p.available_fraction for p in feed.pools})


def _no_constants(name: str) -> Any:
    raise FeedError("invalid", f"{name} is not a number JSON allows")


def _int(text: str) -> int | TooLarge:
    # Decided on the text: Python refuses (or spends quadratic time on) long conversions.
    return TooLarge(text) if len(text) - text.startswith("-") > MAX_INT_DIGITS else int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = _Object(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                out.duplicate = key
                break
            seen.add(key)
    return out


def decode_feed(raw: bytes, policy: Policy, *, now: float,
                previous: FeedSnapshot | None = None) -> FeedSnapshot:
    """Size-check, decode and validate raw feed bytes; raises `FeedError`."""
    limit = policy.feed.max_bytes
    if len(raw) > limit:
        raise FeedError("oversize", f"document is {len(raw)} bytes, over the {limit} limit")
    try:
        doc = json.loads(raw, parse_constant=_no_constants, parse_int=_int,
                         object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise FeedError("bad-json", f"not valid JSON: {exc}", at=(exc.lineno, exc.colno)) from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        if isinstance(exc, FeedError):
            raise
        raise FeedError("bad-json", f"not valid JSON: {exc}") from None
    return parse_feed(doc, policy, now=now, previous=previous)
