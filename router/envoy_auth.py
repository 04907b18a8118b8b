"""The tenant from an authenticated identity: Envoy's `jwt_authn` for `envoy-config --jwt-*`.

`x-affinity-tenant` says whose budget a request spends and whose rules bind it,
so it must not be whatever the client sends. With `--jwt-issuer ISS
--jwt-audience AUD --jwt-jwks FILE|URI` the generated Envoy config:

1. removes any client-sent `x-affinity-tenant` before routing (the early header
   mutation that already strips `x-route-*`), so no filter, route or router ever
   sees the client's claim;
2. verifies the bearer token (`Authorization: Bearer …`): signature against the
   JWKS (a local file, or a remote URI fetched through its own cluster before the
   listener opens and cached), issuer, audience, expiry (required); a missing or
   failing token gets a 401 before the body is buffered or the router is asked,
   as JSON through the config's local reply mapping;
3. copies the token's tenant claim (`--tenant-claim`, default `tenant`) into
   `x-affinity-tenant` (`claim_to_headers`), the convention of Envoy Gateway and
   Envoy AI Gateway;
4. refuses (403, RBAC) a verified token without that claim, so a token that names
   no tenant is not charged to `defaults.tenant` either.

The token itself is not forwarded upstream (`forward: false`): edge nodes and
cloud pools never see a client credential. A tenant in the `x-affinity-tags`
JSON is overridden by the header (a single header wins over the JSON form).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from router import wire

T = "type.googleapis.com/"
PROVIDER = "tenant_identity"
JWKS_CLUSTER = "jwks"


@dataclass(frozen=True, slots=True)
class JwtAuth:
    """Who may issue tokens, for whom, which keys sign them, which claim names the tenant."""

    issuer: str
    audience: str
    jwks: str  # a file path, or an http(s):// URI
    tenant_claim: str = "tenant"

    @property
    def remote(self) -> bool:
        """Whether the JWKS is fetched from a URI rather than read from a file."""
        return self.jwks.startswith(("http://", "https://"))


def check(auth: JwtAuth) -> str | None:
    """Why `auth` cannot be generated (a clear message), or None when it can."""
    if auth.remote:
        url = urlsplit(auth.jwks)
        try:
            url.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            return f"--jwt-jwks {auth.jwks!r}: the port is not a number from 1 to 65535"
        return None if url.hostname else f"--jwt-jwks {auth.jwks!r}: no host in the URI"
    path = Path(auth.jwks)
    try:
        keys = json.loads(path.read_text(encoding="utf-8")).get("keys")
    except (OSError, ValueError, AttributeError) as exc:
        return f"--jwt-jwks {auth.jwks}: not a readable JWKS JSON file ({exc})"
    if not isinstance(keys, list) or not keys:
        return f"--jwt-jwks {auth.jwks}: a JWKS needs a non-empty \"keys\" list"
    return None


def _provider(auth: JwtAuth) -> dict[str, Any]:
    provider: dict[str, Any] = {
        "issuer": auth.issuer, "audiences": [auth.audience], "require_expiration": True,
        "forward": False,
        "claim_to_headers": [{"header_name": wire.H_TENANT, "claim_name": auth.tenant_claim}],
        # the route was chosen before the claim became a header: choose again, so Envoy's
        # fail-open routes see the tenant (its residency floor) too
        "clear_route_cache": True}
    if auth.remote:
        provider["remote_jwks"] = {
            "http_uri": {"uri": auth.jwks, "cluster": JWKS_CLUSTER, "timeout": "5s"},
            "cache_duration": "300s",
            # fetched before the listener opens, so the first requests are not refused
            "async_fetch": {"fast_listener": False},
            "retry_policy": {"num_retries": 3}}
    else:
        provider["local_jwks"] = {"filename": str(Path(auth.jwks).resolve())}
    return provider


def filters(auth: JwtAuth) -> list[dict[str, Any]]:
    """The HTTP filters that go first: verify the token, then require its tenant."""
    rbac = {"rules": {"action": "ALLOW", "policies": {"token-names-a-tenant": {
        "permissions": [{"any": True}],
        "principals": [{"header": {"name": wire.H_TENANT, "present_match": True}}]}}}}
    return [
        {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {PROVIDER: _provider(auth)},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": PROVIDER}}]}},
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": T + "envoy.extensions.filters.http.rbac.v3.RBAC", **rbac}},
    ]


def jwks_cluster(uri: str) -> dict[str, Any]:
    """The cluster Envoy fetches a remote JWKS through (TLS for https, system CAs)."""
    url = urlsplit(uri)
    tls = url.scheme == "https"
    host = url.hostname or ""
    port = url.port or (443 if tls else 80)
    cluster: dict[str, Any] = {
        "name": JWKS_CLUSTER, "type": "STRICT_DNS", "connect_timeout": "2s",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": {"cluster_name": JWKS_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host,
                                                         "port_value": port}}}}]}]}}
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": host,
            "common_tls_context": {"validation_context": {"system_root_certs": {}}}}}
    return cluster


def apply(hcm: dict[str, Any], clusters: list[dict[str, Any]], auth: JwtAuth) -> None:
    """Add authentication to a connection manager (and its JWKS cluster to `clusters`)."""
    for ext in hcm["early_header_mutation_extensions"]:
        ext["typed_config"]["mutations"].append({"remove": wire.H_TENANT})
    hcm["http_filters"][:0] = filters(auth)
    if auth.remote:
        clusters.append(jwks_cluster(auth.jwks))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the --jwt-* flags."""
    parser.add_argument("--jwt-issuer", metavar="ISS",
                        help="require a bearer JWT from this issuer and take the tenant from it "
                             "(with --jwt-audience and --jwt-jwks)")
    parser.add_argument("--jwt-audience", metavar="AUD", help="the audience tokens must name")
    parser.add_argument("--jwt-jwks", metavar="FILE|URI",
                        help="the issuer's signing keys: a JWKS file, or an http(s):// URI")
    parser.add_argument("--tenant-claim", default="tenant", metavar="CLAIM",
                        help="the token claim that names the tenant (default tenant)")


def from_args(args: argparse.Namespace) -> JwtAuth | str | None:
    """The flags as a `JwtAuth`, None without them, or what is wrong with them."""
    given = {"--jwt-issuer": args.jwt_issuer, "--jwt-audience": args.jwt_audience,
             "--jwt-jwks": args.jwt_jwks}
    if not any(given.values()):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        present = ", ".join(flag for flag in given if flag not in missing)
        return f"{', '.join(missing)}: needed with {present}"
    auth = JwtAuth(args.jwt_issuer, args.jwt_audience, args.jwt_jwks, args.tenant_claim)
    problem = check(auth)
    return auth if problem is None else problem
