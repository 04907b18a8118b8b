"""A feed server for demos and tests: one file served over HTTP (ETag) and gRPC `Watch`.

The file is re-read whenever its stat changes (polled every `poll_s`) and
served byte for byte, valid or not (tests serve broken documents on
purpose); gRPC watchers get the new document at once.
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

from router.feed._proto import modules
from router.feed.sources import content_version

log = logging.getLogger("router.feed.server")
MAX_REQUEST_HEAD = 16 * 1024


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


async def _http_handler(feed: FeedFile, stats: Counter[str], reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ConnectionError):
        writer.close()
        return
    lines = head[:MAX_REQUEST_HEAD].decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    raw, version = feed.raw, feed.version
    if method not in ("GET", "HEAD"):
        status, body = "405 Method Not Allowed", b""
    elif headers.get("if-none-match") == version:
        status, body = "304 Not Modified", b""
    else:
        status, body = "200 OK", raw
    stats[status.split(" ", 1)[0]] += 1
    out = [f"HTTP/1.1 {status}", f"ETag: {version}", "Content-Type: application/json",
           f"Content-Length: {len(body)}", "Cache-Control: no-cache", "Connection: close"]
    writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
    if method == "GET":
        writer.write(body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


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
        self._http: asyncio.Server | None = None
        self._grpc: Any = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and start serving."""
        import grpc

        if self.http_addr is not None:
            host, port = _split(self.http_addr)
            self._http = await asyncio.start_server(
                lambda r, w: _http_handler(self.feed, self.stats, r, w), host, port)
            self.http_port = self._http.sockets[0].getsockname()[1]
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
            self._http.close()
            await self._http.wait_closed()
