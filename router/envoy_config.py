"""`hybrid-router envoy-config`: the Envoy 1.40 bootstrap for a policy, gateway or sidecar.

By default Envoy learns the inference clusters and routes from the router over
ADS (`router.xds`): endpoints follow every feed refresh and policy reload, and
Envoy keeps the last config while the router is away. `--static` writes the
same clusters and routes inline (policy weights, no feed) for setups without
xDS. Either way the HTTP filter chain is:

0. (before routing) strip every client-sent `x-route-*` header by prefix, so
   no client picks its upstream or smuggles a header upstreams would trust,
   router up or down;
1. buffer the request body up to `--max-request-bytes` (413 past it) before
   the router sees the headers: the router then knows every payload's size
   (chunked and HTTP/2 bodies get a content-length), and a slow upload holds
   no edge slot while it trickles in (`request_timeout` bounds it);
2. ext_proc, failing open with a short message timeout, in the one processing
   mode whose stream ends exactly when the HTTP request does (`PROCESSING_MODE`);
3. the router, on the route table of `router.xds.resources`.

Every reply Envoy makes itself (bad header bytes, oversized headers or body,
no healthy upstream, timeouts) gets the same JSON `{"error", "detail"}` body
as the router's own refusals, through `local_reply_config`; the router's
immediate responses (details `hybrid_router_*`) pass through untouched.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from router import envoy_access, envoy_auth, wire
from router.cliargs import POSITIVE, address, number
from router.core.policy import Policy
from router.core.table import build_table
from router.envoy_link import DEFAULT_LINK, ROUTER_CLUSTER, RouterLink, name_envoy, router_cluster
from router.envoy_link import ads as _ads
from router.envoy_link import socket as _socket
from router.policy.loader import load_policy_or_report
from router.xds import resources as xds

ACCESS_LOG = "/dev/stdout"  # a container's log; `--access-log FILE` for a replay (section 10)
GRACEFUL_CLOSE = "envoy.reloadable_features.ext_proc_graceful_grpc_close"
T = "type.googleapis.com/"
DETAILS_PREFIX = "hybrid_router"  # ImmediateResponse.details of the router's own refusals

# Measured with Envoy 1.40: with response headers SEND the ext_proc stream ends when the
# upstream's response headers arrive, before a streamed body ends. With response headers
# SKIP and response trailers SEND, Envoy sends nothing more after the request headers (no
# trailers in the response, no message) but keeps the stream open until the HTTP stream
# ends: body complete, upstream reset mid-body, route timeout (504), connection failure
# (503 local reply) and client reset all end it at that instant. One message per request,
# and the stream's end is the request's end (tests/integration/test_envoy_stack.py). Cloud
# and split answers override response headers to SEND: a second message carrying the
# status (Envoy's own 503/504 included), and still the stream ends with the body
# (tests/integration/test_billing.py).
PROCESSING_MODE = {"request_header_mode": "SEND", "response_header_mode": "SKIP",
                   "request_body_mode": "NONE", "response_body_mode": "NONE",
                   "request_trailer_mode": "SKIP", "response_trailer_mode": "SEND"}

# Only the headers the router reads travel to it (wire.READ_*): serializing, sending and
# parsing a browser's cookies and user agent on every request is work for nothing. The
# rules apply to pseudo-headers too, so a response's :status is named.
FORWARD_RULES = {"allowed_headers": {"patterns": (
    [{"prefix": p} for p in wire.READ_PREFIXES]
    + [{"exact": n} for n in wire.READ_NAMES + wire.READ_RESPONSE_NAMES])}}


def local_replies() -> dict[str, Any]:
    """Envoy's own replies as JSON; the router's refusals and direct responses kept as sent."""
    def cel(expression: str) -> dict[str, Any]:
        return {"extension_filter": {"name": "cel", "typed_config": {
            "@type": T + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": expression}}}

    # Overwrite: the route's echo of the router's reason is already on an upstream failure's
    # local reply (503 reset, 504 timeout), and it was Envoy, not that rung, that answered.
    reason = [{"header": {"key": wire.H_REASON, "value": "envoy"},
               "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    return {"mappers": [
        {"filter": cel(f"response.code_details.startsWith('{DETAILS_PREFIX}') || "
                       "response.code_details == 'direct_response'"),
         "body_format_override": {"text_format_source": {"inline_string": "%LOCAL_REPLY_BODY%"},
                                  "content_type": "application/json"}},
        {"filter": cel("true"), "headers_to_add": reason,
         "body_format_override": {
             "json_format": {"error": "envoy_%RESPONSE_CODE%",
                             "detail": "%RESPONSE_CODE_DETAILS%"},
             "content_type": "application/json"}},
    ]}


def _filters(message_timeout_ms: int, max_request_bytes: int) -> list[dict[str, Any]]:
    return [
        {"name": "envoy.filters.http.buffer", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": max_request_bytes}},
        {"name": "envoy.filters.http.ext_proc", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": ROUTER_CLUSTER}, "timeout": "1s"},
            "failure_mode_allow": True,
            "message_timeout": f"{message_timeout_ms / 1000:g}s",
            "processing_mode": dict(PROCESSING_MODE),
            # the router asks for a cloud request's response headers (its status decides
            # what the budget is charged: router.server.servicer.OUTCOME_MODE)
            "allow_mode_override": True,
            "forward_rules": FORWARD_RULES,
            "mutation_rules": {"allow_all_routing": True}}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.router.v3.Router"}},
    ]


def _hcm(mode: str, message_timeout_ms: int, request_timeout_s: float,
         max_request_bytes: int) -> dict[str, Any]:
    """The HTTP connection manager, without its route table."""
    return {
        "@type": T + "envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager",
        "stat_prefix": "ingress" if mode == "gateway" else "sidecar",
        "generate_request_id": True,
        "request_headers_timeout": "10s",
        "request_timeout": f"{request_timeout_s:g}s",
        "stream_idle_timeout": "30s",
        "max_request_headers_kb": 64,
        "local_reply_config": local_replies(),
        # Before route selection, not as an HTTP filter: a filter runs after the route is
        # cached, so a client's x-route-cluster would still pick the cloud route when the
        # router does not answer (measured with Envoy 1.40).
        "early_header_mutation_extensions": [{
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {
                "@type": T + "envoy.extensions.http.early_header_mutation.header_mutation.v3."
                             "HeaderMutation",
                "mutations": [{"remove_on_match": {"key_matcher": {
                    "prefix": wire.ROUTE_PREFIX}}}]}}],
        "http_filters": _filters(message_timeout_ms, max_request_bytes),
    }


def build(policy: Policy, *, mode: str, listen: str, router: str, admin: str,
          static: bool = False, message_timeout_ms: int = 200,
          upstream_timeout_s: float = 30.0, request_timeout_s: float = 60.0,
          max_request_bytes: int = 8 * 1024 * 1024,
          auth: envoy_auth.JwtAuth | None = None,
          link: RouterLink = DEFAULT_LINK, access_log: str = ACCESS_LOG,
          echo: bool = True) -> dict[str, Any]:
    """The whole bootstrap as plain data; `auth`: the tenant from a verified JWT;
    `access_log`: where Envoy writes its JSON access log (`off`: nowhere); `echo`: routed
    responses carry the decision's x-route-* headers (`--static` only)."""
    opts = xds.Options(upstream_timeout_s=upstream_timeout_s, xds=not static, echo=echo)
    hcm = _hcm(mode, message_timeout_ms, request_timeout_s, max_request_bytes)
    hcm["access_log"] = [envoy_access.failure_log(ROUTER_CLUSTER)]
    if access_log != "off":
        hcm["access_log"] += envoy_access.access_log(access_log)
    clusters: list[dict[str, Any]] = [router_cluster(router, link.max_streams, link.workers)]
    if auth is not None:
        envoy_auth.apply(hcm, clusters, auth)
    node_id = link.node_id or f"hybrid-router-{mode}"
    doc: dict[str, Any] = {
        "node": {"id": node_id, "cluster": "hybrid-router"},
        "admin": {"address": _socket(admin)},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {GRACEFUL_CLOSE: True}}]},
    }
    if static:  # clusters and routes inline, from the policy alone
        from router.core.loads import LoadTracker
        from router.core.ring import PointCache

        snap = build_table(policy, None, LoadTracker(), PointCache(), now=0.0)
        inline = xds.as_dicts(xds.build(snap, opts))
        clusters += inline[xds.CLUSTER_TYPE]
        hcm["route_config"] = inline[xds.ROUTE_TYPE][0]
    else:  # clusters and routes from the router's ADS
        hcm["rds"] = {"route_config_name": xds.ROUTE_CONFIG,
                      "config_source": {"ads": {}, "resource_api_version": "V3"}}
        doc["dynamic_resources"] = _ads(link, clusters)
        name_envoy(hcm, node_id)
    doc["static_resources"] = {
        "listeners": [{"name": mode, "address": _socket(listen), "filter_chains": [{
            "filters": [{"name": "envoy.filters.network.http_connection_manager",
                         "typed_config": hcm}]}]}],
        "clusters": clusters}
    return doc


DEFAULTS = {"gateway": ("127.0.0.1:10000", "127.0.0.1:9901"),
            "sidecar": ("127.0.0.1:15001", "127.0.0.1:15000")}


def render(policy: Policy, mode: str, *, listen: str | None = None, router: str = "127.0.0.1:50051",
           admin: str | None = None, source: str = "", static: bool = False,
           upstream_timeout_s: float = 30.0, request_timeout_s: float = 60.0,
           max_request_bytes: int = 8 * 1024 * 1024, message_timeout_ms: int = 200,
           auth: envoy_auth.JwtAuth | None = None, link: RouterLink = DEFAULT_LINK,
           access_log: str = ACCESS_LOG, echo: bool = True) -> str:
    """The config as YAML text with a header saying where it came from."""
    listen = listen or DEFAULTS[mode][0]
    admin = admin or DEFAULTS[mode][1]
    doc = build(policy, mode=mode, listen=listen, router=router, admin=admin, static=static,
                message_timeout_ms=message_timeout_ms, upstream_timeout_s=upstream_timeout_s,
                request_timeout_s=request_timeout_s, max_request_bytes=max_request_bytes,
                auth=auth, link=link, access_log=access_log, echo=echo)
    how = "inline (--static)" if static else f"from the router's xDS server at {router}"
    head = (f"# Envoy 1.40 {mode} config generated by `hybrid-router envoy-config"
            f"{' --policy ' + source if source else ''} --mode {mode}"
            f"{' --static' if static else ''}`.\n"
            f"# Policy version {policy.digest}; inference clusters and routes {how}.\n"
            + (f"# x-affinity-tenant from the '{auth.tenant_claim}' claim of a verified JWT "
               f"(issuer {auth.issuer}).\n" if auth is not None else "") +
            "# Do not edit: regenerate from the policy.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's arguments."""
    parser.add_argument("--policy", required=True, metavar="FILE")
    parser.add_argument("--mode", choices=("gateway", "sidecar"), default="gateway")
    parser.add_argument("--static", action="store_true",
                        help="write the inference clusters and routes inline instead of "
                             "taking them from the router over xDS")
    parser.add_argument("--listen", metavar="HOST:PORT", type=address(unix=False),
                        help="Envoy's listener (gateway 127.0.0.1:10000, sidecar "
                             "127.0.0.1:15001)")
    parser.add_argument("--router", default="127.0.0.1:50051", metavar="HOST:PORT|unix:PATH",
                        type=address(listen=False),
                        help="where hybrid-router serve listens: ext_proc and xDS "
                             "(default 127.0.0.1:50051)")
    parser.add_argument("--admin", metavar="HOST:PORT", type=address(unix=False),
                        help="Envoy admin address (loopback by default; never expose it)")
    parser.add_argument("--upstream-timeout", type=POSITIVE, default=30.0, metavar="SECONDS",
                        help="route timeout to the inference upstreams (default 30)")
    parser.add_argument("--request-timeout", type=POSITIVE, default=60.0, metavar="SECONDS",
                        help="time to receive a whole request, body included (default 60)")
    parser.add_argument("--max-request-bytes", type=number(int, 1), metavar="N",
                        default=8 * 1024 * 1024,
                        help="largest request body Envoy buffers before routing; 413 past it "
                             "(default 8 MiB)")
    parser.add_argument("--message-timeout", type=number(int, 1), default=200, metavar="MS",
                        help="how long Envoy waits for the router's answer before it routes "
                             "on its own, within the request's residency (default 200)")
    envoy_auth.add_arguments(parser)
    parser.add_argument("--max-streams", type=number(int, 1), default=4096, metavar="N",
                        help="the router's `serve --max-streams`: Envoy's circuit breakers on "
                             "the router are sized to it (default 4096)")
    parser.add_argument("--workers", type=number(int, 1), default=1, metavar="N",
                        help="the router's `serve --workers` (default 1)")
    parser.add_argument("--xds", metavar="HOST:PORT|unix:PATH", type=address(listen=False),
                        help="the router's `serve --xds`, when ADS has an address of its own "
                             "(default: ADS on --router)")
    parser.add_argument("--node-id", metavar="ID",
                        help="this Envoy's node id, which the router tells Envoys apart by; "
                             "give each Envoy its own (default hybrid-router-<mode>)")
    parser.add_argument("--access-log", default=ACCESS_LOG, metavar="PATH|off",
                        help="where Envoy writes its JSON access log, one line per request "
                             f"(default {ACCESS_LOG}; `off` writes none)")
    parser.add_argument("--no-echo", dest="echo", action="store_false",
                        help="routed responses do not echo the decision's x-route-* headers "
                             "(--static; with xDS it is `serve --no-echo`)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Print (or write) the config."""
    auth = envoy_auth.from_args(args)
    if isinstance(auth, str):
        sys.stderr.write(f"envoy-config: {auth}\n")
        return 2
    policy = load_policy_or_report(args.policy)
    if policy is None:
        return 2
    if args.mode == "sidecar":
        from router.server.fleet import unshared_problem

        problem = unshared_problem(policy, "--mode sidecar deploys a router in every pod")
        if problem is not None:
            print(f"hybrid-router envoy-config: warning: {problem}", file=sys.stderr)
    text = render(policy, args.mode, listen=args.listen, router=args.router, admin=args.admin,
                  source=args.policy, static=args.static,
                  upstream_timeout_s=args.upstream_timeout, echo=args.echo,
                  request_timeout_s=args.request_timeout,
                  max_request_bytes=args.max_request_bytes,
                  message_timeout_ms=args.message_timeout, auth=auth,
                  link=RouterLink(args.max_streams, args.workers, args.xds, args.node_id),
                  access_log=args.access_log)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0
