"""Carrying out what the runtime asks, off the event loop: a table is prepared in a worker
thread and committed on the loop, one change at a time, so a rebuild never mixes a new feed
with an old policy or the other way round."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from router.core.feedsnapshot import FeedSnapshot
from router.core.policy import Policy
from router.feed.offload import offload
from router.feed.reload import PolicyReloader, quiet_gc
from router.runtime import Intake, Runtime


class Swapper:
    """Feed intakes, staleness ticks and policy reloads for one `Runtime`, under one lock."""

    def __init__(self, runtime: Runtime, reloader: PolicyReloader,
                 clock: Callable[[], float] = time.time) -> None:
        """Swap tables into `runtime`; `reloader` reads its policy file."""
        self.runtime = runtime
        self.reloader = reloader
        self.clock = clock
        self._lock = asyncio.Lock()

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
            policy = await offload(self.reloader.check)
            if policy is None:
                return False
            await self.install_policy(policy)
        return True

    async def install_policy(self, policy: Policy) -> None:
        """Swap in a validated policy under the lock."""
        async with self._lock:
            old = self.runtime.policy.digest
            with quiet_gc():
                await self._rebuild(policy, None, self.clock())
            self.reloader.installed(policy, old)

    async def _apply(self, intake: Intake, now: float) -> None:
        """`Runtime.apply`, with the table built in a worker thread (hold the lock)."""
        self.runtime.merge_bills(intake)
        if intake.rebuild:
            await self._rebuild(None, intake.feed, now)
        elif intake.feed is not None:
            self.runtime.restamp(intake.feed)  # only the timestamps moved

    async def _rebuild(self, policy: Policy | None, feed: FeedSnapshot | None,
                       now: float) -> None:
        prepared = await offload(self.runtime.prepare, policy, feed, now=now)
        self.runtime.commit(prepared)  # on the event loop: one reference swap, then listeners
