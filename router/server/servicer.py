"""ExternalProcessor servicer: thin translation between Envoy and `Runtime`.

Per stream (one HTTP request): on request headers, decide and answer with
header mutations or an immediate response; the decision's in-flight slots and
budget hold are handed back exactly once when the stream ends. In the
processing mode `router.envoy_config` generates (response headers SKIP,
response trailers SEND) Envoy keeps the stream open, sending nothing more,
until the HTTP stream ends — body complete, upstream reset or timeout, local
reply, client reset — so the stream's end is the request's end however it ends,
streamed bodies included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2

from router import wire
from router.core.decision import Decision, refusal
from router.metrics import RouterMetrics
from router.runtime import Routed, Runtime

log = logging.getLogger("hybrid_router.server")
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def request_headers(msg: Any) -> dict[str, str]:
    """Lower-case header map of a request_headers message (raw_value or value)."""
    out: dict[str, str] = {}
    for h in msg.headers.headers:
        out[h.key.lower()] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out


def _option(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key,
                                                                  raw_value=value.encode()),
                                      append_action=OVERWRITE)


_RESPONSES: dict[tuple[tuple[str, str], ...], Any] = {}
_MAX_CACHED = 8192


def routed_response(decision: Decision, sent: dict[str, str]) -> Any:
    """Header mutations: set the route headers, remove any other client-sent x-route-*.

    A fleet has few distinct header sets (target × mode × quality × reason × cost), so
    the built protobuf response is cached per set: it is never mutated after building.
    """
    headers = decision.headers()
    remove = tuple(k for k in sent if k.startswith(wire.ROUTE_PREFIX))
    key = (*headers, ("", ",".join(remove)))
    cached = _RESPONSES.get(key)
    if cached is None:
        ours = {k for k, _ in headers}
        mutation = _mutation(headers, [k for k in remove if k not in ours])
        cached = pb.ProcessingResponse(request_headers=pb.HeadersResponse(
            response=pb.CommonResponse(header_mutation=mutation)))
        if len(_RESPONSES) >= _MAX_CACHED:
            _RESPONSES.clear()
        _RESPONSES[key] = cached
    return cached


def _mutation(headers: list[tuple[str, str]], remove: list[str]) -> Any:
    return pb.HeaderMutation(set_headers=[_option(k, v) for k, v in headers],
                             remove_headers=remove)


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


class Processor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """One ext_proc stream per HTTP request."""

    def __init__(self, runtime: Runtime, metrics: RouterMetrics, *, max_streams: int = 4096
                 ) -> None:
        """Serve decisions from `runtime`; refuse with 503 past `max_streams` open streams."""
        self.runtime = runtime
        self.metrics = metrics
        self.max_streams = max_streams
        self.open_streams = 0
        self.unfinished = 0  # routed requests whose stream has not ended yet
        self._counters: dict[tuple[str, str], Any] = {}

    async def Process(self, request_iterator: AsyncIterator[Any], context: Any
                      ) -> AsyncIterator[Any]:
        """Handle one HTTP request's messages."""
        routed: Routed | None = None
        self.open_streams += 1
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("request")
                if kind == "request_headers" and routed is None:
                    headers = request_headers(msg.request_headers)
                    routed = self._decide(headers)
                    d = routed.decision
                    if d.routed:
                        self.unfinished += 1
                        yield routed_response(d, headers)
                    else:
                        yield immediate(d)
                elif kind == "response_headers":
                    yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())
                elif kind == "request_body":
                    yield pb.ProcessingResponse(request_body=pb.BodyResponse())
                elif kind == "response_body":
                    yield pb.ProcessingResponse(response_body=pb.BodyResponse())
                elif kind == "request_trailers":
                    yield pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
                elif kind == "response_trailers":
                    yield pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
        finally:
            # However the stream ends (clean close, reset, cancellation), release once.
            self.open_streams -= 1
            if routed is not None and routed.decision.routed:
                self.unfinished -= 1
                self.runtime.finish(routed)

    def _decide(self, headers: dict[str, str]) -> Routed:
        t0 = time.perf_counter()
        rid = headers.get(wire.H_REQUEST_ID, "")
        if self.open_streams > self.max_streams:
            d = refusal(503, wire.E_OVERLOAD, wire.R_OVERLOAD,
                        f"router has {self.open_streams} open streams (max {self.max_streams})",
                        self.runtime.policy.digest, retry_after=1)
            routed = Routed(d, self.runtime.table)
        else:
            try:
                size = int(headers.get("content-length", "0") or 0)
            except ValueError:
                size = 0
            routed = self.runtime.route(headers, payload_bytes=size, request_id=rid)
        d = routed.decision
        self.metrics.decision_seconds.observe(time.perf_counter() - t0)
        counter = self._counters.get((d.mode, d.reason))
        if counter is None:
            counter = self._counters[(d.mode, d.reason)] = self.metrics.decisions.labels(
                d.mode, d.reason)
        counter.inc()
        if d.routed:
            log.debug("%s -> %s %s (%s)", rid, d.mode, d.node, d.reason)
        else:
            self.metrics.refusals.labels(str(d.status), d.reason).inc()
            log.info("%s refused %d %s: %s", rid, d.status, d.reason, d.detail)
        return routed
