"""The refresh pump: fetch, decode, offer, prepare in a thread, commit.

Theory of operation
-------------------
Every `refresh_seconds` (±10 % jitter, so a fleet of routers does not hit the
feed in step) the source is asked for the document; an unchanged one (same
stat, ETag or version) costs nothing further. A new document is decoded and
validated whole against the policy in force (`router.core.feed.decode_feed`);
a failure keeps the last good snapshot and counts `invalid`, an unreachable
source counts `unreachable`. A `grpc://` source is also watched: each push is
handled the same way at once. Every `tick` the runtime is asked whether the
feed in force has gone stale. What a feed or a tick changes is the runtime's
rule (`Runtime.offer`, `Runtime.tick`); this loop only carries it out: the
table is built in a worker thread and swapped in on the event loop with one
reference assignment, so a request sees the old table or the new one and
releases its load on the table that admitted it. Whoever follows committed
snapshots (the xDS server) subscribed with `Runtime.on_commit`. Policy edits
(file change or `request_reload()`) go through the same lock, so a rebuild
never mixes a new feed with an old policy or the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from router.core.feed import FeedError, FeedSnapshot, decode_feed, format_time
from router.core.model import Policy
from router.core.table import Snapshot
from router.feed.follow import Follow
from router.feed.reload import PolicyReloader, quiet_gc
from router.feed.sources import FeedUnreachable, Fetched
from router.metrics import RouterMetrics, runtime_state
from router.runtime import Intake, Runtime

log = logging.getLogger("router.feed.refresh")
OK, UNCHANGED, INVALID, UNREACHABLE = "ok", "unchanged", "invalid", "unreachable"
JITTER = 0.1


def weighted_down(snap: Snapshot) -> bool:
    """Whether `snap` routes on a stale feed (no feed at all is not a stale one)."""
    return snap.stale and snap.feed is not None


def log_staleness(snap: Snapshot, now: float) -> None:
    """Say that the feed in force turned stale (at start, on arrival or by age) or fresh."""
    if snap.feed is None:
        return
    limit = snap.policy.feed.stale_after_seconds
    if snap.stale:
        log.warning("feed snapshot in force is %.0f s old (generated %s; stale after %.0f s): "
                    "nodes weighted down by %g", snap.feed.age(now),
                    format_time(snap.feed.generated_at), limit, snap.policy.feed.stale_weight)
    else:
        log.info("feed snapshot in force is fresh again (%.0f s old)", snap.feed.age(now))


class Refresher:
    """Keeps one `Runtime` current with its feed and its policy file."""

    def __init__(self, runtime: Runtime, policy_path: str, metrics: RouterMetrics | None = None,
                 *, clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 tick: float = 1.0) -> None:
        """Refresh `runtime` from its policy's feed; watch `policy_path` every `tick` s."""
        self.runtime = runtime
        if metrics is not None:
            metrics.watch(lambda: runtime_state(runtime))
        self.metrics = metrics
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.tick = tick
        self.reloader = PolicyReloader(policy_path, runtime, metrics)
        self.follow = Follow(lambda: runtime.policy.feed, Path(policy_path).resolve().parent,
                             self._pushed)
        self.last_error = ""
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @property
    def pushes(self) -> int:
        """Documents a watched source pushed."""
        return self.follow.pushes

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

    async def check_staleness(self) -> bool:
        """Rebuild when the snapshot's age crossed stale_after_seconds; True if it did."""
        now = self.clock()
        if self.runtime.tick(now) is None:
            return False
        async with self._lock:
            intake = self.runtime.tick(now)
            if intake is None:
                return False
            await self._apply(intake, now)
            return True

    async def reload_policy(self) -> bool:
        """Install the policy file if it changed (or a reload was asked for); True if it did.

        The file is read and validated in a worker process (`router.policy.isolated`) and
        installed from a worker thread, so a large or hostile policy never holds the loop.
        """
        if not self.reloader.changed():
            return False
        with quiet_gc():
            policy = await asyncio.to_thread(self.reloader.check)
            if policy is None:
                return False
            await self.install_policy(policy)
        return True

    async def install_policy(self, policy: Policy) -> None:
        """Swap in a validated policy under the refresh lock."""
        async with self._lock:
            old = self.runtime.policy.digest
            with quiet_gc():
                await self._rebuild(policy, None, self.clock())
            self.reloader.installed(policy, old)

    async def _apply(self, intake: Intake, now: float) -> None:
        """`Runtime.apply`, with the table built in a worker thread."""
        self.runtime.merge_bills(intake)
        if intake.rebuild:
            await self._rebuild(None, intake.feed, now)
        elif intake.feed is not None:
            self.runtime.restamp(intake.feed)  # only the timestamps moved

    async def _rebuild(self, policy: Policy | None, feed: FeedSnapshot | None,
                       now: float) -> None:
        prepared = await asyncio.to_thread(self.runtime.prepare, policy, feed, now=now)
        was_stale = weighted_down(self.runtime.snapshot)
        self.runtime.commit(prepared)  # on the event loop: one reference swap, then listeners
        if weighted_down(prepared.snapshot) != was_stale:
            log_staleness(prepared.snapshot, now)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.feed_refresh.labels(result=result).inc()
