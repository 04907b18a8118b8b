"""Envoy's access log service: the failed requests' entries in, passive health out.

The generated config has every Envoy stream the entry of each request that failed (status
500 or more: an upstream's own error, or Envoy's 503 for one that refused or reset and 504
for one that timed out; `router.envoy_access.failure_log`) to the router over the same
HTTP/2 cluster as ext_proc, batched every 0.1 s. Each entry names the edge node the
router sent the request to and its mode, as the route headers it set (Envoy strips a
client's own x-route-* headers before ext_proc, so a client cannot blame a node). An edge
request's failure counts against its node (`Runtime.failed`, `router.core.outliers`);
when it takes the node out of the ring the refresher is woken to rebuild the table at
once. Split requests' failures are not counted: the node forwarded them to a pool, which
may be the one that failed. Entries arrive after the request's stream has ended, so the
node's count of ended requests already holds the failed one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from router import wire
from router.envoy_access import FAILED_FROM
from router.runtime import Runtime

log = logging.getLogger("hybrid_router.server")


def _nothing() -> None:
    """The wake-up of a server whose refresher has not started yet."""


class FailureLog(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """Counts failed edge requests against their node; wakes the refresher on an ejection."""

    def __init__(self, runtime: Runtime,
                 on_failure: Callable[[str, bool], None] | None = None) -> None:
        """Report to `runtime`; `on_failure(node, ejected)` for each failure counted, True
        when it took the node out (metrics)."""
        self.runtime = runtime
        self.on_failure = on_failure
        self.wake: Callable[[], None] = _nothing  # the refresher's, once it runs

    async def StreamAccessLogs(self, request_iterator: AsyncIterator[Any], context: Any
                               ) -> Any:
        """Read one Envoy's stream of batches until it closes."""
        try:
            async for msg in request_iterator:
                self.batch(msg)
        except Exception:  # a broken stream loses its failures, never the server
            log.exception("reading Envoy's access log stream failed")
        return als_pb2.StreamAccessLogsResponse()

    def batch(self, msg: Any) -> int:
        """Count the failed edge requests of one batch; how many were counted."""
        counted = 0
        out = False
        now = self.runtime.clock()
        for entry in msg.http_logs.log_entry:
            if entry.response.response_code.value < FAILED_FROM:
                continue
            headers = entry.request.request_headers
            node, mode = headers.get(wire.H_NODE), headers.get(wire.H_MODE)
            if not node or mode not in wire.EDGE_MODES:
                continue
            counted += 1
            ejected = self.runtime.failed(node, now)
            if self.on_failure is not None:
                self.on_failure(node, ejected)
            if ejected:
                out = True
                log.warning("edge node %s taken out of the ring: its requests fail; back in "
                            "%.0f s", node, (self.runtime.outliers.until(node) or now) - now)
        if out:
            self.wake()
        return counted
