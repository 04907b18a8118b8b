"""Envoy's JSON access log: what each client got, the record the router's request log joins.

The router logs what it decided when its ext_proc stream ends; only Envoy knows what the
client finally got — an upstream that refused or reset, a timeout, a fail-open while the
router was away. So the generated config has Envoy write one JSON object per request
(`FIELDS`): the request id the router logs too, the status and duration the client saw, the
upstream host that answered, the route headers as the router set them, the affinity tags
as the client sent them (so the access log alone can be replayed) and the bytes each way.
Every header value is cut at `MAX_HEADER_CHARS`, so a client cannot make one line huge.
`simulator.accesslog` reads it.
"""

from __future__ import annotations

from typing import Any

from router import wire

MAX_HEADER_CHARS = 256
TAG_HEADERS = (wire.H_KEY, wire.H_TENANT, wire.H_RESIDENCY, wire.H_SLO, wire.H_MODEL,
               wire.H_DEGRADE, wire.H_MAX_COST, wire.H_TAGS)
_T = "type.googleapis.com/"


def _req(header: str) -> str:
    return f"%REQ({header.upper()}):{MAX_HEADER_CHARS}%"


FIELDS: dict[str, Any] = {
    "start_time": "%START_TIME(%s.%6f)%",  # epoch seconds, as the request log's `t`
    "request_id": _req(wire.H_REQUEST_ID),
    "status": "%RESPONSE_CODE%",
    "duration_ms": "%DURATION%",  # first byte in to last byte out
    "response_flags": "%RESPONSE_FLAGS%",  # UF, UT, URX ...: why Envoy answered itself
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "content_length": _req("content-length"),
    "route": {h: _req(h) for h in wire.ROUTE_HEADERS},
    "tags": {h: _req(h) for h in TAG_HEADERS},
}


def access_log(path: str) -> list[dict[str, Any]]:
    """The connection manager's `access_log`: one JSON line per request to `path`."""
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": _T + "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path,
        "log_format": {"json_format": FIELDS,
                       "json_format_options": {"sort_properties": False}}}}]


# Passive health (router.core.outliers): Envoy streams the entry of every request that
# failed (a 5xx, its own for an upstream that refused, reset or timed out, or the upstream's)
# to the router's access log service, which counts it against the edge node the router
# named. Only failures travel: a request that succeeds costs Envoy nothing here.
FAILURE_LOG = "hybrid-router-failures"
FAILED_FROM = 500


def failure_log(cluster: str) -> dict[str, Any]:
    """The connection manager's gRPC access log of failed requests, to the router's
    `cluster` (`router.server.accesslog`)."""
    return {"name": "envoy.access_loggers.http_grpc",
            "filter": {"status_code_filter": {"comparison": {
                "op": "GE", "value": {"default_value": FAILED_FROM,
                                      "runtime_key": "hybrid_router.failed_from"}}}},
            "typed_config": {
                "@type": _T + "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                "common_config": {
                    "log_name": FAILURE_LOG, "transport_api_version": "V3",
                    "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
                    "buffer_flush_interval": "0.1s"},
                "additional_request_headers_to_log": [wire.H_NODE, wire.H_MODE]}}
