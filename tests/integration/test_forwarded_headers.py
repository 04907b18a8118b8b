"""Through real Envoy on the generated config: ext_proc gets only the headers the router reads.

A recording processor stands where `hybrid-router serve` would (the config is the one
`envoy-config --static` writes for it) and asks for the response headers too, as the
router does for cloud and split answers. A browser's cookies, user agent and the like
never travel to it; every tag, the body's length, the request id and the response's
status do.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from router import wire

from .stack import ROOT, Stack, start_envoy

pytestmark = pytest.mark.integration

SEND_RESPONSE = mode_pb.ProcessingMode(response_header_mode=mode_pb.ProcessingMode.SEND)


class Recorder(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Answers nothing but records the header names of every message it is sent."""

    def __init__(self) -> None:
        self.seen: dict[str, list[list[str]]] = {}

    async def Process(self, it: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for msg in it:
            kind = msg.WhichOneof("request")
            headers = getattr(msg, kind).headers.headers
            self.seen.setdefault(kind, []).append([h.key for h in headers])
            if kind == "request_headers":
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse(),
                                            mode_override=SEND_RESPONSE)
            else:
                yield pb.ProcessingResponse(response_headers=pb.HeadersResponse())


async def test_envoy_sends_the_router_only_the_headers_it_reads(tmp_path: Path) -> None:
    recorder, server = Recorder(), grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stack = Stack(tmp_path)  # its policy only; its nodes' ports are never bound
    try:
        config = tmp_path / "envoy.yaml"
        subprocess.run([sys.executable, "-m", "router", "envoy-config", "--policy",
                        str(stack.policy), "--static", "--router", f"127.0.0.1:{port}",
                        "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "-o", str(config)],
                       check=True, cwd=ROOT)
        listen, _ = await asyncio.to_thread(start_envoy, stack, "envoy", config, concurrency=1)
        sent = {"cookie": "session=abc; theme=dark", "user-agent": "Mozilla/5.0 (X11)",
                "accept": "application/json", "authorization": "Bearer not-for-the-router",
                "x-forwarded-for": "10.0.0.7", "x-custom": "y" * 2048,
                wire.H_KEY: "cam-1", wire.H_RESIDENCY: "GDPR", wire.H_SLO: "500",
                wire.H_REQUEST_ID: "req-1"}
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{listen}/infer", data=b"frame" * 100, headers=sent,
                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            await resp.read()
            status = resp.status
    finally:
        stack.close()
        await server.stop(None)
    # the nodes are not listening: Envoy's own 503, whose status still reaches the router
    assert status == 503
    [request] = recorder.seen["request_headers"]
    assert sorted(request) == sorted(
        ["content-length", wire.H_KEY, wire.H_RESIDENCY, wire.H_SLO, wire.H_REQUEST_ID])
    [response] = recorder.seen["response_headers"]
    assert wire.H_STATUS in response
    assert all(name.startswith(wire.READ_PREFIXES)
               or name in wire.READ_NAMES + wire.READ_RESPONSE_NAMES for name in response)
