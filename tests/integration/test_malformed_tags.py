"""Through real Envoy: every malformed tag from issues 9 and 10 is a 4xx, and no upstream sees it.

Requests are written as raw HTTP/1.1 bytes so a test controls every byte and every repeated
line. Measured here (Envoy 1.40): a repeated header reaches ext_proc as separate entries,
surrounding whitespace is trimmed, raw DEL/NUL/C0 bytes are refused by Envoy itself (400),
while tabs, C1 bytes and invalid UTF-8 are passed on for the router to refuse.
"""

from __future__ import annotations

import json
import socket

import pytest

from .stack import Stack

pytestmark = pytest.mark.integration

DEEP = b"[" * 1500 + b"]" * 1500
# (header lines, the tag the 400 must name), each refused by the router with a JSON body.
ROUTER_REFUSES = [
    ([b"x-affinity-slo-ms: \xc2\xb2"], "x-affinity-slo-ms", "slo-superscript-two"),
    (["x-affinity-slo-ms: ١٢٣".encode()], "x-affinity-slo-ms", "slo-arabic-indic"),
    ([b"x-affinity-slo-ms: 1e400"], "x-affinity-slo-ms", "slo-exponent"),
    ([b"x-affinity-slo-ms: " + b"9" * 5000], "x-affinity-slo-ms", "slo-5000-digits"),
    ([b"x-affinity-max-cost: 1e400"], "x-affinity-max-cost", "cost-exponent"),
    ([b'x-affinity-tags: {"max_cost_per_inference": 1' + b"0" * 400 + b"}"],
     "x-affinity-max-cost", "json-cost-400-zeros"),
    ([b'x-affinity-tags: {"key": "\\ud800"}'], "x-affinity-key", "json-lone-surrogate"),
    ([b'x-affinity-tags: {"key": ' + DEEP + b"}"], "x-affinity-tags", "json-1500-deep"),
    ([b"x-affinity-key: a\xc2\x85b"], "x-affinity-key", "key-c1-utf8"),
    ([b"x-affinity-key: a\x85b"], "x-affinity-key", "key-c1-raw-byte"),
    ([b"x-affinity-tenant: ac\tme"], "x-affinity-tenant", "tenant-inner-tab"),
    ([b"x-affinity-tenant: \xff\xfe"], "x-affinity-tenant", "tenant-invalid-utf8"),
    ([b"x-affinity-residency: GDPR", b"x-affinity-residency: CCPA"], "x-affinity-residency",
     "residency-repeated"),
    ([b"X-Affinity-Residency: GDPR", b"x-affinity-residency: GDPR"], "x-affinity-residency",
     "residency-repeated-same-value-other-case"),
]
# Refused by Envoy itself before ext_proc; the generated local_reply_config makes those
# replies JSON too.
ENVOY_REFUSES = [
    ([b"x-affinity-tenant: acme\x7f"], "tenant-del"),
    ([b"x-affinity-key: a\x00b"], "key-nul"),
    ([b"x-affinity-key: a\x1bb"], "key-escape-c0"),
]


def raw_request(stack: Stack, lines: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send one GET with exactly these header lines; (status, headers, body)."""
    head = b"GET /infer HTTP/1.1\r\nhost: router.test\r\nconnection: close\r\n"
    data = b""
    with socket.create_connection(("127.0.0.1", stack.listen), timeout=10) as sock:
        sock.sendall(head + b"".join(line + b"\r\n" for line in lines) + b"\r\n")
        while chunk := sock.recv(65536):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def upstream_hits(stack: Stack) -> dict[str, int]:
    return {name: int(stack.stats(name)["hits"]) for name in stack.address}


@pytest.mark.parametrize(("lines", "tag"),
                         [pytest.param(ls, t, id=i) for ls, t, i in ROUTER_REFUSES])
def test_malformed_tag_is_a_400_json_naming_it_and_reaches_no_upstream(
        stack: Stack, lines: list[bytes], tag: str) -> None:
    before = upstream_hits(stack)
    status, headers, body = raw_request(stack, lines)
    assert status == 400, body
    assert headers["x-route-reason"] == "bad-tag"
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["error"] == "bad_affinity_tag" and doc["detail"].startswith(f"{tag}: "), doc
    assert upstream_hits(stack) == before


@pytest.mark.parametrize("lines", [pytest.param(ls, id=i) for ls, i in ENVOY_REFUSES])
def test_bytes_envoy_refuses_itself_are_a_400_json_and_reach_no_upstream(
        stack: Stack, lines: list[bytes]) -> None:
    before = upstream_hits(stack)
    status, headers, body = raw_request(stack, lines)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "envoy_400", "detail": "http1.invalid_characters"}
    assert upstream_hits(stack) == before


def test_the_same_tags_well_formed_are_routed(stack: Stack) -> None:
    # The control: the raw client and these tags do reach an upstream when they are right.
    before = sum(upstream_hits(stack).values())
    status, headers, _ = raw_request(stack, [
        b"x-affinity-residency: GDPR", b"x-affinity-slo-ms:  75 ", b"x-affinity-key: a b",
        b'x-affinity-tags: {"max_cost_per_inference": 1e-3, "tenant": "acme"}'])
    assert status == 200 and headers["x-route-mode"] in ("edge", "edge-degraded")
    assert sum(upstream_hits(stack).values()) == before + 1
