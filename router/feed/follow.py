"""The feed source in force: opened for the policy's `feed.source`, reopened when it changes,
and, for a `grpc://` source, watched for pushes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from router.core.feedsnapshot import FeedError
from router.core.policy import FeedConfig
from router.feed.sources import FeedSource, FeedUnreachable, Fetched, GrpcSource, open_source

log = logging.getLogger("router.feed.refresh")
Pushed = Callable[[Fetched | FeedError], Awaitable[None]]


class Follow:
    """One open feed source at a time, its last known version and its watch task."""

    def __init__(self, config: Callable[[], FeedConfig], base: Path, pushed: Pushed) -> None:
        """Follow the source `config()` (the policy in force) names, relative to `base`; hand
        each pushed document to `pushed`."""
        self.config = config
        self.base = base
        self.pushed = pushed
        self.known = ""  # the version of the last document fetched
        self.known_bad = False  # that document was refused
        self.pushes = 0
        self._source: FeedSource | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def source(self) -> FeedSource | None:
        """The source in force, opened (the old one closed if it changed); None: none."""
        spec = self.config().source
        if self._source is not None and (spec is None or self._source.spec != spec):
            await self.close()
        if spec is not None and self._source is None:
            self._source = open_source(spec, self.base)
        return self._source

    async def ensure(self) -> None:
        """Watch a `grpc://` source for pushes, if not already."""
        source = await self.source()
        if isinstance(source, GrpcSource) and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.create_task(self._watch(source))

    async def close(self) -> None:
        """Stop watching and close the source."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._source is not None:
            await self._source.close()
            self._source, self.known, self.known_bad = None, "", False

    async def _watch(self, source: GrpcSource) -> None:
        """Hand over each pushed document at once; reconnect with backoff."""
        backoff = 0.2
        while True:
            try:
                async for fetched in source.watch(self.known, self.config().max_bytes):
                    backoff = 0.2
                    self.pushes += 1
                    await self.pushed(fetched)
            except FeedUnreachable as exc:
                log.info("feed watch interrupted: %s; retrying in %.1f s", exc, backoff)
            except FeedError as exc:
                await self.pushed(exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
