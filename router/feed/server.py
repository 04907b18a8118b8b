"""A feed server for demos and tests: one file served over HTTP (ETag) and gRPC `Watch`.

The file is re-read whenever its stat changes (polled every `poll_s`) and
served byte for byte, valid or not (tests serve broken documents on
purpose); gRPC watchers get the new document at once. HTTP is aiohttp's
server: any path answers GET and HEAD with the document and its ETag, or 304
when `If-None-Match` names the version served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from router.feed._proto import modules
from router.feed.sources import content_version

log = logging.getLogger("router.feed.server")
# An idle client connection is closed after this long: nothing waits on a slow client forever.
KEEPALIVE_S = 10.0


class FeedFile:
    """The current bytes and version of a watched file, with change notification."""

    def __init__(self, path: Path) -> None:
        """Read `path` now (it must exist)."""
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self.raw = b""
        self.version = ""
        self._changed = asyncio.Event()
        self.reload()

    def reload(self) -> bool:
        """Re-read the file if its stat changed; True when the content changed."""
        try:
            st = os.stat(self.path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            if sig == self._stat:
                return False
            raw = self.path.read_bytes()
        except OSError as exc:
            log.warning("feed file %s: %s", self.path, exc)
            return False
        self._stat = sig
        version = content_version(raw)
        if version == self.version:
            return False
        self.raw, self.version = raw, version
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def wait_change(self, version: str) -> None:
        """Return once the served version differs from `version`."""
        while self.version == version:
            await self._changed.wait()

    async def watch_file(self, poll_s: float) -> None:
        """Poll the file until cancelled."""
        while True:
            await asyncio.sleep(poll_s)
            if self.reload():
                log.info("feed file %s changed: version %s", self.path, self.version)


def _http_app(feed: FeedFile, stats: Counter[str]) -> web.Application:
    """GET/HEAD of any path: the file, or 304 when the client already holds its version."""

    async def handle(request: web.Request) -> web.Response:
        raw, version = feed.raw, feed.version  # one read: body and ETag always agree
        headers = {"ETag": version, "Cache-Control": "no-cache"}
        if request.method not in ("GET", "HEAD"):
            response = web.Response(status=405, headers={**headers, "Allow": "GET, HEAD"})
        elif _holds(request, version):
            response = web.Response(status=304, headers=headers)
        else:
            response = web.Response(body=raw, headers=headers, content_type="application/json")
        stats[str(response.status)] += 1
        return response

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def _holds(request: web.Request, version: str) -> bool:
    """Whether If-None-Match names `version` (or `*`)."""
    tags = request.if_none_match
    if not tags:
        return False
    return any(t.value == "*" or f'"{t.value}"' == version for t in tags)


def _servicer(feed: FeedFile) -> Any:
    pb2, pb2_grpc = modules()

    class FeedServicer(pb2_grpc.FeedServicer):  # type: ignore[misc, name-defined]
        """Watch: the current document, then every change."""

        async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
            """Stream documents until the client goes away."""
            while True:
                version = feed.version
                yield pb2.FeedDocument(version=version, json=feed.raw)
                await feed.wait_change(version)

    return FeedServicer()


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host or "127.0.0.1", int(port)


class FeedServer:
    """HTTP and gRPC servers over one `FeedFile`; `start()` then `stop()`."""

    def __init__(self, path: Path, *, http: str | None = "127.0.0.1:0",
                 grpc_addr: str | None = "127.0.0.1:0", poll_s: float = 0.1) -> None:
        """Serve `path` on the given HOST:PORT addresses (None: not at all; port 0: any)."""
        self.feed = FeedFile(path)
        self.http_addr, self.grpc_addr, self.poll_s = http, grpc_addr, poll_s
        self.http_port = 0
        self.stats: Counter[str] = Counter()  # HTTP responses by status code
        self.grpc_port = 0
        self._http: web.AppRunner | None = None
        self._grpc: Any = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start serving."""
        import grpc

        if self.http_addr is not None:
            host, port = _split(self.http_addr)
            self._http = web.AppRunner(_http_app(self.feed, self.stats), access_log=None,
                                       keepalive_timeout=KEEPALIVE_S)
            await self._http.setup()
            site = web.TCPSite(self._http, host, port)
            await site.start()
            self.http_port = self._http.addresses[0][1]
        if self.grpc_addr is not None:
            self._grpc = grpc.aio.server(options=[("grpc.max_send_message_length", -1)])
            modules()[1].add_FeedServicer_to_server(_servicer(self.feed), self._grpc)
            self.grpc_port = self._grpc.add_insecure_port(self.grpc_addr)
            await self._grpc.start()
        self._poller = asyncio.create_task(self.feed.watch_file(self.poll_s))

    @property
    def http_url(self) -> str:
        """URL of the HTTP feed."""
        host = _split(self.http_addr or "127.0.0.1:0")[0]
        return f"http://{host}:{self.http_port}/feed.json"

    @property
    def grpc_url(self) -> str:
        """grpc:// address of the Watch service."""
        host = _split(self.grpc_addr or "127.0.0.1:0")[0]
        return f"grpc://{host}:{self.grpc_port}"

    async def stop(self) -> None:
        """Stop serving, ending open Watch streams."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._grpc is not None:
            await self._grpc.stop(grace=0.2)
        if self._http is not None:
            await self._http.cleanup()
