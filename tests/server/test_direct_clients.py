"""Whatever a direct ext_proc client sends, the router's memory stays bounded (issue 20, item 7).

Envoy strips client `x-route-*` headers before the router sees them; a client that
reaches the gRPC port directly does not. Its header names must never become cache keys.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from router.server import extproc
from router.server.limits import KEEPALIVE_MS, MAX_MESSAGE_BYTES, grpc_options
from tests.server.serving import serve
from tests.server.test_servicer import Client, raw_msg


def junk(n: int, size: int) -> list[tuple[str, bytes]]:
    """`n` x-route-* headers with distinct random names of `size` characters."""
    return [(f"x-route-{secrets.token_hex(size // 2)}", b"1") for _ in range(n)]


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_junk_route_header_names_never_enter_the_response_cache() -> None:
    extproc._RESPONSES.clear()
    async with Client() as c:
        for _ in range(200):
            call, answer, outbox = await c.open_msg(raw_msg(
                [("x-affinity-key", b"k1"), *junk(5, 64)]))
            removed = answer.request_headers.response.header_mutation.remove_headers
            assert len(removed) == 5 and all(k.startswith("x-route-") for k in removed)
            await outbox.put(None)
            assert await call.read() is grpc.aio.EOF
        assert await c.settled() == {}
    # one key, one routed header set: the 1,000 client-chosen names left no trace
    assert len(extproc._RESPONSES) <= 2
    assert all(len(r.request_headers.response.header_mutation.remove_headers) == 0
               for r in extproc._RESPONSES.values())


def test_server_limits_streams_per_connection_message_size_and_keeps_alive() -> None:
    opts = dict(grpc_options(4096))
    assert opts["grpc.max_concurrent_streams"] == 4096 + 64
    assert opts["grpc.server.max_pending_requests"] == 4096 + 64  # a burst is never reset
    assert opts["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    assert opts["grpc.keepalive_time_ms"] == KEEPALIVE_MS
    assert opts["grpc.keepalive_permit_without_calls"] == 1


@pytest.mark.integration
def test_direct_client_junk_route_headers_keep_rss_growth_under_50_mb(tmp_path: Path) -> None:
    """600 requests of ~60 KB of distinct junk x-route-* names (the issue's probe: +972 MB)."""
    served = serve(tmp_path, "--metrics", "off")
    port = served.port
    try:
        async def send(count: int) -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.ExternalProcessorStub(channel)
                for _ in range(count):
                    msg = raw_msg([("x-affinity-key", b"k"), *junk(200, 300)])
                    replies = [r async for r in stub.Process(iter([msg]), timeout=10)]
                    assert replies[0].WhichOneof("response") == "request_headers"

        asyncio.run(send(50))  # warm: imports, first classes, allocator arenas
        before = rss_kb(served.proc.pid)
        asyncio.run(send(600))
        grown_mb = (rss_kb(served.proc.pid) - before) / 1024
        assert grown_mb < 50, f"RSS grew {grown_mb:.0f} MB"
    finally:
        served.stop()
