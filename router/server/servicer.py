"""ExternalProcessor servicer: thin translation between Envoy and `Runtime`.

Per stream (one HTTP request): on request headers, decide and answer with
header mutations or an immediate response; the decision's in-flight slots and
budget hold are handed back exactly once when the stream ends. In the
processing mode `router.envoy_config` generates (response headers SKIP,
response trailers SEND) Envoy keeps the stream open, sending nothing more,
until the HTTP stream ends — body complete, upstream reset or timeout, local
reply, client reset — so the stream's end is the request's end however it ends,
streamed bodies included.

The stream never fails: a failed gRPC stream is a fail-open in Envoy, so any
unexpected exception while deciding or building the answer becomes a 503
`router_error` immediate response whose body carries a trace id, logged with
the same id.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2

from router import wire
from router.core.decision import Decision, refusal
from router.core.request import OWS, HeaderMap
from router.metrics import RouterMetrics
from router.runtime import Routed, Runtime
from router.server.requestlog import RequestLog

log = logging.getLogger("hybrid_router.server")
OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Longest a cloud request throttled by a short budget lease waits for its top-up before
# it is planned once more: well inside Envoy's 200 ms message timeout.
BUDGET_WAIT_S = 0.05


_LENGTH = re.compile(r"[0-9]{1,15}")
MAX_REQUEST_ID = 128


_READ_PREFIXES = (wire.AFFINITY_PREFIX, wire.ROUTE_PREFIX)
_READ_NAMES = frozenset({"content-length", wire.H_REQUEST_ID})


def request_headers(msg: Any) -> HeaderMap:
    """The headers the router reads (affinity tags, client route headers, content-length,
    x-request-id) by lower-case name, repeated names remembered.

    Envoy sends every header line as its own entry, a repeated name too (HTTP/1
    and HTTP/2 alike), with the bytes in `raw_value` (`value` in older Envoys).
    Bytes are decoded with surrogateescape so invalid UTF-8 reaches the parser,
    which refuses it naming the tag, instead of being replaced here. Other headers
    (user-agent, accept, ...) are skipped undecoded: the decision never reads them.
    """
    pairs = []
    for h in msg.headers.headers:
        name = h.key.lower()
        if name.startswith(_READ_PREFIXES) or name in _READ_NAMES:
            pairs.append((name, h.raw_value.decode("utf-8", "surrogateescape") if h.raw_value
                          else h.value))
    return HeaderMap(pairs)


def payload_bytes(headers: Mapping[str, str]) -> int | None:
    """The request's content-length in bytes; None when absent or not plain ASCII digits
    (the policy's defaults.payload_kb is used then). Only asked when a body follows the
    headers: a request whose headers end the stream has none (0 bytes)."""
    text = headers.get("content-length", "").strip(OWS)
    return int(text) if _LENGTH.fullmatch(text) else None


def request_id(headers: Mapping[str, str]) -> str:
    """x-request-id when it is short printable ASCII (it goes into logs), else ''."""
    rid = headers.get(wire.H_REQUEST_ID, "")
    ok = len(rid) <= MAX_REQUEST_ID and rid.isascii() and rid.isprintable()
    return rid if ok else ""


def log_entry(headers: Mapping[str, str], size: int | None, no_body: bool,
              d: Decision) -> dict[str, Any]:
    """One request-log line (docs/reference.md, "Request log"); the duration is added at the end.

    The affinity tags are kept as sent, so a replay parses them under a candidate
    policy's defaults exactly as production would have.
    """
    return {"t": round(time.time(), 6), "request_id": request_id(headers),
            "tags": {k: v for k, v in headers.items() if k.startswith(wire.AFFINITY_PREFIX)},
            "content_length": 0 if no_body else size, "status": d.status, "mode": d.mode,
            "node": d.node, "quality": d.quality, "cost_usd": round(d.cost_usd, 9),
            "est_ms": round(d.est_ms, 3), "reason": d.reason, "policy": d.policy}


def _option(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key,
                                                                  raw_value=value.encode()),
                                      append_action=OVERWRITE)


_RESPONSES: dict[tuple[tuple[str, str], ...], Any] = {}
_MAX_CACHED = 4096  # responses are ~200-400 bytes; the cache is bounded whatever clients send


def routed_response(decision: Decision, sent: dict[str, str]) -> Any:
    """Header mutations: set the route headers, remove any other client-sent x-route-*.

    A fleet has few distinct header sets (target × mode × quality × reason × cost), so
    the built protobuf response is cached per set: it is never mutated after building.
    The key is the router's own headers only, never a name the client chose: Envoy strips
    client `x-route-*` headers before the router sees them, so a request that still
    carries one came from a direct client and gets a response built for it alone.
    """
    headers = decision.headers()
    ours = {k for k, _ in headers}
    extra = [k for k in sent if k.startswith(wire.ROUTE_PREFIX) and k not in ours]
    if extra:
        return _routed(headers, extra)
    key = tuple(headers)
    cached = _RESPONSES.get(key)
    if cached is None:
        if len(_RESPONSES) >= _MAX_CACHED:
            _RESPONSES.clear()
        cached = _RESPONSES[key] = _routed(headers, [])
    return cached


def _routed(headers: list[tuple[str, str]], remove: list[str]) -> Any:
    # clear_route_cache: the route table picks the cluster from x-route-cluster, set here
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(
        response=pb.CommonResponse(header_mutation=_mutation(headers, remove),
                                   clear_route_cache=True)))


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

    def __init__(self, runtime: Runtime, metrics: RouterMetrics, *, max_streams: int = 4096,
                 budget_wait: Callable[[float], Awaitable[bool]] | None = None,
                 request_log: RequestLog | None = None) -> None:
        """Serve decisions from `runtime`; refuse with 503 past `max_streams` open streams.

        `budget_wait(timeout)`: wait for the budget keeper's next round with the store
        (True: plan again), for requests throttled by a short lease. `request_log`: one
        JSON line per request, queued when its stream ends (off the request path).
        """
        self.runtime = runtime
        self.request_log = request_log
        self.budget_wait = budget_wait
        self.metrics = metrics
        self.max_streams = max_streams
        self.open_streams = 0
        self.unfinished = 0  # routed requests whose stream has not ended yet
        self._counters: dict[tuple[str, str], Any] = {}

    async def Process(self, request_iterator: AsyncIterator[Any], context: Any
                      ) -> AsyncIterator[Any]:
        """Handle one HTTP request's messages; always answer, never fail the stream."""
        routed: Routed | None = None  # set only while this stream holds slots or budget
        answered = False
        entry: dict[str, Any] | None = None  # this request's request-log line, when logging
        began = time.perf_counter()
        self.open_streams += 1
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("request")
                if kind == "request_headers" and not answered:
                    answered = True
                    routed, answer, entry = await self._answer(msg.request_headers)
                    yield answer
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
            if routed is not None:
                self.unfinished -= 1
                self._release(routed)
            if entry is not None and self.request_log is not None:
                entry["duration_ms"] = round((time.perf_counter() - began) * 1000.0, 3)
                self.request_log.record(entry)

    async def _answer(self, msg: Any) -> tuple[Routed | None, Any, dict[str, Any] | None]:
        """Decide and build the reply: (what the stream now holds, the reply).

        Any unexpected exception becomes a 503 `router_error` rather than a
        failed stream, which Envoy would turn into a fail-open. A cloud request
        throttled by a short budget lease (a refusal: it holds nothing) waits
        once, at most BUDGET_WAIT_S, for the keeper's top-up and is planned again;
        nothing else ever waits.
        """
        headers: HeaderMap | None = None
        routed: Routed | None = None
        try:
            headers = request_headers(msg)
            size = 0 if msg.end_of_stream else payload_bytes(headers)
            t0 = time.perf_counter()
            routed = self._route(headers, size)
            spent = time.perf_counter() - t0
            if routed.decision.reason == wire.R_BUDGET_THROTTLED and \
                    self.budget_wait is not None and await self.budget_wait(BUDGET_WAIT_S):
                t1 = time.perf_counter()
                routed = self._route(headers, size)
                spent += time.perf_counter() - t1
            self._record(routed.decision, spent, request_id(headers))
            entry = None if self.request_log is None else \
                log_entry(headers, size, msg.end_of_stream, routed.decision)
            if not routed.decision.routed:
                return None, immediate(routed.decision), entry  # a refusal holds nothing
            answer = routed_response(routed.decision, headers)
        except Exception:
            # A routed decision that never reaches Envoy must not keep its hold.
            if routed is not None and routed.decision.routed:
                self._release(routed)
            return None, self._router_error(headers), None
        self.unfinished += 1
        return routed, answer, entry

    def _route(self, headers: HeaderMap, size: int | None) -> Routed:
        """Decide; `size` is the body's length, 0 without one, None when Envoy does not know."""
        if self.open_streams > self.max_streams:
            d = refusal(503, wire.E_OVERLOAD, wire.R_OVERLOAD,
                        f"router has {self.open_streams} open streams (max {self.max_streams})",
                        self.runtime.policy.digest, retry_after=1)
            return Routed(d, self.runtime.snapshot)
        return self.runtime.route(headers, payload_bytes=size, request_id=request_id(headers))

    def _record(self, d: Decision, seconds: float, rid: str) -> None:
        self.metrics.decision_seconds.observe(seconds)
        self._count(d.mode, d.reason)
        if d.routed:
            log.debug("%s -> %s %s (%s)", rid, d.mode, d.node, d.reason)
        else:
            self.metrics.refusals.labels(str(d.status), d.reason).inc()
            log.info("%s refused %d %s: %s", rid, d.status, d.reason, d.detail)

    def _count(self, mode: str, reason: str) -> None:
        counter = self._counters.get((mode, reason))
        if counter is None:
            counter = self._counters[(mode, reason)] = self.metrics.decisions.labels(mode, reason)
        counter.inc()

    def _release(self, routed: Routed) -> None:
        """Hand back a routed request's slots and budget hold (called once per decision)."""
        try:
            self.runtime.finish(routed)
        except Exception:
            log.exception("releasing %s on %s failed", routed.decision.mode,
                          routed.decision.node)

    def _router_error(self, headers: HeaderMap | None) -> Any:
        """The 503 for an unexpected failure, logged with the trace id its body carries."""
        trace = secrets.token_hex(8)
        rid = request_id(headers) if headers is not None else ""
        log.exception("router error, trace id %s (request %s); answered 503", trace, rid or "-")
        try:
            self._count(wire.MODE_REFUSED, wire.R_ROUTER_ERROR)
        except Exception:
            log.exception("counting router error %s failed", trace)
        try:
            policy = str(self.runtime.policy.digest)
        except Exception:
            policy = "unknown"
        try:
            return immediate(refusal(
                wire.STATUS_ROUTER_ERROR, wire.E_ROUTER_ERROR, wire.R_ROUTER_ERROR,
                f"the router failed to decide this request; trace id {trace}", policy))
        except Exception:
            log.exception("building the router error answer %s failed", trace)
            return _LAST_RESORT


_LAST_RESORT = immediate(refusal(wire.STATUS_ROUTER_ERROR, wire.E_ROUTER_ERROR,
                                 wire.R_ROUTER_ERROR, "the router failed to decide this request",
                                 "unknown"))
