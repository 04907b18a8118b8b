"""ExternalProcessor servicer: ext_proc messages in, `RequestControl` decisions out.

Per stream (one HTTP request): on request headers, decide and answer with header
mutations or an immediate response; the hold is handed back exactly once when the stream
ends. In the processing mode `router.envoy_config` generates, Envoy keeps the stream open
until the HTTP stream ends, however it ends, so the stream's end is the request's end.
Cloud and split answers also ask for the response headers (`extproc.OUTCOME_MODE`): a
5xx there means the pool failed the request, charged as its `bill_failed` says. Every
rule (open-stream bound, budget wait, xDS sync, log line) is `router.control`'s.

The stream never fails: a failed gRPC stream is a fail-open in Envoy, so any unexpected
exception while deciding or answering becomes a 503 `router_error` whose body carries a
trace id, logged with the same id.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from router import wire
from router.control import MAX_OPEN, EnvoyView, RequestControl, payload_bytes, request_id
from router.core.decision import Decision, Routed
from router.core.request import HeaderMap
from router.metrics import RouterMetrics
from router.runtime import Runtime
from router.server import extproc
from router.server.counts import record
from router.server.requestlog import RequestLog

log = logging.getLogger("hybrid_router.server")
Logged = tuple[HeaderMap, int | None, Decision]  # what a request's log line is made from
_NO_HEADERS = HeaderMap()  # the error path's headers before any were read; never written


class Processor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """One ext_proc stream per HTTP request."""

    def __init__(self, runtime: Runtime, metrics: RouterMetrics, *, max_streams: int = MAX_OPEN,
                 budget_wait: Callable[[float], Awaitable[bool]] | None = None,
                 request_log: RequestLog | None = None,
                 envoys: Callable[[str], EnvoyView | None] | None = None) -> None:
        """Serve decisions from `runtime`; refuse with 503 past `max_streams` open streams.

        `budget_wait(timeout)`: the budget keeper's next round (True: plan again);
        `request_log`: one line per request, queued when its stream ends;
        `envoys(node id)`: what the Envoy that opened a stream holds (`router.xds.acks`).
        """
        self.runtime = runtime
        self.control = RequestControl(runtime, max_open=max_streams)
        self.request_log = request_log
        self.budget_wait = budget_wait
        self.metrics = metrics
        self.envoys = envoys

    @property
    def open_streams(self) -> int:
        """Streams open now."""
        return self.control.open

    @property
    def unfinished(self) -> int:
        """Routed requests whose stream has not ended yet."""
        return self.control.held

    async def Process(self, request_iterator: AsyncIterator[Any], context: Any
                      ) -> AsyncIterator[Any]:
        """Handle one HTTP request's messages; always answer, never fail the stream."""
        routed: Routed | None = None  # set only while this stream holds slots or budget
        logged: Logged | None = None  # the log line's inputs, once answered
        answered, began, t = False, time.perf_counter(), self.runtime.clock()
        failed = False  # the response said the pool failed: charged per its bill_failed
        self.control.begin()
        try:
            async for msg in request_iterator:
                kind = msg.WhichOneof("request")
                if kind == "request_headers" and not answered:
                    answered = True
                    node = extproc.envoy_node(context) if self.envoys is not None else None
                    envoy = self.envoys(node) if self.envoys and node is not None else None
                    routed, answer, logged = await self._answer(msg.request_headers, envoy)
                    yield answer
                elif kind == "response_headers":  # asked for by cloud and split answers
                    failed = extproc.upstream_failed(msg.response_headers)
                    yield extproc.PASS[kind]
                elif kind in extproc.PASS:
                    yield extproc.PASS[kind]
        finally:
            # However the stream ends (clean close, reset, cancellation), release once.
            self.control.end(routed, failed=failed)
            if logged is not None and self.request_log is not None:
                ms = (time.perf_counter() - began) * 1000.0
                self.request_log.record(self.control.entry(*logged, t=t, duration_ms=ms))

    async def _answer(self, msg: Any, envoy: EnvoyView | None = None
                      ) -> tuple[Routed | None, Any, Logged | None]:
        """Decide and build the reply: (what the stream now holds, the reply, the log inputs).

        Any unexpected exception becomes a 503 `router_error` rather than a failed
        stream, which Envoy would turn into a fail-open.
        """
        headers: HeaderMap = _NO_HEADERS
        size: int | None = None
        routed: Routed | None = None
        try:
            headers = sent = extproc.request_headers(msg)
            size = 0 if msg.end_of_stream else payload_bytes(headers)
            t0 = time.perf_counter()
            rid = request_id(headers)
            req = self.control.parse(headers, size, rid)
            routed = self.control.decide(req)
            spent = time.perf_counter() - t0
            wait = self.control.wait_s(routed)
            if wait is not None and self.budget_wait is not None \
                    and await self.budget_wait(wait):
                t1 = time.perf_counter()
                routed = self.control.decide(req)
                spent += time.perf_counter() - t1
            routed = self.control.synced(routed, envoy)
            d = routed.decision
            record(self.metrics.tally, d, spent, rid)
            if not d.routed:
                return None, extproc.immediate(d), (headers, size, d)  # a refusal holds nothing
            return routed, extproc.routed_response(d, sent.route), (headers, size, d)
        except Exception:
            # A routed decision that never reaches Envoy must not keep its hold.
            if routed is not None and routed.decision.routed:
                self.control.release(routed)
            return None, self._router_error(headers), None

    def _router_error(self, headers: HeaderMap) -> Any:
        """The 503 for an unexpected failure, logged with the trace id its body carries."""
        trace = secrets.token_hex(8)
        log.exception("router error, trace id %s (request %s); answered 503", trace,
                      request_id(headers) or "-")
        try:
            self.metrics.tally.decided(wire.MODE_REFUSED, wire.R_ROUTER_ERROR)
        except Exception:
            log.exception("counting router error %s failed", trace)
        try:
            return extproc.router_error(trace, str(self.runtime.policy.digest))
        except Exception:
            log.exception("building the router error answer %s failed", trace)
            return extproc.LAST_RESORT
