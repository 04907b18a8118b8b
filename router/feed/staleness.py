"""Saying when the feed in force turns stale (at start, on arrival or by age) or fresh again:
a `Runtime.on_commit` listener, so every table swap is checked, whoever made it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from router.core.feedsnapshot import format_time
from router.core.table import Snapshot
from router.runtime import Runtime

log = logging.getLogger("router.feed.refresh")


def weighted_down(snap: Snapshot) -> bool:
    """Whether `snap` routes on a stale feed (no feed at all is not a stale one)."""
    return snap.stale and snap.feed is not None


def log_staleness(snap: Snapshot, now: float) -> None:
    """Say that the feed in force turned stale or fresh."""
    if snap.feed is None:
        return
    limit = snap.policy.feed.stale_after_seconds
    if snap.stale:
        log.warning("feed snapshot in force is %.0f s old (generated %s; stale after %.0f s): "
                    "nodes weighted down by %g", snap.feed.age(now),
                    format_time(snap.feed.generated_at), limit, snap.policy.feed.stale_weight)
    else:
        log.info("feed snapshot in force is fresh again (%.0f s old)", snap.feed.age(now))


def staleness_listener(runtime: Runtime) -> Callable[[Snapshot], Callable[[], None] | None]:
    """For `runtime.on_commit`: log a prepared snapshot, once committed, when it changes
    whether routing is weighted down (it replaces `runtime.snapshot`, the table in force
    while it is prepared: one refresher prepares and commits at a time)."""
    def listener(snap: Snapshot) -> Callable[[], None] | None:
        if weighted_down(snap) == weighted_down(runtime.snapshot):
            return None
        return partial(log_staleness, snap, snap.built_at)
    return listener
