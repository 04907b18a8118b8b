"""Slow uploads through real Envoy: a trickling body holds no edge slot while it trickles,
and one that never finishes is cut off by the request timeout."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from .stack import NODES, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GDPR_SLOTS = sum(slots for tag, _, slots in NODES.values() if tag == "GDPR")  # 12


def test_trickling_uploads_hold_no_edge_slot_while_they_trickle(tmp_path: Path) -> None:
    stack = Stack(tmp_path).start()
    try:
        peak: list[float] = []

        async def trickle(session: aiohttp.ClientSession, i: int) -> int:
            async def body():  # type: ignore[no-untyped-def]
                for _ in range(15):
                    yield b"x" * 1000
                    await asyncio.sleep(0.2)  # 3 s to send 15 KB

            async with session.post(stack.url + "/infer", data=body(), headers={
                    "x-affinity-key": f"slow-{i}", "x-affinity-residency": "GDPR",
                    "x-affinity-tenant": "uploader"}) as r:
                return r.status

        async def others(session: aiohttp.ClientSession) -> list[str]:
            modes = []
            await asyncio.sleep(1.0)  # every trickle is well under way
            for i in range(20):
                async with session.get(stack.url + "/infer", headers={
                        "x-affinity-key": f"other-{i}", "x-affinity-residency": "GDPR"}) as r:
                    modes.append(r.headers.get("x-route-mode", "?"))
                gdpr = {k: v for k, v in stack.inflight().items()
                        if k in ("eu-a", "eu-b")}
                peak.append(sum(gdpr.values()))
            return modes

        async def go() -> tuple[list[int], list[str]]:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=64),
                    timeout=aiohttp.ClientTimeout(total=30)) as s:
                uploads = [asyncio.create_task(trickle(s, i)) for i in range(GDPR_SLOTS)]
                modes = await others(s)
                return list(await asyncio.gather(*uploads)), modes

        statuses, modes = asyncio.run(go())
    finally:
        stack.close()
    assert statuses == [200] * GDPR_SLOTS  # the uploads themselves were served in the end
    # while 12 uploads trickled in (as many as the GDPR edge has slots), others still ran
    # on the edge: a body being received holds nothing in the router
    assert set(modes) == {"edge"}, (modes, peak)
    # the router's own in-flight count on the GDPR nodes stayed low
    assert max(peak) <= 2, (modes, peak)


def test_an_upload_that_never_finishes_gets_a_json_408(tmp_path: Path) -> None:
    # a short request timeout so the test does not wait the default 60 s; the socket's own
    # 10 s timeout fails the test if Envoy left the upload hanging
    stack = Stack(tmp_path, envoy_args=("--request-timeout", "2")).start()
    try:
        hits = {n: int(stack.stats(n)["hits"]) for n in stack.address}
        with socket.create_connection(("127.0.0.1", stack.listen), timeout=10) as s:
            s.sendall(b"POST /infer HTTP/1.1\r\nHost: x\r\nx-affinity-key: stuck\r\n"
                      b"content-length: 100000\r\n\r\n" + b"x" * 1000)  # and then nothing
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"408"
        assert json.loads(body)["error"] == "envoy_408"
        assert {n: int(stack.stats(n)["hits"]) for n in stack.address} == hits
        assert sum(stack.inflight().values()) == 0
    finally:
        stack.close()

