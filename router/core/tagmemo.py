"""`parse_request` with the tags a request shares with others parsed once, not per request.

A fleet's requests carry many keys but few distinct sets of the other tags (a
tenant, a residency, an SLO, a model), so what those parse to is kept by their
exact values; the key, the body's length and the request id are read per
request. The answer is always `parse_request`'s: a request the memo would read
differently (a repeated tag, any refused value) is parsed by `parse_request`
itself, which raises the same error it always did, in the same order.

Memory is bounded whatever clients send: only tag sets of up to `MAX_CHARS`
characters are kept, at most `size` of them (the memo starts over when full).
"""

from __future__ import annotations

from collections.abc import Mapping

from router import wire
from router.core.policy import Defaults
from router.core.request import RouteRequest, TagError, parse_request
from router.core.tagrules import parse_key

MAX_CHARS = 512  # a tag set longer than this (a big x-affinity-tags JSON) is parsed each time
SIZE = 1024
_PREFIX, _KEY = wire.AFFINITY_PREFIX, wire.H_KEY


class TagMemo:
    """`parse_request` under one policy's defaults, memoized by the tags other than the key."""

    __slots__ = ("_memo", "default_slo_ms", "defaults", "size")

    def __init__(self, defaults: Defaults, default_slo_ms: float, *, size: int = SIZE) -> None:
        """An empty memo for `defaults` and `default_slo_ms`, holding at most `size` sets."""
        self.defaults = defaults
        self.default_slo_ms = default_slo_ms
        self.size = size
        self._memo: dict[tuple[tuple[str, str], ...], RouteRequest] = {}

    def parse(self, headers: Mapping[str, str], *, payload_bytes: int = 0,
              request_id: str = "") -> RouteRequest:
        """What `parse_request(headers, ...)` returns; raises what it raises."""
        if getattr(headers, "repeated", None):
            return self._whole(headers, payload_bytes, request_id)
        key: str | None = None
        rest = []
        for name, value in headers.items():
            if name.startswith(_PREFIX):
                if name == _KEY:
                    key = value
                else:
                    rest.append((name, value))
        shared = tuple(rest)
        try:
            base = self._memo.get(shared)
            if base is None:
                base = self._remember(shared)
            # a key parse_key accepts is printable, so valid UTF-8 too (no lone surrogate)
            key = base.key if key is None else parse_key(_KEY, key)  # else the JSON form's
        except TagError:
            return self._whole(headers, payload_bytes, request_id)
        return RouteRequest(key, base.tenant, base.residency, base.slo_ms, base.model,
                            base.accept_degradation, base.max_cost_usd, max(0, payload_bytes),
                            request_id)

    def _remember(self, shared: tuple[tuple[str, str], ...]) -> RouteRequest:
        """The tags other than the key, parsed, and kept when short enough."""
        base = parse_request(dict(shared), self.defaults, self.default_slo_ms)
        if sum(len(v) for _, v in shared) <= MAX_CHARS:
            if len(self._memo) >= self.size:
                self._memo.clear()
            self._memo[shared] = base
        return base

    def _whole(self, headers: Mapping[str, str], payload_bytes: int,
               request_id: str) -> RouteRequest:
        return parse_request(headers, self.defaults, self.default_slo_ms,
                             payload_bytes=payload_bytes, request_id=request_id)
