"""Affinity tags → a typed, validated `RouteRequest` (docs/reference.md, request headers).

Parsing is total: any value that is not exactly as documented raises `TagError`
naming the tag and why — never another exception — and the adapter turns it
into a 400. The rules, enforced here (per header) and in `router.core.tagrules`
(per value) rather than left to a conversion that might raise or quietly accept:

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

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from router import wire
from router.core.policy import Defaults
from router.core.tagrules import (
    MAX_KEY_BYTES,
    MAX_TAGS_JSON_BYTES,
    OWS,
    PARSERS,
    TagError,
    parse_json_form,
)

__all__ = ["MAX_KEY_BYTES", "MAX_TAGS_JSON_BYTES", "OWS", "HeaderMap", "RouteRequest", "TagError",
           "parse_request"]


_NONE: frozenset[str] = frozenset()


class HeaderMap(dict[str, str]):
    """Request headers by lower-case name; `repeated` holds the names sent more than once.

    A repeated name's values are joined with commas (HTTP's field combination),
    which is right for headers the router only passes on; `parse_request`
    refuses any repeated `x-affinity-*` name instead of reading the join.
    """

    __slots__ = ("repeated",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = (), *, lowered: bool = False) -> None:
        """Collect `(name, value)` pairs in order, names lower-cased (`lowered`: they are)."""
        items = pairs if lowered and type(pairs) is list else \
            [(name.lower(), value) for name, value in pairs]
        dict.__init__(self, items)
        self.repeated: frozenset[str] = _NONE
        if len(self) == len(items):
            return  # the common case: every name once, built at C speed
        self.clear()
        for name, value in items:
            if name in self:
                self[name] = f"{self[name]},{value}"
            else:
                self[name] = value
        counts = Counter(name for name, _ in items)
        self.repeated = frozenset(name for name, count in counts.items() if count > 1)


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


_KNOWN = frozenset(wire.AFFINITY_HEADERS)


def _check_headers(headers: Mapping[str, str]) -> None:
    """Header-level rules: no unknown or repeated affinity header, valid UTF-8.

    An unknown `x-affinity-*` header is refused rather than ignored: a typo such as
    `x-affinity-residence: GDPR` would otherwise route with no residency rule at all.
    One pass over the headers; an unknown name is refused before any bad value.
    """
    repeated: frozenset[str] = getattr(headers, "repeated", _NONE)
    for name in sorted(repeated) if repeated else ():
        if name.startswith(wire.AFFINITY_PREFIX):
            raise TagError(name, "sent more than once; send it once (residency takes a "
                                 "comma list: GDPR,CCPA)")
    unsure = False  # a known tag's value is not ASCII: checked after every name is
    for name, value in headers.items():
        if name.startswith(wire.AFFINITY_PREFIX):
            if name not in _KNOWN:
                raise TagError(name, f"unknown affinity tag; {_near(name)}")
            if not value.isascii():
                unsure = True
    for name in wire.AFFINITY_HEADERS if unsure else ():
        text = headers.get(name)
        if isinstance(text, str) and not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                raise TagError(name, f"not valid UTF-8 (at byte {exc.start})") from None


def _near(name: str) -> str:
    """The hint for an unknown affinity tag: the known one it is closest to, or all."""
    cut = len(wire.AFFINITY_PREFIX)
    near = difflib.get_close_matches(name[cut:], [h[cut:] for h in _KNOWN], n=1)
    return f"did you mean {wire.AFFINITY_PREFIX}{near[0]}?" if near else \
        f"known: {', '.join(wire.AFFINITY_HEADERS)}"


def _fields(headers: Mapping[str, str]) -> dict[str, Any]:
    """Every tag present, parsed; a single header wins over the JSON form."""
    raw_json = headers.get(wire.H_TAGS)
    if raw_json is None:  # headers only: each parsed as sent, in PARSERS' order
        return {name: parse(name, headers[name]) for name, parse in PARSERS.items()
                if name in headers}
    sources: dict[str, tuple[Any, str | None]] = dict(parse_json_form(raw_json))
    for name in PARSERS:
        if name in headers:
            sources[name] = (headers[name], None)
    out: dict[str, Any] = {}
    for name, (value, json_field) in sources.items():
        try:
            out[name] = PARSERS[name](name, value)
        except TagError as exc:
            if json_field is None:
                raise
            raise TagError(name, f"{exc.detail} (in {wire.H_TAGS} field "
                                 f"{json_field!r})") from None
    return out


def parse_request(headers: Mapping[str, str], defaults: Defaults, default_slo_ms: float,
                  *, payload_bytes: int = 0, request_id: str = "") -> RouteRequest:
    """Parse affinity tags from `headers` (lower-case names); raises only `TagError`.

    Residency only ever narrows: the request's tags are added to `defaults.residency`,
    so no header form (nor an empty JSON list) clears or lowers it.

    Pass a `HeaderMap` to have repeated affinity headers refused; a plain
    mapping cannot carry repeats.
    """
    _check_headers(headers)
    f = _fields(headers)
    residency = defaults.residency  # a floor: what the request names is added, never instead
    sent = f.get(wire.H_RESIDENCY)
    if sent:
        residency = sent | residency if residency else sent
    return RouteRequest(
        key=f.get(wire.H_KEY), tenant=f.get(wire.H_TENANT, defaults.tenant),
        residency=residency,
        slo_ms=f.get(wire.H_SLO, default_slo_ms), model=f.get(wire.H_MODEL, defaults.model),
        accept_degradation=f.get(wire.H_DEGRADE, defaults.accept_degradation),
        max_cost_usd=f.get(wire.H_MAX_COST, defaults.max_cost_usd),
        payload_bytes=max(0, payload_bytes), request_id=request_id)
