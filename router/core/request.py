"""Affinity tags → a typed, validated `RouteRequest` (docs/reference.md, request headers).

Parsing is total: any value that is not exactly as documented raises `TagError`
naming the tag and why — never another exception — and the adapter turns it
into a 400. The rules, each enforced here rather than left to a conversion
that might raise or quietly accept:

- Each `x-affinity-*` header appears at most once: a `HeaderMap` remembers the
  names sent more than once, and any repeated affinity name is refused
  (last-wins would let `GDPR` + `CCPA` run on a CCPA node).
- Values are valid UTF-8. The adapter decodes Envoy's raw bytes with
  `surrogateescape`, so invalid bytes reach this module as lone surrogates and
  are refused here, naming the tag.
- Surrounding spaces and tabs (HTTP's optional whitespace) are ignored — Envoy
  trims them already; direct callers such as `explain` may not. Nothing else is
  trimmed: other Unicode spaces count as content and are refused.
- Numbers are ASCII digits only (`²`, `١٢٣`, `0x10`, `+5`, `1e400` are refused),
  bounded in length before conversion, so no digit limit or float overflow.
- Strings (key, tenant, model) are printable (`str.isprintable`, plus the ASCII
  space): no C0, DEL or C1 controls, lone surrogates, format or separator
  characters. Residency entries are ASCII letters, digits, `-` and `_`.
- `x-affinity-tags` is at most 4096 bytes of JSON, nested at most
  `MAX_JSON_DEPTH` deep, with no duplicate field and no NaN/Infinity. Its
  numbers are kept as their text (`JsonNumber`) and range-checked by each field.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from router import wire
from router.core.model import Defaults

MAX_KEY_BYTES = 256
MAX_TEXT_BYTES = 128  # tenant and model
MAX_TAGS_JSON_BYTES = 4096
MAX_JSON_DEPTH = 8  # the object and its residency list need 2
MAX_SLO_MS = 3_600_000
MAX_COST_USD = Decimal(1_000_000)
MAX_RESIDENCY_TAGS = 32
MAX_NUMBER_CHARS = 32
OWS = " \t"
_JSON_FIELDS = {
    "key": wire.H_KEY,
    "tenant": wire.H_TENANT,
    "data_residency": wire.H_RESIDENCY,
    "latency_slo_ms": wire.H_SLO,
    "model_version": wire.H_MODEL,
    "accept_degradation": wire.H_DEGRADE,
    "max_cost_per_inference": wire.H_MAX_COST,
}
# [0-9] (never \d, which matches every script's digits) and fullmatch (never $).
_DIGITS = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,12})?")
_RESIDENCY_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CATEGORY = {"Cc": "control character", "Cs": "lone surrogate", "Cf": "format character",
             "Co": "private-use character", "Cn": "unassigned code point",
             "Zs": "space other than U+0020", "Zl": "line separator",
             "Zp": "paragraph separator"}


class TagError(ValueError):
    """A malformed affinity tag: `tag` names it, `detail` says why."""

    def __init__(self, tag: str, detail: str) -> None:
        """Record which tag was wrong and why."""
        super().__init__(f"{tag}: {detail}")
        self.tag = tag
        self.detail = detail


class HeaderMap(dict[str, str]):
    """Request headers by lower-case name; `repeated` holds the names sent more than once.

    A repeated name's values are joined with commas (HTTP's field combination),
    which is right for headers the router only passes on; `parse_request`
    refuses any repeated `x-affinity-*` name instead of reading the join.
    """

    __slots__ = ("repeated",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        """Collect `(name, value)` pairs in order, names lower-cased."""
        super().__init__()
        repeated: set[str] = set()
        for name, value in pairs:
            lower = name.lower()
            if lower in self:
                repeated.add(lower)
                self[lower] = f"{self[lower]},{value}"
            else:
                self[lower] = value
        self.repeated = frozenset(repeated)


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """A number from `x-affinity-tags`, kept as its JSON text until a field checks it."""

    text: str


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


def _show(value: Any, limit: int = 40) -> str:
    """A short, escaped rendering of a bad value for an error detail."""
    text = value.text if isinstance(value, JsonNumber) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def _unprintable(text: str) -> str | None:
    """Why `text` is not printable, or None when it is."""
    if text.isprintable():
        return None
    at, ch = next((i, c) for i, c in enumerate(text) if not c.isprintable())
    kind = _CATEGORY.get(unicodedata.category(ch), "unprintable character")
    return f"contains {kind} U+{ord(ch):04X} at position {at}"


def _text(tag: str, value: Any, *, limit: int = MAX_TEXT_BYTES) -> str:
    if not isinstance(value, str):
        kind = "number" if isinstance(value, JsonNumber) else type(value).__name__
        raise TagError(tag, f"expected a string, got a {kind}")
    text = value.strip(OWS)
    if not text:
        raise TagError(tag, "must not be empty")
    if len(text) > limit:  # every character is at least one byte: skip the scan
        raise TagError(tag, f"longer than {limit} bytes")
    problem = _unprintable(text)
    if problem is not None:
        raise TagError(tag, problem)
    if len(text.encode()) > limit:  # safe: no lone surrogate got past _unprintable
        raise TagError(tag, f"longer than {limit} bytes")
    return text


def _key(tag: str, value: Any) -> str:
    return _text(tag, value, limit=MAX_KEY_BYTES)


def _residency(tag: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        parts: list[Any] = value.split(",")
        if any(not p.strip(OWS) for p in parts):
            raise TagError(tag, f"empty entry in residency list {_show(value)}")
    elif isinstance(value, list):
        parts = value
    else:
        raise TagError(tag, f"expected a list of residency tags, got {_show(value)}")
    if len(parts) > MAX_RESIDENCY_TAGS:
        raise TagError(tag, f"more than {MAX_RESIDENCY_TAGS} residency tags")
    out = set()
    for part in parts:
        if not isinstance(part, str) or not part.strip(OWS):
            raise TagError(tag, f"residency entries must be non-empty strings, got {_show(part)}")
        item = part.strip(OWS)
        if not _RESIDENCY_TAG.fullmatch(item):
            raise TagError(tag, f"residency tag {_show(item)} has characters other than ASCII "
                                "letters, digits, - and _ (or is over 64 long)")
        out.add(item)
    return frozenset(out)


def _slo(tag: str, value: Any) -> float:
    wanted = "expected a positive integer of milliseconds in ASCII digits"
    if isinstance(value, str):
        text = value.strip(OWS)
    elif isinstance(value, JsonNumber):
        text = value.text
    else:
        raise TagError(tag, f"{wanted}, got {_show(value)}")
    if not text.isascii() or not text.isdigit():
        raise TagError(tag, f"{wanted}, got {_show(value)}")
    if not _DIGITS.fullmatch(text):  # too many digits to be in range: never convert those
        raise TagError(tag, f"must be between 1 and {MAX_SLO_MS} ms, got {_show(value)}")
    number = int(text)
    if number <= 0 or number > MAX_SLO_MS:
        raise TagError(tag, f"must be between 1 and {MAX_SLO_MS} ms, got {number}")
    return float(number)


def _bool(tag: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and \
            value.strip(OWS).lower() in ("true", "false"):
        return value.strip(OWS).lower() == "true"
    raise TagError(tag, f"expected true or false, got {_show(value)}")


def _cost(tag: str, value: Any) -> float:
    wanted = "expected a finite decimal amount of USD >= 0 in ASCII digits, like 0.004"
    if isinstance(value, str):
        text = value.strip(OWS)
        ok = _DECIMAL.fullmatch(text) is not None
    elif isinstance(value, JsonNumber):  # JSON's grammar, already checked by the decoder
        text = value.text
        ok = len(text) <= MAX_NUMBER_CHARS
    else:
        ok, text = False, ""
    if not ok:
        raise TagError(tag, f"{wanted}, got {_show(value)}")
    try:
        number = Decimal(text)  # exact: no float overflow however large the exponent
    except InvalidOperation:
        raise TagError(tag, f"{wanted}, got {_show(value)}") from None
    if number < 0 or number > MAX_COST_USD:
        raise TagError(tag, f"must be between 0 and {MAX_COST_USD} USD, got {_show(value)}")
    return float(number) + 0.0  # + 0.0 turns -0 into 0


def _json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects, brackets inside strings not counted."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # cannot be too deep: skip the scan on the common path
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name, value in pairs:
        if name in doc:
            raise TagError(wire.H_TAGS, f"field {_show(name)} appears more than once")
        doc[name] = value
    return doc


def _no_constant(name: str) -> Any:
    raise TagError(wire.H_TAGS, f"{name} is not a JSON number")


def _from_json(raw: str) -> dict[str, tuple[Any, str]]:
    """The JSON form as {header name: (value, JSON field name)}."""
    tag = wire.H_TAGS
    if len(raw) > MAX_TAGS_JSON_BYTES or len(raw.encode()) > MAX_TAGS_JSON_BYTES:
        raise TagError(tag, f"longer than {MAX_TAGS_JSON_BYTES} bytes")
    if _json_depth(raw) > MAX_JSON_DEPTH:
        raise TagError(tag, f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(raw, object_pairs_hook=_unique_fields, parse_int=JsonNumber,
                         parse_float=JsonNumber, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise TagError(tag, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # _json_depth stops this first; kept so the parser stays total
        raise TagError(tag, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(doc, dict):
        raise TagError(tag, "expected a JSON object")
    unknown = sorted(set(doc) - set(_JSON_FIELDS))
    if unknown:
        raise TagError(tag, f"unknown field {_show(unknown[0])}; known: {', '.join(_JSON_FIELDS)}")
    return {_JSON_FIELDS[k]: (v, k) for k, v in doc.items() if v is not None}


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    wire.H_KEY: _key, wire.H_TENANT: _text, wire.H_RESIDENCY: _residency, wire.H_SLO: _slo,
    wire.H_MODEL: _text, wire.H_DEGRADE: _bool, wire.H_MAX_COST: _cost,
}


def _check_headers(headers: Mapping[str, str]) -> None:
    """Header-level rules: no repeated affinity header, valid UTF-8."""
    repeated: frozenset[str] = getattr(headers, "repeated", frozenset())
    for name in sorted(repeated):
        if name.startswith(wire.AFFINITY_PREFIX):
            raise TagError(name, "sent more than once; send it once (residency takes a "
                                 "comma list: GDPR,CCPA)")
    for name in wire.AFFINITY_HEADERS:
        value = headers.get(name)
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError as exc:
                raise TagError(name, f"not valid UTF-8 (at byte {exc.start})") from None


def _fields(headers: Mapping[str, str]) -> dict[str, Any]:
    """Every tag present, parsed; a single header wins over the JSON form."""
    sources: dict[str, tuple[Any, str | None]] = {}
    raw_json = headers.get(wire.H_TAGS)
    if raw_json is not None:
        sources.update(_from_json(raw_json))
    for name in _PARSERS:
        if name in headers:
            sources[name] = (headers[name], None)
    out: dict[str, Any] = {}
    for name, (value, json_field) in sources.items():
        try:
            out[name] = _PARSERS[name](name, value)
        except TagError as exc:
            if json_field is None:
                raise
            raise TagError(name, f"{exc.detail} (in {wire.H_TAGS} field "
                                 f"{json_field!r})") from None
    return out


def parse_request(headers: Mapping[str, str], defaults: Defaults, default_slo_ms: float,
                  *, payload_bytes: int = 0, request_id: str = "") -> RouteRequest:
    """Parse affinity tags from `headers` (lower-case names); raises only `TagError`.

    Pass a `HeaderMap` to have repeated affinity headers refused; a plain
    mapping cannot carry repeats.
    """
    _check_headers(headers)
    f = _fields(headers)
    return RouteRequest(
        key=f.get(wire.H_KEY), tenant=f.get(wire.H_TENANT, defaults.tenant),
        residency=f.get(wire.H_RESIDENCY, defaults.residency),
        slo_ms=f.get(wire.H_SLO, default_slo_ms), model=f.get(wire.H_MODEL, defaults.model),
        accept_degradation=f.get(wire.H_DEGRADE, defaults.accept_degradation),
        max_cost_usd=f.get(wire.H_MAX_COST, defaults.max_cost_usd),
        payload_bytes=max(0, payload_bytes), request_id=request_id)
