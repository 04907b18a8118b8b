"""The refresh loop: poll (or watch) the feed, validate, rebuild off the request path, swap.

Theory of operation
-------------------
Every `refresh_seconds` (±10 % jitter, so a fleet of routers does not hit the
feed in step) the source is asked for the document; an unchanged one (same
stat, ETag or version) costs nothing further. A new document is decoded and
validated whole against the policy in force (`router.core.feed.decode_feed`);
a failure keeps the last good snapshot and counts `invalid`, an unreachable
source counts `unreachable`. A valid snapshot whose routing inputs (nodes,
prices) differ is compiled into a table in a worker thread and swapped in on
the event loop with one reference assignment, so a request sees the old table
or the new one and releases its load on the table that admitted it. A
`grpc://` source is also watched: each push is handled the same way at once.

Staleness is data: the table records whether its snapshot was older than
`stale_after_seconds` when built, and the loop rebuilds (without a new
snapshot) the moment that stops being true, so nodes the feed has not
confirmed for that long are weighted down by `stale_weight`. Policy edits
(file change or `request_reload()`) go through the same lock, so a rebuild
never mixes a new feed with an old policy or the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from router.core.budget import account_of
from router.core.feed import FeedError, FeedSnapshot, decode_feed, format_time
from router.core.model import Policy
from router.core.table import Snapshot
from router.feed.reload import PolicyReloader
from router.feed.sources import FeedSource, FeedUnreachable, Fetched, GrpcSource, open_source
from router.metrics import RouterMetrics, runtime_state
from router.runtime import Runtime
from router.xds.resources import Options as XdsOptions
from router.xds.resources import Resources
from router.xds.resources import build as build_resources
from router.xds.server import AdsServer

log = logging.getLogger("router.feed.refresh")


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Pause the cyclic collector while a new policy is read and built, then freeze what lives.

    A policy is a large object graph that lives until the next reload: collecting it is
    pointless, and a collection runs on whichever thread trips the allocation threshold,
    holding the GIL — over a 1,000-node policy a full pass takes ~40 ms, a young one a few ms,
    either a stall of every request waiting on the event loop. So no collection runs while
    it is built, and once it is installed it is frozen out of later passes, as the start-up
    heap is. Frozen objects are still freed by reference counting when the next reload
    drops them (a policy and its snapshot hold no reference cycles:
    tests/feed/test_reload.py checks), and routine feed refreshes, which allocate little,
    leave the collector as it is. Nested uses freeze once, at the outermost exit.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


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


OK, UNCHANGED, INVALID, UNREACHABLE = "ok", "unchanged", "invalid", "unreachable"
JITTER = 0.1


class Refresher:
    """Keeps one `Runtime` current with its feed and its policy file."""

    def __init__(self, runtime: Runtime, policy_path: str, metrics: RouterMetrics | None = None,
                 *, clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 tick: float = 1.0, xds: AdsServer | None = None,
                 xds_options: XdsOptions | None = None) -> None:
        """Refresh `runtime` from its policy's feed; watch `policy_path` every `tick` s.

        With `xds`, every swap also publishes the new inference resources to Envoy.
        """
        self.runtime = runtime
        if metrics is not None:
            metrics.watch(lambda: runtime_state(runtime))
        self.xds = xds
        self.xds_options = xds_options or XdsOptions()
        self.metrics = metrics
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.tick = tick
        self.reloader = PolicyReloader(policy_path, runtime, metrics)
        self.base = Path(policy_path).resolve().parent
        self.last_error = ""
        self.pushes = 0
        self._source: FeedSource | None = None
        self._known = ""
        self._known_bad = False  # the document at `_known` was refused
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

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
                    await self._ensure_watch()
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
            await self._stop_watch()
            if self._source is not None:
                await self._source.close()

    def interval(self) -> float:
        """Seconds to the next poll: refresh_seconds with ±10 % jitter."""
        base = self.runtime.policy.refresh_seconds
        return base * (1.0 - JITTER + 2 * JITTER * self.rng.random())

    async def refresh_once(self) -> str:
        """One poll: 'ok', 'unchanged', 'invalid' or 'unreachable' (counted in metrics)."""
        source = await self._current_source()
        if source is None:
            await self.check_staleness()
            return UNCHANGED
        try:
            fetched = await source.fetch(self._known, self.runtime.policy.feed.max_bytes)
        except FeedUnreachable as exc:
            self.last_error = str(exc)
            age = self.runtime.feed.age(self.clock()) if self.runtime.feed else None
            log.warning("feed unreachable: %s; serving on the last good snapshot (age %s)",
                        exc, "none" if age is None else f"{age:.0f} s")
            result = UNREACHABLE
        except FeedError as exc:
            result = self._refused(exc)
        else:
            result = await self.accept(fetched) if fetched is not None else \
                INVALID if self._known_bad else UNCHANGED  # the same refused document again
        self._count(result)
        await self.check_staleness()
        return result

    async def accept(self, fetched: Fetched) -> str:
        """Validate a fetched document and install it if it changes routing: 'ok'/'invalid'."""
        async with self._lock:
            self._known = fetched.version
            rt = self.runtime
            now = self.clock()
            try:
                snap = decode_feed(fetched.raw, rt.policy, now=now, previous=rt.feed)
            except FeedError as exc:
                self._known_bad = True
                return self._refused(exc)
            self._known_bad = False
            self._apply_spend(snap)
            if self._same_routing(snap, now):
                rt.restamp(snap)  # only the timestamp moved: nothing to rebuild
            else:
                await self._rebuild(feed=snap, now=now)
            return OK

    def _refused(self, exc: FeedError) -> str:
        self.last_error = f"{exc.reason}: {exc.detail}"
        log.warning("feed snapshot refused (%s): %s; keeping the last good one",
                    exc.reason, exc.detail)
        return INVALID

    def _same_routing(self, snap: FeedSnapshot, now: float) -> bool:
        rt = self.runtime
        old = rt.feed
        stale = snap.age(now) > rt.policy.feed.stale_after_seconds
        return (old is not None and snap.nodes == old.nodes and snap.prices == old.prices
                and stale == rt.snapshot.stale)

    def _apply_spend(self, snap: FeedSnapshot) -> None:
        """Bills for the policy's own accounts; spend of tenants it does not name is not ours
        to merge (they share the default account, whose bill the feed reports as 'default')."""
        budgets = self.runtime.policy.budgets
        for tenant, usd in snap.spend.items():
            if account_of(budgets, tenant) == tenant:
                self.runtime.ledger.apply_billing(budgets, tenant, usd, as_of=snap.generated_at)

    async def check_staleness(self) -> bool:
        """Rebuild when the snapshot's age crossed stale_after_seconds; True if it did."""
        now = self.clock()
        if not self._stale_crossed(now):
            return False
        async with self._lock:
            if not self._stale_crossed(now):
                return False
            await self._rebuild(now=now)
            return True

    def _stale_crossed(self, now: float) -> bool:
        rt = self.runtime
        if rt.feed is None:
            return False
        return (rt.feed.age(now) > rt.policy.feed.stale_after_seconds) != rt.snapshot.stale

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
                await self._rebuild(policy=policy, now=self.clock())
            self.reloader.installed(policy, old)

    async def _rebuild(self, *, policy: Policy | None = None, feed: FeedSnapshot | None = None,
                       now: float) -> None:
        snap, resources = await asyncio.to_thread(self._prepare, policy, feed, now)
        was_stale = weighted_down(self.runtime.snapshot)
        self.runtime.commit(snap)  # on the event loop: one reference swap
        if weighted_down(snap) != was_stale:
            log_staleness(snap, now)
        if self.xds is not None and resources is not None:
            self.xds.publish(resources)  # after the swap: Envoy follows what the router routes

    def _prepare(self, policy: Policy | None, feed: FeedSnapshot | None, now: float
                 ) -> tuple[Snapshot, Resources | None]:
        """The new snapshot and its Envoy resources (in a worker thread)."""
        snap = self.runtime.prepare(policy, feed, now=now)
        return snap, build_resources(snap, self.xds_options) if self.xds is not None else None

    async def _current_source(self) -> FeedSource | None:
        spec = self.runtime.policy.feed.source
        if self._source is not None and (spec is None or self._source.spec != spec):
            await self._stop_watch()
            await self._source.close()
            self._source, self._known, self._known_bad = None, "", False
        if spec is not None and self._source is None:
            self._source = open_source(spec, self.base)
        return self._source

    async def _ensure_watch(self) -> None:
        source = await self._current_source()
        if isinstance(source, GrpcSource) and (self._watcher is None or self._watcher.done()):
            self._watcher = asyncio.create_task(self._watch(source))

    async def _stop_watch(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self, source: GrpcSource) -> None:
        """Install each pushed document at once; reconnect with backoff."""
        backoff = 0.2
        while True:
            try:
                async for fetched in source.watch(self._known,
                                                  self.runtime.policy.feed.max_bytes):
                    backoff = 0.2
                    self.pushes += 1
                    self._count(await self.accept(fetched))
            except FeedUnreachable as exc:
                log.info("feed watch interrupted: %s; retrying in %.1f s", exc, backoff)
            except FeedError as exc:
                self._count(self._refused(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.feed_refresh.labels(result=result).inc()
