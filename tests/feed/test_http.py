"""The HTTP feed on aiohttp: server (ETag, 304, HEAD, 405), source (size limit, timeout, errors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from router.feed import server as feed_server
from router.feed.server import FeedServer
from router.feed.sources import FeedUnreachable, HttpSource, content_version
from tests.feed.conftest import Setup

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_app(handler: Handler) -> tuple[web.AppRunner, str]:
    """A one-route aiohttp server on 127.0.0.1 and its URL."""
    app = web.Application()
    app.router.add_get("/feed.json", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/feed.json"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for talking to the feed server directly."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_server_answers_get_and_head_with_etag_and_304_for_a_known_version(
        setup: Setup, server: FeedServer, client: aiohttp.ClientSession) -> None:
    raw = setup.feed_path.read_bytes()
    version = content_version(raw)
    async with client.get(server.http_url) as resp:
        assert resp.status == 200 and await resp.read() == raw
        assert resp.headers["ETag"] == version
        assert resp.headers["Content-Type"] == "application/json"
    async with client.head(server.http_url) as resp:
        assert resp.status == 200 and resp.headers["ETag"] == version
        assert int(resp.headers["Content-Length"]) == len(raw) and await resp.read() == b""
    for tags in (version, f'"other", {version}', "*", f"W/{version}"):
        async with client.get(server.http_url, headers={"If-None-Match": tags}) as resp:
            assert resp.status == 304 and await resp.read() == b"", tags
    async with client.get(server.http_url, headers={"If-None-Match": '"other"'}) as resp:
        assert resp.status == 200 and await resp.read() == raw
    assert server.stats["304"] == 4 and server.stats["200"] == 3


async def test_server_refuses_other_methods_with_405(server: FeedServer,
                                                     client: aiohttp.ClientSession) -> None:
    async with client.post(server.http_url, data=b"{}") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD"
    assert server.stats["405"] == 1


async def test_source_stops_reading_an_endless_body_one_byte_past_the_limit() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"ETag": '"big"'})
        await resp.prepare(request)
        while True:  # never ends: only a reader that stops can return
            await resp.write(b" " * 65536)

    runner, url = await serve_app(endless)
    try:
        got = await HttpSource(url, timeout=60).fetch("", 100_000)
    finally:
        await runner.cleanup()
    # Returning at all (well inside the 60 s timeout, which would raise) means it stopped.
    assert got is not None and len(got.raw) == 100_001 and got.version == '"big"'


async def test_source_gives_up_on_a_silent_server_after_its_timeout() -> None:
    release = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=b"{}")

    runner, url = await serve_app(silent)
    try:
        with pytest.raises(FeedUnreachable, match=r"no answer in 0\.3 s"):
            await HttpSource(url, timeout=0.3).fetch("", 4096)
    finally:
        release.set()
        await runner.cleanup()


@pytest.mark.parametrize(("status", "message"), [(500, "HTTP 500 Internal Server Error"),
                                                  (404, "HTTP 404 Not Found")])
async def test_source_reports_http_errors_as_unreachable(status: int, message: str) -> None:
    async def failing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status)

    runner, url = await serve_app(failing)
    try:
        with pytest.raises(FeedUnreachable, match=message):
            await HttpSource(url).fetch("", 4096)
    finally:
        await runner.cleanup()


async def _empty(request: web.Request) -> web.StreamResponse:
    return web.Response()


async def test_source_reports_a_refused_connection_as_unreachable() -> None:
    runner, url = await serve_app(_empty)
    await runner.cleanup()  # nothing listens on that port any more
    with pytest.raises(FeedUnreachable, match=url.rsplit("/", 1)[0]):
        await HttpSource(url).fetch("", 4096)


async def test_source_versions_a_document_without_etag_by_its_content() -> None:
    async def plain(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"version": 1}')

    runner, url = await serve_app(plain)
    try:
        source = HttpSource(url)
        first = await source.fetch("", 4096)
        assert first is not None and first.version == content_version(b'{"version": 1}')
        assert await source.fetch(first.version, 4096) is None  # same content: unchanged
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("sent", [b"", b"GET /feed.json HTTP/1.1\r\nHost: x\r\n"],
                         ids=["silent", "half-a-request"])
async def test_server_drops_a_client_that_never_finishes_its_request(
        setup: Setup, monkeypatch: pytest.MonkeyPatch, sent: bytes) -> None:
    monkeypatch.setattr(feed_server, "KEEPALIVE_S", 0.3)
    srv = FeedServer(setup.feed_path, grpc_addr=None)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.http_port)
        writer.write(sent)
        await writer.drain()
        # The server closes the connection (EOF, no response); the 30 s is only a backstop.
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
    finally:
        await srv.stop()
    assert not srv.stats
