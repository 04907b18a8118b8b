"""`hybrid-router envoy-config`: the Envoy 1.40 config for a policy, gateway or sidecar.

Node and pool addresses live only in the policy; this prints the Envoy side:
- a header_mutation filter that strips every client-sent `x-route-*` header
  *before* ext_proc, so even with the router down no client picks its upstream;
- the ext_proc filter failing open with a short message timeout, in the one
  processing mode whose stream ends exactly when the HTTP request does (see
  `PROCESSING_MODE`);
- one `inference` cluster listing exactly the policy's endpoints, balanced by
  `override_host` on `x-route-target` with ring hash on `x-affinity-key`
  (bounded by `hash_balance_factor`) as the fallback when no target is set.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from router import wire
from router.core.model import Policy
from router.policy.loader import load_policy_or_report

GRACEFUL_CLOSE = "envoy.reloadable_features.ext_proc_graceful_grpc_close"
T = "type.googleapis.com/"

# Measured with Envoy 1.40: with response headers SEND the ext_proc stream ends when the
# upstream's response headers arrive, before a streamed body ends. With response headers
# SKIP and response trailers SEND, Envoy sends nothing more after the request headers (no
# trailers in the response, no message) but keeps the stream open until the HTTP stream
# ends: body complete, upstream reset mid-body, route timeout (504), connection failure
# (503 local reply) and client reset all end it at that instant. One message per request,
# and the stream's end is the request's end (tests/integration/test_envoy_stack.py).
PROCESSING_MODE = {"request_header_mode": "SEND", "response_header_mode": "SKIP",
                   "request_body_mode": "NONE", "response_body_mode": "NONE",
                   "request_trailer_mode": "SKIP", "response_trailer_mode": "SEND"}


def _socket(hostport: str) -> dict[str, Any]:
    if hostport.startswith("unix:"):
        return {"pipe": {"path": hostport.removeprefix("unix:")}}
    host, _, port = hostport.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def _endpoints(policy: Policy) -> list[dict[str, Any]]:
    addrs = [n.address for n in policy.nodes] + [p.address for p in policy.pools]
    return [{"endpoint": {"address": _socket(a)}} for a in addrs]


def build(policy: Policy, *, mode: str, listen: str, router: str, admin: str,
          message_timeout_ms: int = 200, balance_factor_pct: int | None = None,
          upstream_timeout_s: float = 30.0) -> dict[str, Any]:
    """The whole bootstrap as plain data."""
    factor = balance_factor_pct or max(100, round(100 * (1 + policy.balance_factor)))
    strip = [{"remove": h} for h in wire.ROUTE_HEADERS]
    echo = [{"header": {"key": h, "value": f"%REQ({h})%"}, "append_action":
             "OVERWRITE_IF_EXISTS_OR_ADD", "keep_empty_value": False}
            for h in (wire.H_MODE, wire.H_NODE, wire.H_QUALITY, wire.H_REASON, wire.H_POLICY)]
    route: dict[str, Any] = {
        "cluster": "inference",
        "timeout": f"{upstream_timeout_s:g}s",
        "hash_policy": [{"header": {"header_name": wire.H_KEY}}],
    }
    hcm = {
        "@type": T + "envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager",
        "stat_prefix": "ingress" if mode == "gateway" else "sidecar",
        "generate_request_id": True,
        "route_config": {"name": "inference", "virtual_hosts": [{
            "name": "inference", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": route,
                        "response_headers_to_add": echo}],
        }]},
        "http_filters": [
            {"name": "strip-client-route-headers", "typed_config": {
                "@type": T + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": strip}}},
            {"name": "envoy.filters.http.ext_proc", "typed_config": {
                "@type": T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
                "grpc_service": {"envoy_grpc": {"cluster_name": "hybrid_router"},
                                 "timeout": "1s"},
                "failure_mode_allow": True,
                "message_timeout": f"{message_timeout_ms / 1000:g}s",
                "processing_mode": dict(PROCESSING_MODE),
                "mutation_rules": {"allow_all_routing": True}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": T + "envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    lb = {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": T + "envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
            "override_host_sources": [{"header": wire.H_TARGET}],
            "fallback_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.ring_hash",
                "typed_config": {
                    "@type": T + "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
                    "hash_balance_factor": factor}}}]},
        }}}]}
    h2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}}}}
    return {
        "admin": {"address": _socket(admin)},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {GRACEFUL_CLOSE: True}}]},
        "static_resources": {
            "listeners": [{"name": mode, "address": _socket(listen), "filter_chains": [{
                "filters": [{"name": "envoy.filters.network.http_connection_manager",
                             "typed_config": hcm}]}]}],
            "clusters": [
                {"name": "hybrid_router", "type": "STATIC", "connect_timeout": "0.25s",
                 "typed_extension_protocol_options": h2,
                 "load_assignment": {"cluster_name": "hybrid_router", "endpoints": [
                     {"lb_endpoints": [{"endpoint": {"address": _socket(router)}}]}]}},
                {"name": "inference", "type": "STATIC", "connect_timeout": "0.5s",
                 "load_balancing_policy": lb,
                 "load_assignment": {"cluster_name": "inference",
                                     "endpoints": [{"lb_endpoints": _endpoints(policy)}]}},
            ],
        },
    }


DEFAULTS = {"gateway": ("127.0.0.1:10000", "127.0.0.1:9901"),
            "sidecar": ("127.0.0.1:15001", "127.0.0.1:15000")}


def render(policy: Policy, mode: str, *, listen: str | None = None, router: str = "127.0.0.1:50051",
           admin: str | None = None, source: str = "", upstream_timeout_s: float = 30.0) -> str:
    """The config as YAML text with a header saying where it came from."""
    listen = listen or DEFAULTS[mode][0]
    admin = admin or DEFAULTS[mode][1]
    doc = build(policy, mode=mode, listen=listen, router=router, admin=admin,
                upstream_timeout_s=upstream_timeout_s)
    head = (f"# Envoy 1.40 {mode} config generated by `hybrid-router envoy-config"
            f"{' --policy ' + source if source else ''} --mode {mode}`.\n"
            f"# Policy version {policy.digest}. Do not edit: regenerate from the policy.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's arguments."""
    parser.add_argument("--policy", required=True, metavar="FILE")
    parser.add_argument("--mode", choices=("gateway", "sidecar"), default="gateway")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="Envoy's listener (gateway 127.0.0.1:10000, sidecar :15001)")
    parser.add_argument("--router", default="127.0.0.1:50051", metavar="HOST:PORT|unix:PATH",
                        help="where hybrid-router serve listens (default 127.0.0.1:50051)")
    parser.add_argument("--admin", metavar="HOST:PORT", help="Envoy admin address")
    parser.add_argument("--upstream-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="route timeout to the inference cluster (default 30)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Print (or write) the config."""
    policy = load_policy_or_report(args.policy)
    if policy is None:
        return 2
    text = render(policy, args.mode, listen=args.listen, router=args.router, admin=args.admin,
                  source=args.policy, upstream_timeout_s=args.upstream_timeout)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0
