"""Envoy's side of the link to the router: limits sized to it, ADS, and Envoy's name.

Envoy holds one ext_proc stream to the router per HTTP request in flight, and
one ADS stream. Its circuit breakers on the router's cluster are sized to what
the router holds (`router_limits`), ADS reconnects within half a second after a
router restart (`ADS_BACKOFF`), may use an address of its own (`--xds`), and
every ext_proc stream names the Envoy it comes from (`name_envoy`), so the router
answers with endpoints that Envoy has ACKed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from router import wire

T = "type.googleapis.com/"
ROUTER_CLUSTER = "hybrid_router"


def socket(hostport: str) -> dict[str, Any]:
    """An Envoy address: `unix:PATH` as a pipe, else HOST:PORT."""
    if hostport.startswith("unix:"):
        return {"pipe": {"path": hostport.removeprefix("unix:")}}
    host, _, port = hostport.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def router_limits(max_streams: int, workers: int) -> dict[str, Any]:
    """Circuit breakers for the router's cluster, sized to what the router can hold.

    Envoy holds one ext_proc stream per HTTP request in flight, and a request its
    breaker turns away is forwarded without the router (`failure_mode_allow`): the
    fail-safe route, edge only, no slot or budget check. At Envoy's default of 1,024
    that bypass begins long before the router is full. Sized to every worker's
    `--max-streams` plus headroom, the router is the one that says no (503
    `router_overloaded`, counted), and Envoy's breaker trips only past that; when it
    does, `upstream_rq_active_overflow` counts it and `HybridRouterBypassed` fires.
    """
    total = max_streams * max(1, workers) + wire.STREAM_HEADROOM
    return {"thresholds": [{"priority": "DEFAULT", "max_connections": total,
                            "max_pending_requests": total, "max_requests": total,
                            "max_retries": total, "track_remaining": True}]}


def router_cluster(router: str, max_streams: int = 4096, workers: int = 1) -> dict[str, Any]:
    """The router's own cluster: ext_proc and ADS over HTTP/2, limits sized to the router."""
    per_connection = max_streams + wire.STREAM_HEADROOM  # what `serve` allows per connection
    return {
        "name": ROUTER_CLUSTER, "type": "STATIC", "connect_timeout": "0.25s",
        "circuit_breakers": router_limits(max_streams, workers),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "max_concurrent_streams": per_connection}}}},
        "load_assignment": {"cluster_name": ROUTER_CLUSTER, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": socket(router)}}]}]}}


@dataclass(frozen=True, slots=True)
class RouterLink:
    """Envoy's side of the link to the router: its limits, where ADS is, Envoy's node id."""

    max_streams: int = 4096  # serve --max-streams
    workers: int = 1  # serve --workers
    xds: str | None = None  # serve --xds, when ADS has an address of its own
    node_id: str | None = None  # default hybrid-router-<mode>; one per Envoy is best


DEFAULT_LINK = RouterLink()
XDS_CLUSTER = "hybrid_router_xds"
# Envoy's own default waits up to 30 s between ADS reconnects (12.9 s measured after a
# router restart), while the router already answers ext_proc: keep the gap short.
ADS_BACKOFF = {"retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}}


def ads(link: RouterLink, clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """Dynamic resources from the router's ADS, on the ext_proc port or its own."""
    cluster = ROUTER_CLUSTER
    if link.xds is not None:
        cluster = XDS_CLUSTER
        clusters.append({"name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "0.25s",
                         # a copy: a shared dict is written as a YAML anchor and alias
                         "typed_extension_protocol_options": copy.deepcopy(clusters[0][
                             "typed_extension_protocol_options"]),
                         "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [
                             {"lb_endpoints": [{"endpoint": {"address": socket(link.xds)}}]}]}})
    return {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": cluster,
                                                             "retry_policy": ADS_BACKOFF}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"}}


def name_envoy(hcm: dict[str, Any], node_id: str) -> None:
    """Every ext_proc stream carries this Envoy's node id, so the router answers with
    endpoints that this Envoy has ACKed (`router.xds.acks`)."""
    for f in hcm["http_filters"]:
        if f["name"] == "envoy.filters.http.ext_proc":
            f["typed_config"]["grpc_service"]["initial_metadata"] = [
                {"key": wire.H_ENVOY_NODE, "value": node_id}]


