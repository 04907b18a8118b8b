"""Fail-safe through real Envoy with the generated xDS bootstrap: where every request went.

The router is Envoy's control plane for the inference clusters. When it is
down, slow or crashing, Envoy still routes — only to edge nodes that satisfy
the request's residency, never to a cloud pool — and refuses (503, JSON) what
it cannot place by itself. Reloads that add or remove nodes reach Envoy for
routed and fail-open traffic alike. Envoy's own refusals are JSON too.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .stack import NODES, POLICY, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GDPR_EDGE = {n for n, (tag, _, _) in NODES.items() if tag == "GDPR"}
CCPA_EDGE = {n for n, (tag, _, _) in NODES.items() if tag == "CCPA"}
POOLS = ("cloud-eu", "cloud-hipaa")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s.start()
    finally:
        s.close()


async def _send(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                data: Any = None) -> tuple[int, dict[str, str], bytes]:
    async with session.request("POST" if data is not None else "GET", url + "/infer",
                               headers=headers, data=data) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


def send_all(stack: Stack, headers: list[dict[str, str]], limit: int = 16
             ) -> list[tuple[int, dict[str, str], bytes]]:
    async def go() -> list[tuple[int, dict[str, str], bytes]]:
        conn = aiohttp.TCPConnector(limit=limit)
        async with aiohttp.ClientSession(connector=conn,
                                         timeout=aiohttp.ClientTimeout(total=30)) as s:
            return list(await asyncio.gather(*(_send(s, stack.url, h) for h in headers)))
    return asyncio.run(go())


def pool_hits(stack: Stack) -> dict[str, int]:
    return {p: int(stack.stats(p)["hits"]) for p in POOLS}


def wait_for(check: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


async def _load(stack: Stack, stop: asyncio.Event, out: list[tuple[float, int, dict[str, str]]],
                residency: str) -> None:
    """Closed-loop traffic from 8 clients until `stop`; records (time, status, headers)."""
    async def client(i: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            headers = {"x-affinity-key": f"c{i}-{n % 50}", "x-affinity-residency": residency,
                       "x-affinity-tenant": "tight"}
            try:
                status, h, _ = await _send(session, stack.url, headers)
            except aiohttp.ClientError:
                status, h = -1, {}
            out.append((time.monotonic(), status, h))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(client(i, session) for i in range(8)))


def test_kill_9_under_load_keeps_gdpr_on_gdpr_edge_and_resumes(stack: Stack) -> None:
    before = pool_hits(stack)
    results: list[tuple[float, int, dict[str, str]]] = []
    marks: dict[str, float] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(_load(stack, stop, results, "GDPR"))
        await asyncio.sleep(1.0)
        marks["kill"] = time.monotonic()
        await asyncio.to_thread(stack.stop_router, signal.SIGKILL)
        await asyncio.sleep(2.0)
        marks["restart"] = time.monotonic()
        await asyncio.to_thread(stack.start_router)  # returns once it listens
        marks["up"] = time.monotonic()
        await asyncio.sleep(1.5)
        stop.set()
        await load

    asyncio.run(scenario())
    during = [(s, h) for t, s, h in results if marks["kill"] + 0.1 < t < marks["restart"]]
    after = [(s, h) for t, s, h in results if t > marks["up"] + 0.2]
    assert len(during) > 50 and len(after) > 20, (len(during), len(after))
    assert all(s == 200 for s, _ in after), Counter((s, h.get("x-route-reason")) for s, h in after)
    assert all(s == 200 for s, _ in during), Counter((s, h.get("x-route-reason"))
                                                     for s, h in during)
    assert {h["x-served-by"] for _, h in during} <= GDPR_EDGE
    assert {h.get("x-route-reason") for _, h in during} == {"fail-open"}
    assert all(s == 200 for s, _ in after)
    assert all(h.get("x-route-mode") in ("edge", "edge-degraded") for _, h in after), \
        Counter((h.get("x-route-mode"), h.get("x-route-reason")) for _, h in after)
    assert {h["x-served-by"] for _, h in after} <= GDPR_EDGE
    assert {h["x-served-by"] for t, s, h in results if s == 200} <= GDPR_EDGE
    assert pool_hits(stack) == before  # no request reached a cloud pool, router up or down


def test_fail_open_refuses_what_envoy_cannot_place(stack: Stack) -> None:
    stack.stop_router(signal.SIGKILL)
    try:
        before = pool_hits(stack)
        cases = {
            "ccpa": {"x-affinity-key": "k", "x-affinity-residency": "CCPA"},
            "hipaa": {"x-affinity-key": "k", "x-affinity-residency": "HIPAA"},
            "gdpr+ccpa": {"x-affinity-key": "k", "x-affinity-residency": "GDPR,CCPA"},
            "unknown": {"x-affinity-key": "k", "x-affinity-residency": "GDPR,MARS"},
            "json-only": {"x-affinity-key": "k",
                          "x-affinity-tags": json.dumps({"data_residency": ["GDPR"]})},
        }
        out = {name: send_all(stack, [h] * 6) for name, h in cases.items()}
        assert all(s == 200 for s, _, _ in out["ccpa"])
        assert {h["x-served-by"] for _, h, _ in out["ccpa"]} <= CCPA_EDGE
        for name in ("hipaa", "gdpr+ccpa", "unknown", "json-only"):
            for status, headers, body in out[name]:
                assert status == 503, (name, status)
                assert headers["content-type"] == "application/json"
                assert json.loads(body)["error"] == "no_eligible_target"
        assert pool_hits(stack) == before
    finally:
        stack.start_router()


def _reload(stack: Stack, text: str) -> None:
    stack.policy.write_text(text)


def test_reload_adding_and_removing_nodes_reaches_envoy_routed_and_fail_open(
        stack: Stack) -> None:
    # a new GDPR node, served by its own emulator, absent from the policy Envoy started with
    extra = stack.tmp / "extra.yaml"
    extra.write_text("""version: 1
edge:
  nodes:
    - {id: eu-c, address: "127.0.0.1:1", weight: 4, slots: 16, residency: [GDPR]}
""")
    port = stack.emulate("emulate-extra", extra)["eu-c"]
    addresses = dict(stack.ports)
    text = POLICY.format(store="memory", **addresses)
    eu_b = f'    - {{id: eu-b, address: "127.0.0.1:{addresses["p1"]}"'
    start = text.index(eu_b)
    end = text.index("\n    - {id: us-a")
    edited = (text[:start] + f'    - {{id: eu-c, address: "127.0.0.1:{port}", '
              'hardware: a100-80g, weight: 4, slots: 16,\n       residency: [GDPR], '
              'base_latency_ms: 4}' + text[end:])
    assert "eu-b" not in edited and "eu-c" in edited
    _reload(stack, edited)
    keys = [{"x-affinity-key": f"r{i}", "x-affinity-residency": "GDPR"} for i in range(60)]

    def routed_to_c() -> bool:
        return any(h.get("x-served-by") == "eu-c" for _, h, _ in send_all(stack, keys))

    wait_for(routed_to_c, what="routed traffic to reach the new node")
    hits_b = int(stack.stats("eu-b")["hits"])  # from here on, the removed node gets nothing
    served = {h["x-served-by"] for _, h, _ in send_all(stack, keys)}
    assert served <= {"eu-a", "eu-c"} and "eu-c" in served
    stack.stop_router(signal.SIGKILL)
    try:
        fail_open = send_all(stack, keys)
        assert all(s == 200 for s, _, _ in fail_open)
        assert {h.get("x-route-reason") for _, h, _ in fail_open} == {"fail-open"}
        served = {h["x-served-by"] for _, h, _ in fail_open}
        assert "eu-c" in served and served <= {"eu-a", "eu-c"}
    finally:
        stack.start_router()
    assert int(stack.stats("eu-b")["hits"]) == hits_b  # the removed node got nothing more


@pytest.mark.parametrize("router_up", [True, False], ids=["router-up", "router-down"])
def test_client_route_headers_never_reach_upstreams(stack: Stack, router_up: bool) -> None:
    if not router_up:
        stack.stop_router(signal.SIGKILL)
    try:
        before = pool_hits(stack)
        spoof = {"x-affinity-key": "s", "x-affinity-residency": "GDPR",
                 "x-route-anything": "evil", "x-route-cluster": "cloud.cloud-hipaa",
                 "x-route-target": stack.address["cloud-hipaa"], "X-Route-Mode": "cloud"}
        results = send_all(stack, [spoof] * 8)
        for status, headers, body in results:
            assert status == 200
            route = json.loads(body)["route"]
            seen = {k: v for k, v in route.items() if k.startswith("x-route-")}  # upstream's
            assert "x-route-anything" not in seen
            assert headers["x-served-by"] in GDPR_EDGE
            if router_up:
                assert seen["x-route-mode"] in ("edge", "edge-degraded")
            else:
                assert not seen
        assert pool_hits(stack) == before
    finally:
        if not router_up:
            stack.start_router()


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_envoys_own_refusals_are_json_and_reach_no_upstream(stack: Stack) -> None:
    hits = {n: int(stack.stats(n)["hits"]) for n in stack.address}
    status, headers, body = _raw(stack.listen, b"GET /infer HTTP/1.1\r\nHost: x\r\n"
                                 b"x-affinity-key: a\x7fb\r\nConnection: close\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "envoy_400", "detail": "http1.invalid_characters"}
    [(status, headers, body)] = send_all(stack, [{"x-affinity-key": "k" * 70_000}])
    assert status == 431 and json.loads(body)["error"] == "envoy_431"

    async def too_big() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as s, s.post(
                stack.url + "/infer", data=io.BytesIO(b"x" * (9 * 1024 * 1024)),
                headers={"x-affinity-key": "big"}) as r:
            return r.status, await r.read()

    status, body = asyncio.run(too_big())
    assert status == 413 and json.loads(body)["error"] == "envoy_413"
    [(status, headers, body)] = send_all(stack, [{"x-affinity-slo-ms": "soon"}])
    assert status == 400 and json.loads(body)["error"] == "bad_affinity_tag"  # the router's own
    assert {n: int(stack.stats(n)["hits"]) for n in stack.address} == hits


def test_chunked_upload_is_priced_on_its_real_size(stack: Stack) -> None:
    # cloud-hipaa: $0.01 of compute a request plus $0.09/GB egress; 2 MB adds ~$0.00019
    payload = b"x" * (2 * 1000 * 1000)
    headers = {"x-affinity-key": "up", "x-affinity-residency": "HIPAA",
               "x-affinity-max-cost": "0.0101"}

    async def upload(chunked: bool) -> tuple[int, bytes]:
        async def body() -> Any:
            for i in range(0, len(payload), 65536):
                yield payload[i:i + 65536]

        async with aiohttp.ClientSession() as s, s.post(
                stack.url + "/infer", headers=headers,
                data=body() if chunked else io.BytesIO(payload)) as r:
            return r.status, await r.read()

    for chunked in (False, True):
        status, body = asyncio.run(upload(chunked))
        assert status == 503, (chunked, status)
        assert json.loads(body)["error"] == "max_cost_exceeded"
    headers["x-affinity-max-cost"] = "0.0103"
    assert asyncio.run(upload(True))[0] == 200
