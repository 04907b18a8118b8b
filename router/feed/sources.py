"""Where feed documents come from: `file:PATH`, `http(s)://HOST:PORT/PATH`, `grpc://HOST:PORT`.

A source returns the raw bytes of a document and an opaque version, or None
when the document is unchanged since the version the caller already holds
(a stat for files, ETag / If-None-Match for HTTP, the version field for
gRPC), so an unchanged feed costs a round trip at most. Sources never parse:
`router.core.feedsnapshot.decode_feed` validates. Reads stop one byte past
`max_bytes`, so an oversize document is refused without reading all of it
(gRPC refuses it at the message limit: `FeedError("oversize")`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from router.core.feedsnapshot import FeedError


class FeedUnreachable(Exception):
    """The source could not be read (connection refused, timeout, HTTP error, missing file)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """One fetched document: its raw bytes and its version."""

    raw: bytes
    version: str


def content_version(raw: bytes) -> str:
    """Version string of a document: a short content hash, quoted like an ETag."""
    return '"' + hashlib.blake2b(raw, digest_size=10).hexdigest() + '"'


class FeedSource(Protocol):
    """A feed location the refresher polls."""

    spec: str

    async def fetch(self, known: str, max_bytes: int) -> Fetched | None:
        """The current document, or None if its version is still `known`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class FileSource:
    """`file:PATH`: re-read only when the file's stat changes."""

    def __init__(self, spec: str, path: Path) -> None:
        """Read `path` for feed `spec`."""
        self.spec = spec
        self.path = path
        self._stat: tuple[int, int, int] | None = None
        self._version = ""

    async def fetch(self, known: str, max_bytes: int) -> Fetched | None:
        """The file's document, or None when unchanged since `known`."""
        try:
            st = os.stat(self.path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
            if sig == self._stat and self._version == known:
                return None
            with open(self.path, "rb") as fh:
                raw = fh.read(max_bytes + 1)
        except OSError as exc:
            raise FeedUnreachable(f"{self.path}: {exc.strerror or exc}") from None
        self._stat, self._version = sig, content_version(raw)
        return None if self._version == known else Fetched(raw, self._version)

    async def close(self) -> None:
        """Nothing to release."""


class HttpSource:
    """`http(s)://...`: a conditional GET with If-None-Match, on aiohttp.

    One client session per poll: a poll comes every `refresh_seconds`, so a kept
    connection would save little, and nothing is left open if a caller never
    calls `close`. Proxies are taken from the environment (`HTTP(S)_PROXY`,
    `NO_PROXY`) as any HTTP client on the host would.
    """

    CHUNK = 64 * 1024

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        """Poll `url`, giving up on one attempt (connect, headers and body) after `timeout` s."""
        self.spec = url
        self.timeout = timeout

    async def fetch(self, known: str, max_bytes: int) -> Fetched | None:
        """The document (at most `max_bytes` + 1 bytes of it), or None on 304 Not Modified."""
        headers = {"Accept": "application/json", "User-Agent": "hybrid-router-feed"}
        if known:
            headers["If-None-Match"] = known
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                             trust_env=True) as session, \
                    session.get(self.spec, headers=headers) as resp:
                if resp.status == 304:
                    return None
                if not 200 <= resp.status < 300:
                    raise FeedUnreachable(f"{self.spec}: HTTP {resp.status} {resp.reason}")
                raw = await self._read(resp, max_bytes + 1)
                etag = resp.headers.get("ETag") or content_version(raw)
        except TimeoutError:
            raise FeedUnreachable(f"{self.spec}: no answer in {self.timeout:g} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise FeedUnreachable(f"{self.spec}: {exc or type(exc).__name__}") from None
        return None if etag == known else Fetched(raw, etag)

    async def _read(self, resp: aiohttp.ClientResponse, limit: int) -> bytes:
        """The body, streamed, stopping as soon as `limit` bytes are in (the rest is dropped)."""
        body = bytearray()
        async for chunk in resp.content.iter_chunked(self.CHUNK):
            body += chunk
            if len(body) >= limit:
                resp.close()  # an oversize or endless body: stop reading, drop the connection
                break
        return bytes(body[:limit])

    async def close(self) -> None:
        """Nothing held between polls."""


class GrpcSource:
    """`grpc://HOST:PORT`: the `Watch` stream of protos/feed.proto."""

    def __init__(self, spec: str, target: str, *, timeout: float = 5.0) -> None:
        """Connect lazily to `target` (host:port)."""
        self.spec = spec
        self.target = target
        self.timeout = timeout
        self._channel: Any = None

    def _stub(self, max_bytes: int) -> Any:
        import grpc

        from router.feed._proto import modules

        if self._channel is None:
            limit = max_bytes + 1024  # the limit itself is enforced by decode_feed
            self._channel = grpc.aio.insecure_channel(
                self.target, options=[("grpc.max_receive_message_length", limit)])
        return modules()[1].FeedStub(self._channel)

    async def watch(self, known: str, max_bytes: int) -> AsyncIterator[Fetched]:
        """Each new document as the server pushes it; raises `FeedUnreachable` when it ends."""
        import grpc

        pb2 = _pb2()
        call = self._stub(max_bytes).Watch(pb2.WatchRequest(known_version=known))
        try:
            async for msg in call:
                if msg.version != known:
                    known = msg.version
                    yield Fetched(bytes(msg.json), msg.version)
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(self.spec, exc, max_bytes) from None
        finally:
            call.cancel()
        raise FeedUnreachable(f"{self.spec}: watch stream ended")

    async def fetch(self, known: str, max_bytes: int) -> Fetched | None:
        """The server's current document (the first message of a Watch)."""
        import grpc

        call = self._stub(max_bytes).Watch(_pb2().WatchRequest(known_version=known))
        try:
            msg = await asyncio.wait_for(call.read(), self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(self.spec, exc, max_bytes) from None
        except TimeoutError:
            raise FeedUnreachable(f"{self.spec}: no answer in {self.timeout:g} s") from None
        finally:
            call.cancel()
        if msg is grpc.aio.EOF:
            raise FeedUnreachable(f"{self.spec}: stream ended without a document")
        return None if msg.version == known else Fetched(bytes(msg.json), msg.version)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _grpc_error(spec: str, exc: Any, max_bytes: int) -> Exception:
    """An oversize message is an invalid document; anything else, an unreachable feed."""
    import grpc

    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return FeedError("oversize", f"document over the {max_bytes} byte limit "
                                     f"({exc.details()})")
    return FeedUnreachable(f"{spec}: {exc.code().name} {exc.details()}")


def _pb2() -> Any:
    from router.feed._proto import modules

    return modules()[0]


def open_source(spec: str, base: Path | None = None) -> FeedSource:
    """The source for a policy's `feed.source`; relative file paths try the CWD, then `base`."""
    if spec.startswith("file:"):
        path = Path(spec[len("file:"):])
        if not path.is_absolute() and not path.exists() and base is not None:
            path = base / path
        return FileSource(spec, path)
    if spec.startswith(("http://", "https://")):
        return HttpSource(spec)
    if spec.startswith("grpc://"):
        return GrpcSource(spec, spec[len("grpc://"):].rstrip("/"))
    raise ValueError(f"unsupported feed source {spec!r}")
