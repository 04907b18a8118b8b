"""Through real Envoy with `envoy-config --jwt-*`: the tenant is the signed token's, never a header.

Tokens are really signed (RS256, PyJWT with `cryptography`) and verified by Envoy's
`jwt_authn` against a JWKS the test serves over HTTP (the remote-JWKS path, with its
own cluster) or reads from a file (the fail-open stack). Cloud requests cost $0.01
here (`stack.POLICY`), so a tenant's spend says who was charged.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from .stack import POLICY, Stack

pytestmark = pytest.mark.integration

ISSUER = "https://issuer.test"
AUDIENCE = "hybrid-router"
TENANTS = ("tenants: {{default: {{limit_usd: 1000}}, tight: {{limit_usd: 0.03}}, "
           "victim: {{limit_usd: 1}}, attacker: {{limit_usd: 1}}, "
           "eu: {{limit_usd: 1, residency: [GDPR]}}}}")
ID_POLICY = POLICY.replace(
    "tenants: {{default: {{limit_usd: 1000}}, tight: {{limit_usd: 0.03}}}}", TENANTS)
HIPAA = {"x-affinity-residency": "HIPAA"}  # only the cloud-hipaa pool: every request costs


class Issuer:
    """An RSA signing key, its JWKS, and tokens signed with it (or with another key)."""

    def __init__(self) -> None:
        """A fresh 2048-bit key with key id k1."""
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})

    def token(self, tenant: str | None, *, issuer: str = ISSUER, audience: str = AUDIENCE,
              expires_in: float = 600.0, key: Any = None) -> str:
        """A signed token naming `tenant` (None: no tenant claim)."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": issuer, "aud": audience, "sub": "client-1",
                                  "iat": now, "exp": int(now + expires_in)}
        if tenant is not None:
            claims["tenant"] = tenant
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": "k1"})


@contextlib.contextmanager
def serve_jwks(text: str) -> Iterator[str]:
    """Serve `text` at http://127.0.0.1:PORT/jwks until the block ends."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def jwt_args(jwks: str) -> tuple[str, ...]:
    """The envoy-config flags under test."""
    return ("--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE, "--jwt-jwks", jwks)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    """One signing key for the module."""
    return Issuer()


@pytest.fixture(scope="module")
def stack(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with auth on, its JWKS fetched by Envoy from a URI."""
    with serve_jwks(issuer.jwks) as uri:
        s = Stack(Path(tmp_path_factory.mktemp("identity")), policy=ID_POLICY,
                  message_timeout_s=2.0, envoy_args=jwt_args(uri))
        try:
            yield s.start()
        finally:
            s.close()


def get(stack: Stack, headers: dict[str, str], token: str | None = None
        ) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request: (status, lower-case headers, JSON body)."""
    sent = dict(headers)
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(stack.url + "/infer", headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, head, body = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, head, body = e.code, dict(e.headers), e.read()
    return status, {k.lower(): v for k, v in head.items()}, json.loads(body or b"{}")


def spend(stack: Stack, tenant: str) -> float:
    """The router's spend gauge for `tenant`."""
    return stack.metrics().get(f'router_budget_spend_usd{{tenant="{tenant}"}}', 0.0)


def hits(stack: Stack) -> int:
    """Requests that reached any upstream."""
    return sum(int(stack.stats(t)["hits"]) for t in stack.address)


def tampered(token: str) -> str:
    """The token with its payload's tenant changed and the original signature kept."""
    head, payload, sig = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["tenant"] = "default"
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{head}.{forged}.{sig}"


@pytest.mark.parametrize(("case", "expected"), [
    ("missing", 401), ("wrong-issuer", 401), ("expired", 401), ("tampered", 401),
    ("another-key", 401), ("not-a-jwt", 401),
    ("wrong-audience", 403),  # Envoy's answer to a genuine token meant for someone else
])
def test_a_request_without_a_valid_token_gets_a_json_401_and_reaches_nothing(
        stack: Stack, issuer: Issuer, case: str, expected: int) -> None:
    token = {"missing": None, "wrong-issuer": issuer.token("victim", issuer="https://evil.test"),
             "wrong-audience": issuer.token("victim", audience="someone-else"),
             "expired": issuer.token("victim", expires_in=-120),
             "tampered": tampered(issuer.token("attacker")),
             "another-key": issuer.token("victim", key=Issuer().key),
             "not-a-jwt": "hello"}[case]
    before = hits(stack)
    status, headers, body = get(stack, {**HIPAA, "x-affinity-tenant": "victim"}, token)
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert body["error"] == f"envoy_{expected}" and body["detail"].startswith("jwt_authn")
    assert hits(stack) == before


def test_a_valid_token_without_a_tenant_claim_is_refused(stack: Stack, issuer: Issuer) -> None:
    status, _, body = get(stack, {"x-affinity-tenant": "default"}, issuer.token(None))
    assert status == 403 and body["error"] == "envoy_403"


def test_another_tenants_header_is_charged_to_the_tokens_tenant(stack: Stack,
                                                                issuer: Issuer) -> None:
    token = issuer.token("attacker")
    victim, attacker = spend(stack, "victim"), spend(stack, "attacker")
    forms = [{"x-affinity-tenant": "victim"},
             {"x-affinity-tags": json.dumps({"tenant": "victim", "data_residency": ["HIPAA"]})},
             {"X-Affinity-Tenant": "victim"}]
    for form in forms:
        status, headers, _ = get(stack, {**HIPAA, **form} if "x-affinity-tags" not in form
                                 else form, token)
        assert status == 200 and headers["x-route-mode"] == "cloud"
    assert spend(stack, "victim") == victim
    assert spend(stack, "attacker") == pytest.approx(attacker + 0.03, abs=1e-3)


def test_an_exhausted_tenant_cannot_escape_by_dropping_or_changing_the_header(
        stack: Stack, issuer: Issuer) -> None:
    token = issuer.token("tight")
    statuses = [get(stack, HIPAA, token)[0] for _ in range(6)]
    assert 200 in statuses and statuses[-1] == 429  # $0.03 at $0.01 a request
    default = spend(stack, "default")
    for form in ({}, {"x-affinity-tenant": "default"}, {"x-affinity-tenant": "made-up"},
                 {"x-affinity-tags": '{"tenant": "default"}'}):
        status, _, body = get(stack, {**HIPAA, **form}, token)
        assert (status, body["error"]) == (429, "budget_exhausted"), form
        assert "tight" in body["detail"]
    assert spend(stack, "default") == default


def test_a_tenants_residency_floor_cannot_be_lowered(stack: Stack, issuer: Issuer) -> None:
    token = issuer.token("eu")
    for form in ({}, {"x-affinity-tags": '{"data_residency": []}'},
                 {"x-affinity-residency": "GDPR"}):
        for i in range(8):
            status, headers, _ = get(stack, {"x-affinity-key": f"k{i}", **form}, token)
            assert status == 200 and headers["x-route-node"] in ("eu-a", "eu-b", "cloud-eu")
    # declaring CCPA needs GDPR and CCPA: no node or pool has both
    status, headers, _ = get(stack, {"x-affinity-residency": "CCPA"}, token)
    assert (status, headers["x-route-reason"]) == (503, "residency")


def test_with_the_router_down_envoy_keeps_the_tenants_floor(issuer: Issuer,
                                                            tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(issuer.jwks)
    s = Stack(tmp_path, policy=ID_POLICY, envoy_args=jwt_args(str(jwks)))
    try:
        s.start()
        s.stop_router(signal.SIGKILL)
        token = issuer.token("eu")
        for i in range(8):
            status, headers, body = get(s, {"x-affinity-key": f"k{i}"}, token)
            assert status == 200 and headers["x-route-reason"] == "fail-open"
            assert body["served_by"] in ("eu-a", "eu-b")
        status, headers, _ = get(s, {"x-affinity-residency": "CCPA"}, token)
        assert (status, headers["x-route-reason"]) == (503, "fail-open")
        assert get(s, {"x-affinity-residency": "CCPA"}, issuer.token("victim"))[0] == 200
        assert get(s, {"x-affinity-residency": "CCPA"})[0] == 401  # auth holds router or not
    finally:
        s.close()
