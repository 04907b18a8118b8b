"""The refresh pump: fetch, decode, offer, prepare in a thread, commit.

Every `refresh_seconds` (±10 % jitter, so a fleet of routers does not poll in step) the
source is asked for the document; an unchanged one (same stat, ETag or version) costs
nothing more, and a `grpc://` source's pushes are handled at once. A document is decoded
whole against the policy in force (a failure keeps the last good one: `invalid`) and
offered; every `tick` the runtime is asked whether its feed went stale. What a feed or a
tick changes is the runtime's rule (`Runtime.offer`, `Runtime.tick`); this loop carries it
out: the table is built in a worker thread and swapped in on the event loop, and whoever
follows commits (xDS, the staleness log) subscribed with `Runtime.on_commit`. Policy
edits take the same lock, so a rebuild never mixes a new feed with an old policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from router.core.feedsnapshot import FeedError, decode_feed
from router.feed.follow import Follow
from router.feed.reload import PolicyReloader
from router.feed.sources import FeedUnreachable, Fetched
from router.feed.staleness import staleness_listener
from router.feed.swap import Swapper
from router.metrics import RouterMetrics, runtime_state
from router.runtime import Runtime

log = logging.getLogger("router.feed.refresh")
OK, UNCHANGED, INVALID, UNREACHABLE = "ok", "unchanged", "invalid", "unreachable"
JITTER = 0.1


class Refresher(Swapper):
    """Keeps one `Runtime` current with its feed and its policy file."""

    def __init__(self, runtime: Runtime, policy_path: str, metrics: RouterMetrics | None = None,
                 *, clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 tick: float = 1.0) -> None:
        """Refresh `runtime` from its policy's feed; watch `policy_path` every `tick` s."""
        super().__init__(runtime, PolicyReloader(policy_path, runtime, metrics), clock)
        runtime.on_commit(staleness_listener(runtime))
        if metrics is not None:
            metrics.watch(lambda: runtime_state(runtime))
        self.metrics = metrics
        self.rng = rng if rng is not None else random.Random()
        self.tick = tick
        self.follow = Follow(lambda: runtime.policy.feed, Path(policy_path).resolve().parent,
                             self._pushed)
        self.last_error = ""
        self._wake = asyncio.Event()

    @property
    def pushes(self) -> int:
        """Documents a watched source pushed."""
        return self.follow.pushes

    def wake(self) -> None:
        """Look at the runtime now rather than at the next tick (a node was taken out)."""
        self._wake.set()

    def request_reload(self) -> None:
        """Re-read the policy file now (wire SIGHUP here)."""
        self.reloader.request()
        self._wake.set()

    async def run(self) -> None:
        """Refresh, reload and watch until cancelled."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        try:
            while True:
                self._wake.clear()
                try:
                    await self.reload_policy()
                    await self.follow.ensure()
                    if loop.time() >= next_poll:
                        next_poll = loop.time() + self.interval()
                        await self.refresh_once()
                    else:
                        await self.check_staleness()
                except Exception:  # keep serving on what is in force, whatever broke
                    log.exception("feed refresh failed; serving on the last good state")
                wait = max(0.0, min(self.tick, next_poll - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            await self.follow.close()

    def interval(self) -> float:
        """Seconds to the next poll: refresh_seconds with ±10 % jitter."""
        base = self.runtime.policy.refresh_seconds
        return base * (1.0 - JITTER + 2 * JITTER * self.rng.random())

    async def refresh_once(self) -> str:
        """One poll: 'ok', 'unchanged', 'invalid' or 'unreachable' (counted in metrics)."""
        source = await self.follow.source()
        result = UNCHANGED
        try:
            if source is not None:
                fetched = await source.fetch(self.follow.known, self.runtime.policy.feed.max_bytes)
                result = await self.accept(fetched) if fetched is not None else \
                    INVALID if self.follow.known_bad else UNCHANGED  # the same refused one
        except FeedUnreachable as exc:
            self.last_error = str(exc)
            age = self.runtime.feed.age(self.clock()) if self.runtime.feed else None
            log.warning("feed unreachable: %s; serving on the last good snapshot (age %s)",
                        exc, "none" if age is None else f"{age:.0f} s")
            result = UNREACHABLE
        except FeedError as exc:
            result = self._refused(exc)
        if source is not None:
            self._count(result)
        await self.check_staleness()
        return result

    async def accept(self, fetched: Fetched) -> str:
        """Decode a fetched document, offer it and do what the runtime asks: 'ok'/'invalid'."""
        async with self._lock:
            self.follow.known = fetched.version
            rt, now = self.runtime, self.clock()
            try:
                feed = decode_feed(fetched.raw, rt.policy, now=now, previous=rt.feed)
            except FeedError as exc:
                self.follow.known_bad = True
                return self._refused(exc)
            self.follow.known_bad = False
            await self._apply(rt.offer(feed, now), now)
            return OK

    async def _pushed(self, fetched: Fetched | FeedError) -> None:
        """A watched source's push (or its refusal), handled as a poll's answer."""
        self._count(self._refused(fetched) if isinstance(fetched, FeedError)
                    else await self.accept(fetched))

    def _refused(self, exc: FeedError) -> str:
        self.last_error = f"{exc.reason}: {exc.detail}"
        log.warning("feed snapshot refused (%s): %s; keeping the last good one",
                    exc.reason, exc.detail)
        return INVALID

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.feed_refresh.labels(result=result).inc()
