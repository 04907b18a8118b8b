"""The inference side of Envoy's config, built from a snapshot: clusters, endpoints, routes.

One builder serves both the router's xDS server (pushed on every feed refresh
and policy reload) and `envoy-config --static` (written inline), so the two
can never disagree. What Envoy gets:

- one EDS cluster per residency requirement R that some edge node can meet
  (`edge.any`, `edge.GDPR`, `edge.CCPA+GDPR`, …): the healthy edge nodes whose
  residency includes R, weighted by effective weight, balanced by
  `override_host` on `x-route-target` with ring hash on `x-affinity-key`
  (bounded by `hash_balance_factor`) when no target is set. Edge nodes only:
  fail-open traffic never reaches a cloud pool, whose spend needs the budget check.
- one cluster per cloud pool (`cloud.<id>`), reachable only through the
  router's `x-route-cluster` answer (clients' `x-route-*` headers are stripped).
- a route table: the router's answer first (`cluster_header: x-route-cluster`);
  then, for requests the router did not answer (down, slow, crashed), one route
  per R matching `x-affinity-residency` exactly (every tag of R present, no other
  known tag, no unknown tag) to `edge.R` plus the residency floor
  (`defaults.residency` and the tenant's, by `x-affinity-tenant`:
  `router.core.tenancy`), a 503 when no edge node meets both; no header → the
  floor alone; residency Envoy cannot establish (unknown tags, or only inside the
  `x-affinity-tags` JSON) → 503.

Cluster names come from `router.wire` so the router's answers and these
resources agree by construction.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.load_balancing_policies.override_host.v3 import (  # noqa: F401 (registers)
    override_host_pb2,
)
from envoy.extensions.load_balancing_policies.ring_hash.v3 import (  # noqa: F401 (registers)
    ring_hash_pb2,
)
from google.protobuf import json_format

from router import wire
from router.core import tenancy
from router.core.policy import Policy
from router.core.table import Snapshot

T = "type.googleapis.com/"
CLUSTER_TYPE = T + "envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = T + "envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE_TYPE = T + "envoy.config.route.v3.RouteConfiguration"
ROUTE_CONFIG = "inference"
WEIGHT_SCALE = 100  # effective weights are floats; Envoy's endpoint weights are integers >= 1
ECHO = (wire.H_MODE, wire.H_NODE, wire.H_QUALITY, wire.H_REASON, wire.H_POLICY)
FAIL_OPEN_DETAIL = ("the router did not answer and Envoy cannot establish this request's "
                    "residency from x-affinity-residency alone: no edge node is known to "
                    "satisfy it, and cloud pools need the router's budget check")


# The router admits by node slots and pool `max_inflight`; Envoy's default breaker (1,024
# requests per cluster) would answer 503 past it on a large fleet whatever the router said.
# Retries stay at Envoy's default: the route sets no retry policy.
INFERENCE_LIMITS = {"thresholds": [{"max_connections": 1_000_000,
                                    "max_pending_requests": 1_000_000,
                                    "max_requests": 1_000_000}]}


@dataclass(frozen=True, slots=True)
class Options:
    """Envoy-side settings that are not in the policy."""

    upstream_timeout_s: float = 30.0
    connect_timeout_s: float = 0.5
    balance_factor_pct: int | None = None  # ring hash_balance_factor; default from the policy
    xds: bool = True  # EDS over ADS; False: STATIC clusters with inline endpoints
    echo: bool = True  # echo the decision (ECHO) in every routed response; False: Envoy skips it


@dataclass(frozen=True, slots=True)
class Resources:
    """Envoy resources by type URL, each {name: message}, with a content version per type."""

    by_type: dict[str, dict[str, Any]]
    versions: dict[str, str]


def requirements(policy: Policy) -> list[frozenset[str]]:
    """Residency requirements Envoy routes on by itself: every subset of an edge node's tags."""
    seen: set[frozenset[str]] = {frozenset()}
    for node in policy.nodes:
        tags = sorted(node.residency)
        for k in range(1, len(tags) + 1):
            seen.update(frozenset(c) for c in itertools.combinations(tags, k))
    return sorted(seen, key=lambda r: (len(r), sorted(r)))


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _address(hostport: str) -> dict[str, Any]:
    host, _, port = hostport.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def _lb_policy(factor: int) -> dict[str, Any]:
    ring = {"@type": T + "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash",
            "hash_balance_factor": factor}
    return {"policies": [{"typed_extension_config": {
        "name": "envoy.load_balancing_policies.override_host",
        "typed_config": {
            "@type": T + "envoy.extensions.load_balancing_policies.override_host.v3."
                         "OverrideHost",
            "override_host_sources": [{"header": wire.H_TARGET}],
            "fallback_policy": {"policies": [{"typed_extension_config": {
                "name": "envoy.load_balancing_policies.ring_hash", "typed_config": ring}}]},
        }}}]}


_ENDPOINTS: dict[tuple[str, int], endpoint_components_pb2.LbEndpoint] = {}
_MAX_CACHED = 100_000


def _lb_endpoint(hostport: str, weight: int) -> endpoint_components_pb2.LbEndpoint:
    """One weighted endpoint, built once per (address, weight) and reused: a refresh mostly
    repeats last refresh's endpoints, and building protobuf messages dominates a rebuild."""
    found = _ENDPOINTS.get((hostport, weight))
    if found is None:
        if len(_ENDPOINTS) >= _MAX_CACHED:
            _ENDPOINTS.clear()
        host, _, port = hostport.rpartition(":")
        found = _ENDPOINTS[(hostport, weight)] = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=host.strip("[]"),
                                                         port_value=int(port)))),
            load_balancing_weight={"value": weight})
    return found


def _assignment(name: str, members: Iterable[tuple[str, float]]
                ) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints of one cluster, weighted (on every refresh: from cached endpoint messages)."""
    lb = [_lb_endpoint(hostport, max(1, round(weight * WEIGHT_SCALE)))
          for hostport, weight in members]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(
            lb_endpoints=lb)] if lb else [])


def _edge_cluster(name: str, factor: int, opts: Options,
                  assignment: endpoint_pb2.ClusterLoadAssignment) -> cluster_pb2.Cluster:
    doc: dict[str, Any] = {"name": name, "alt_stat_name": wire.cluster_stat_name(name),
                           "connect_timeout": _duration(opts.connect_timeout_s),
                           "circuit_breakers": INFERENCE_LIMITS,
                           "load_balancing_policy": _lb_policy(factor)}
    if opts.xds:
        doc |= {"type": "EDS", "eds_cluster_config": {
            "eds_config": {"ads": {}, "resource_api_version": "V3"}}}
    else:
        doc |= {"type": "STATIC",
                "load_assignment": _plain(assignment)}
    return json_format.ParseDict(doc, cluster_pb2.Cluster())


def _pool_cluster(name: str, address: str, opts: Options) -> cluster_pb2.Cluster:
    return json_format.ParseDict({
        "name": name, "alt_stat_name": wire.cluster_stat_name(name), "type": "STATIC",
        "connect_timeout": _duration(opts.connect_timeout_s),
        "circuit_breakers": INFERENCE_LIMITS,
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _address(address)}}]}]},
    }, cluster_pb2.Cluster())


def _tag_present(tag: str, *, invert: bool = False) -> dict[str, Any]:
    """`tag` is one entry of the comma list (Envoy joins repeated headers with commas)."""
    regex = rf"(.*,)?\s*{re.escape(tag)}\s*(,.*)?"
    return {"name": wire.H_RESIDENCY, "string_match": {"safe_regex": {"regex": regex}},
            "invert_match": invert}


def _only_known(tags: list[str]) -> dict[str, Any]:
    one = "(" + "|".join(re.escape(t) for t in tags) + ")"
    return {"name": wire.H_RESIDENCY,
            "string_match": {"safe_regex": {"regex": rf"\s*{one}\s*(,\s*{one}\s*)*"}}}


def _route_action(cluster: str | None, opts: Options) -> dict[str, Any]:
    action: dict[str, Any] = {"timeout": _duration(opts.upstream_timeout_s),
                              "hash_policy": [{"header": {"header_name": wire.H_KEY}}]}
    return action | ({"cluster": cluster} if cluster else {"cluster_header": wire.H_CLUSTER})


def _fail_open(prefix: str, headers: list[dict[str, Any]], cluster: str, opts: Options
               ) -> dict[str, Any]:
    return {"name": f"fail-open:{cluster}", "match": {"prefix": prefix, "headers": headers},
            "route": _route_action(cluster, opts),
            "response_headers_to_add": [{"header": {"key": wire.H_REASON,
                                                    "value": wire.R_FAIL_OPEN},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}


def _refuse(name: str, headers: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps({"error": wire.E_UNSERVABLE, "detail": FAIL_OPEN_DETAIL},
                      separators=(",", ":"))
    return {"name": name, "match": {"prefix": "/", "headers": headers},
            "direct_response": {"status": wire.STATUS_UNSERVABLE,
                                "body": {"inline_string": body}},
            "response_headers_to_add": [
                {"header": {"key": wire.H_REASON, "value": wire.R_FAIL_OPEN},
                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                {"header": {"key": "content-type", "value": "application/json"},
                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}


def _residency_routes(served: set[frozenset[str]], floor: frozenset[str], opts: Options,
                      who: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fail-open routes by `x-affinity-residency`, each to the edge cluster of the header's
    tags plus `floor` (the tenant's and the policy's), or a 503 when no edge node meets both."""
    absent = {"name": wire.H_RESIDENCY, "present_match": False}
    routes = [_fail_open("/", [*who, absent], wire.edge_cluster(floor), opts) if floor in served
              else _refuse("fail-open:default-residency-unserved", [*who, absent])]
    known = sorted(set().union(*served))
    for req in sorted(served - {frozenset()}, key=lambda r: (-len(r), sorted(r))):
        headers = [*who, _only_known(known)]
        headers += [_tag_present(t) for t in sorted(req)]
        headers += [_tag_present(t, invert=True) for t in known if t not in req]
        want = req | floor
        routes.append(_fail_open("/", headers, wire.edge_cluster(want), opts) if want in served
                      else _refuse("fail-open:floor-unserved", headers))
    return routes


def route_table(policy: Policy, served: set[frozenset[str]], opts: Options
                ) -> route_pb2.RouteConfiguration:
    """The inference route table (see the module docstring for the order)."""
    echo = [{"header": {"key": h, "value": f"%REQ({h})%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD", "keep_empty_value": False}
            for h in ECHO] if opts.echo else []
    absent = {"name": wire.H_RESIDENCY, "present_match": False}
    routes: list[dict[str, Any]] = [
        {"name": "router-answer",
         "match": {"prefix": "/", "headers": [{"name": wire.H_CLUSTER, "present_match": True}]},
         "route": _route_action(None, opts)} | ({"response_headers_to_add": echo} if echo
                                                 else {}),
        _refuse("fail-open:residency-in-json", [absent, {
            "name": wire.H_TAGS, "string_match": {"contains": '"data_residency"'}}]),
    ]
    anyone, by_tenant = tenancy.fail_open_floors(policy)
    for tenant, floor in by_tenant.items():
        who = {"name": wire.H_TENANT, "string_match": {"exact": tenant}}
        routes += _residency_routes(served, floor, opts, [who])
    routes += _residency_routes(served, anyone, opts, [])
    routes.append(_refuse("fail-open:residency-unserved", []))
    return json_format.ParseDict({"name": ROUTE_CONFIG, "virtual_hosts": [
        {"name": "inference", "domains": ["*"], "routes": routes}]}, route_pb2.RouteConfiguration())


@dataclass(frozen=True, slots=True)
class _PolicyParts:
    """What depends on the policy alone (with xDS): rebuilt on a reload, not every refresh."""

    served: tuple[frozenset[str], ...]  # residency requirements, in cluster order
    clusters: dict[str, Any]
    route: Any
    version: tuple[str, str]  # of the clusters and of the route table


_PARTS: dict[tuple[int, Options], tuple[Policy, _PolicyParts]] = {}


def _policy_parts(policy: Policy, opts: Options) -> _PolicyParts:
    """Clusters and the route table of `policy` (EDS clusters: no endpoints in them)."""
    key = (id(policy), opts)
    found = _PARTS.get(key)
    if found is not None and found[0] is policy:
        return found[1]
    factor = opts.balance_factor_pct or max(100, round(100 * (1 + policy.balance_factor)))
    served = tuple(sorted(requirements(policy), key=lambda r: sorted(r)))
    empty = endpoint_pb2.ClusterLoadAssignment()
    clusters: dict[str, Any] = {wire.edge_cluster(req): _edge_cluster(
        wire.edge_cluster(req), factor, opts, empty) for req in served}
    for pool in policy.pools:
        name = wire.pool_cluster(pool.id)
        clusters[name] = _pool_cluster(name, pool.address, opts)
    route = route_table(policy, set(served), opts)
    parts = _PolicyParts(served, clusters, route,
                         (_version(clusters), _version({ROUTE_CONFIG: route})))
    if len(_PARTS) >= 8:
        _PARTS.clear()
    _PARTS[key] = (policy, parts)  # holding the policy keeps its id from being reused
    return parts


def build(snap: Snapshot, opts: Options = Options()) -> Resources:
    """Every inference resource for `snap`: healthy edge nodes at their effective weights."""
    policy = snap.policy
    live = [(n.spec.residency, n.address, n.weight) for n in snap.nodes
            if n.healthy and n.weight > 0]
    if not opts.xds:  # static: endpoints are written into the clusters; built whole, once
        factor = opts.balance_factor_pct or max(100, round(100 * (1 + policy.balance_factor)))
        served = sorted(requirements(policy), key=lambda r: sorted(r))
        clusters = {wire.edge_cluster(req): _edge_cluster(
            wire.edge_cluster(req), factor, opts,
            _assignment(wire.edge_cluster(req), ((a, w) for t, a, w in live if req <= t)))
            for req in served}
        for pool in policy.pools:
            clusters[wire.pool_cluster(pool.id)] = _pool_cluster(
                wire.pool_cluster(pool.id), pool.address, opts)
        by_type = {CLUSTER_TYPE: clusters, ENDPOINT_TYPE: {},
                   ROUTE_TYPE: {ROUTE_CONFIG: route_table(policy, set(served), opts)}}
        return Resources(by_type, {t: _version(r) for t, r in by_type.items()})
    parts = _policy_parts(policy, opts)
    endpoints = {wire.edge_cluster(req): _assignment(
        wire.edge_cluster(req), ((a, w) for tags, a, w in live if req <= tags))
        for req in parts.served}
    by_type = {CLUSTER_TYPE: parts.clusters, ENDPOINT_TYPE: endpoints,
               ROUTE_TYPE: {ROUTE_CONFIG: parts.route}}
    return Resources(by_type, {CLUSTER_TYPE: parts.version[0],
                               ENDPOINT_TYPE: _version(endpoints),
                               ROUTE_TYPE: parts.version[1]})


def _version(resources: dict[str, Any]) -> str:
    """A content hash: the same resources give the same version in every router process."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(resources):
        h.update(name.encode())
        h.update(resources[name].SerializeToString(deterministic=True))
    return h.hexdigest()


def as_dicts(resources: Resources) -> dict[str, list[dict[str, Any]]]:
    """Resources as proto3-JSON dicts by type URL (for a static bootstrap)."""
    return {t: [_plain(m) for _, m in sorted(r.items())] for t, r in resources.by_type.items()}


def _plain(message: Any) -> Any:
    """A message as plain dicts and lists (MessageToDict nests OrderedDicts for Any fields)."""
    return json.loads(json_format.MessageToJson(message, preserving_proto_field_name=True))
