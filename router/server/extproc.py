"""ext_proc messages <-> the router's values: headers in, header mutations or refusals out."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format

from router import wire
from router.core.decision import Decision, refusal
from router.core.request import HeaderMap
from router.envoy_config import PROCESSING_MODE

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_READ_PREFIXES = wire.READ_PREFIXES
_READ_NAMES = frozenset(wire.READ_NAMES)
_RESPONSES: dict[tuple[object, ...], Any] = {}
_MAX_CACHED = 4096  # responses are ~200-400 bytes; the cache is bounded whatever clients send
# The answer to every message after the request headers, by message kind.
# Cloud and split requests also send their response headers (a mode override of the
# generated config's mode, which it allows): their status says whether the pool failed,
# which decides what the budget is charged. Edge requests stay at one message.
OUTCOME_MODE = json_format.ParseDict({**PROCESSING_MODE, "response_header_mode": "SEND"},
                                     processing_mode_pb2.ProcessingMode())
PASS = {
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}


class SentHeaders(HeaderMap):
    """The request headers the router reads, and the `x-route-*` names among them: Envoy
    strips its clients' before asking, so only a direct client's reach the router."""

    __slots__ = ("route",)
    route: list[str]


def request_headers(msg: Any) -> SentHeaders:
    """The headers the router reads (affinity tags, client route headers, content-length,
    x-request-id) by lower-case name, repeated names remembered, in one pass.

    Envoy sends every header line as its own entry, a repeated name too (HTTP/1
    and HTTP/2 alike), with the bytes in `raw_value` (`value` in older Envoys).
    Bytes are decoded with surrogateescape so invalid UTF-8 reaches the parser,
    which refuses it naming the tag, instead of being replaced here. Other headers
    (user-agent, accept, ...) are skipped undecoded: the decision never reads them.
    """
    pairs = []
    route = []
    for h in msg.headers.headers:
        name = h.key  # Envoy sends names lower-case; a direct client may not
        if not name.islower():
            name = name.lower()
        if name.startswith(_READ_PREFIXES) or name in _READ_NAMES:
            raw = h.raw_value
            pairs.append((name, raw.decode("utf-8", "surrogateescape") if raw else h.value))
            if name.startswith(wire.ROUTE_PREFIX):
                route.append(name)
    sent = SentHeaders(pairs, lowered=True)
    sent.route = route
    return sent


def _option(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key,
                                                                  raw_value=value.encode()),
                                      append_action=OVERWRITE)


def _mutation(headers: list[tuple[str, str]], remove: list[str]) -> Any:
    return pb.HeaderMutation(set_headers=[_option(k, v) for k, v in headers],
                             remove_headers=remove)


def routed_response(decision: Decision, route_sent: Collection[str] = ()) -> Any:
    """Header mutations: set the route headers, remove any other client-sent x-route-*
    (`route_sent`: the `x-route-*` names the request came with, `SentHeaders.route`).

    A fleet has few distinct answers (target × mode × quality × reason × cost), so the
    built protobuf response is cached by the decision's own fields, looked up before any
    header is formatted: it is never mutated after building. The key is the router's own
    values only, never a name the client chose: Envoy strips client `x-route-*` headers
    before the router sees them, so a request that still carries one came from a direct
    client and gets a response built for it alone.
    """
    if route_sent:
        headers = decision.headers()
        ours = {k for k, _ in headers}
        extra = [k for k in route_sent if k not in ours]
        if extra:
            return _routed(headers, extra)
    d = decision
    key = (d.target, d.node, d.mode, d.cost_usd, d.reason, d.policy, d.quality, d.split_cloud,
           d.cluster)
    cached = _RESPONSES.get(key)
    if cached is None:
        if len(_RESPONSES) >= _MAX_CACHED:
            _RESPONSES.clear()
        cached = _RESPONSES[key] = _routed(d.headers(), [])
    return cached


def _routed(headers: list[tuple[str, str]], remove: list[str]) -> Any:
    # clear_route_cache: the route table picks the cluster from x-route-cluster, set here
    billed = (wire.H_MODE, wire.MODE_CLOUD) in headers or (wire.H_MODE, wire.MODE_SPLIT) in headers
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(
        response=pb.CommonResponse(header_mutation=_mutation(headers, remove),
                                   clear_route_cache=True)),
        mode_override=OUTCOME_MODE if billed else None)


def upstream_failed(msg: Any) -> bool:
    """Whether response headers say the upstream failed: a 5xx, the upstream's own or
    Envoy's for it (503 reset or connection failure, 504 timeout)."""
    for h in msg.headers.headers:
        if h.key == wire.H_STATUS:
            status = h.raw_value if h.raw_value else h.value.encode()
            return bool(status[:1] == b"5")
    return False


def immediate(decision: Decision) -> Any:
    """An immediate response (400/429/503) with the JSON body and reason headers."""
    extra = [(wire.H_REASON, decision.reason), (wire.H_POLICY, decision.policy),
             ("content-type", "application/json")]
    if decision.retry_after is not None:
        extra.append((wire.H_RETRY_AFTER, str(decision.retry_after)))
    return pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=decision.status),
        headers=_mutation(extra, []), body=decision.body(),
        details=f"hybrid_router_{decision.reason}"))


def router_error(trace: str, policy: str) -> Any:
    """The 503 for an unexpected failure; its body carries `trace` (the id it is logged with)."""
    return immediate(refusal(
        wire.STATUS_ROUTER_ERROR, wire.E_ROUTER_ERROR, wire.R_ROUTER_ERROR,
        f"the router failed to decide this request; trace id {trace}", policy))


LAST_RESORT = immediate(refusal(wire.STATUS_ROUTER_ERROR, wire.E_ROUTER_ERROR,
                                wire.R_ROUTER_ERROR, "the router failed to decide this request",
                                "unknown"))


def envoy_node(context: Any) -> str | None:
    """The node id of the Envoy that opened an ext_proc stream (its gRPC metadata), if sent."""
    for key, value in context.invocation_metadata() or ():
        if key == wire.H_ENVOY_NODE:
            return str(value)
    return None
