"""Affinity tags → a typed, validated `RouteRequest` (CONTRACT.md section 2).

Headers arrive as a mapping of lower-case names to strings. Each single header
wins over the same field in the `x-affinity-tags` JSON form. Every malformed
value raises `TagError` naming the tag and why, which the adapter turns into a 400.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router import wire
from router.core.model import Defaults

MAX_KEY_BYTES = 256
MAX_TAGS_JSON_BYTES = 4096
MAX_SLO_MS = 3_600_000
_JSON_FIELDS = {
    "key": wire.H_KEY,
    "tenant": wire.H_TENANT,
    "data_residency": wire.H_RESIDENCY,
    "latency_slo_ms": wire.H_SLO,
    "model_version": wire.H_MODEL,
    "accept_degradation": wire.H_DEGRADE,
    "max_cost_per_inference": wire.H_MAX_COST,
}


class TagError(ValueError):
    """A malformed affinity tag: `tag` names it, `detail` says why."""

    def __init__(self, tag: str, detail: str) -> None:
        """Record which tag was wrong and why."""
        super().__init__(f"{tag}: {detail}")
        self.tag = tag
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One request's routing needs, with the policy's defaults applied."""

    key: str | None
    tenant: str
    residency: frozenset[str]
    slo_ms: float
    model: str | None
    accept_degradation: bool
    max_cost_usd: float | None
    payload_bytes: int = 0
    request_id: str = ""

    @property
    def class_key(self) -> tuple[frozenset[str], str | None]:
        """What decides eligibility: residency and model."""
        return (self.residency, self.model)


def _text(tag: str, value: Any, *, limit: int = 256) -> str:
    if not isinstance(value, str):
        raise TagError(tag, f"expected a string, got {type(value).__name__}")
    text: str = value.strip()
    if not text:
        raise TagError(tag, "must not be empty")
    if len(text.encode()) > limit:
        raise TagError(tag, f"longer than {limit} bytes")
    if any(ord(ch) < 0x20 for ch in text):
        raise TagError(tag, "contains control characters")
    return text


def _residency(tag: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if any(not p for p in parts):
            raise TagError(tag, f"empty entry in residency list {value!r}")
    elif isinstance(value, list):
        parts = value
    else:
        raise TagError(tag, f"expected a list of residency tags, got {type(value).__name__}")
    out = set()
    for part in parts:
        if not isinstance(part, str) or not part.strip():
            raise TagError(tag, f"residency entries must be non-empty strings, got {part!r}")
        item = part.strip()
        if not item.replace("-", "").replace("_", "").isalnum():
            raise TagError(tag, f"residency tag {item!r} has characters other than letters, "
                                "digits, - and _")
        out.add(item)
    return frozenset(out)


def _slo(tag: str, value: Any) -> float:
    if isinstance(value, bool):
        raise TagError(tag, "expected a positive integer of milliseconds, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise TagError(tag, f"expected a positive integer of milliseconds, got {value!r}")
        number = int(text)
    elif isinstance(value, int):
        number = value
    else:
        raise TagError(tag, f"expected a positive integer of milliseconds, got {value!r}")
    if number <= 0 or number > MAX_SLO_MS:
        raise TagError(tag, f"must be between 1 and {MAX_SLO_MS} ms, got {number}")
    return float(number)


def _bool(tag: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TagError(tag, f"expected true or false, got {value!r}")


def _cost(tag: str, value: Any) -> float:
    if isinstance(value, bool):
        raise TagError(tag, "expected a decimal amount of USD, got a boolean")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise TagError(tag, f"expected a decimal amount of USD, got {value!r}") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise TagError(tag, f"expected a decimal amount of USD, got {value!r}")
    if not math.isfinite(number) or number < 0:
        raise TagError(tag, f"must be a finite amount >= 0, got {value!r}")
    return number


def _from_json(raw: str) -> dict[str, Any]:
    tag = wire.H_TAGS
    if len(raw.encode()) > MAX_TAGS_JSON_BYTES:
        raise TagError(tag, f"longer than {MAX_TAGS_JSON_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TagError(tag, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise TagError(tag, "expected a JSON object")
    unknown = sorted(set(doc) - set(_JSON_FIELDS))
    if unknown:
        raise TagError(tag, f"unknown field {unknown[0]!r}; known: {', '.join(_JSON_FIELDS)}")
    return {_JSON_FIELDS[k]: v for k, v in doc.items() if v is not None}


def parse_request(headers: Mapping[str, str], defaults: Defaults, default_slo_ms: float,
                  *, payload_bytes: int = 0, request_id: str = "") -> RouteRequest:
    """Parse affinity tags from `headers` (lower-case names); raises `TagError`."""
    fields: dict[str, Any] = {}
    raw_json = headers.get(wire.H_TAGS)
    if raw_json is not None:
        fields.update(_from_json(raw_json))
    for name in _JSON_FIELDS.values():
        if name in headers:
            fields[name] = headers[name]
    key = _text(wire.H_KEY, fields[wire.H_KEY], limit=MAX_KEY_BYTES) if wire.H_KEY in fields \
        else None
    tenant = _text(wire.H_TENANT, fields[wire.H_TENANT], limit=128) \
        if wire.H_TENANT in fields else defaults.tenant
    residency = _residency(wire.H_RESIDENCY, fields[wire.H_RESIDENCY]) \
        if wire.H_RESIDENCY in fields else defaults.residency
    slo = _slo(wire.H_SLO, fields[wire.H_SLO]) if wire.H_SLO in fields else default_slo_ms
    model = _text(wire.H_MODEL, fields[wire.H_MODEL], limit=128) if wire.H_MODEL in fields \
        else defaults.model
    degrade = _bool(wire.H_DEGRADE, fields[wire.H_DEGRADE]) if wire.H_DEGRADE in fields \
        else defaults.accept_degradation
    max_cost = _cost(wire.H_MAX_COST, fields[wire.H_MAX_COST]) if wire.H_MAX_COST in fields \
        else defaults.max_cost_usd
    return RouteRequest(key=key, tenant=tenant, residency=residency, slo_ms=slo, model=model,
                        accept_degradation=degrade, max_cost_usd=max_cost,
                        payload_bytes=max(0, payload_bytes), request_id=request_id)
