"""The value rules of each affinity tag (docs/reference.md, request headers).

Each `parse_*` takes the tag's name and its raw value — a header string, or
what the `x-affinity-tags` JSON held — and returns the typed value or raises
`TagError` naming the tag; nothing else escapes. Numbers are read from their
ASCII text with a length bound first, so no digit limit or float overflow can
be reached; strings are checked printable before they are ever encoded.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from router import wire

MAX_KEY_BYTES = 256
MAX_TEXT_BYTES = 128  # tenant and model
MAX_TAGS_JSON_BYTES = 4096
MAX_JSON_DEPTH = 8  # the object and its residency list need 2
MAX_SLO_MS = 3_600_000
MAX_COST_USD = Decimal(1_000_000)
MAX_RESIDENCY_TAGS = 32
MAX_CACHED_RESIDENCY = 256  # characters: a longer residency header is parsed each time
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
RESIDENCY_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")
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


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """A number from `x-affinity-tags`, kept as its JSON text until a field checks it."""

    text: str


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


def parse_text(tag: str, value: Any, *, limit: int = MAX_TEXT_BYTES) -> str:
    """A printable, non-empty string of at most `limit` UTF-8 bytes (tenant, model)."""
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


def parse_key(tag: str, value: Any) -> str:
    """The consistent-hash key: printable, at most 256 bytes."""
    return parse_text(tag, value, limit=MAX_KEY_BYTES)


def parse_residency(tag: str, value: Any) -> frozenset[str]:
    """A comma list (header) or list (JSON) of ASCII residency tags."""
    if type(value) is str and len(value) <= MAX_CACHED_RESIDENCY:
        return _residency_text(tag, value)  # a few lists are sent over and over: parsed once
    return _residency(tag, value)


# Bounded whatever clients send (a refusal is not kept): 1,024 lists of at most 256
# characters, so padding a valid list with whitespace cannot pin a 64-KB header per entry.
@functools.lru_cache(maxsize=1024)
def _residency_text(tag: str, value: str) -> frozenset[str]:
    return _residency(tag, value)


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
        if not RESIDENCY_TAG.fullmatch(item):
            raise TagError(tag, f"residency tag {_show(item)} has characters other than ASCII "
                                "letters, digits, - and _ (or is over 64 long)")
        out.add(item)
    return frozenset(out)


def parse_slo(tag: str, value: Any) -> float:
    """Milliseconds, 1 to MAX_SLO_MS, from ASCII digits only."""
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


def parse_bool(tag: str, value: Any) -> bool:
    """true or false (ASCII, any case), or a JSON boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and \
            value.strip(OWS).lower() in ("true", "false"):
        return value.strip(OWS).lower() == "true"
    raise TagError(tag, f"expected true or false, got {_show(value)}")


def parse_cost(tag: str, value: Any) -> float:
    """USD from an ASCII decimal (header) or a JSON number, 0 to MAX_COST_USD."""
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


def parse_json_form(raw: str) -> dict[str, tuple[Any, str]]:
    """The JSON form as {header name: (value, JSON field name)}, bounded and strict."""
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


# Each single header's parser, in the order a request's tags are checked.
PARSERS: dict[str, Callable[[str, Any], Any]] = {
    wire.H_KEY: parse_key, wire.H_TENANT: parse_text, wire.H_RESIDENCY: parse_residency,
    wire.H_SLO: parse_slo, wire.H_MODEL: parse_text, wire.H_DEGRADE: parse_bool,
    wire.H_MAX_COST: parse_cost,
}
