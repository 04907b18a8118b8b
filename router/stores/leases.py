"""When to ask a shared budget store for lease, and how much (for `router.stores.redis`).

Theory of operation
-------------------
With a shared store each router admits cloud spend only against its *lease*,
headroom the store holds for it (`router.core.budget`). The keeper asks the
store, per book (account, period), for one of:

- **grow** when a request found the lease short (its `need`), when what is
  left falls below half of the last grant (the low-water mark, so a busy
  tenant rarely waits), or when the lease is halfway to its TTL (keep-alive).
  The store grants at most `share × (ceiling − committed)` (the fleet's
  `lease_fraction / replicas` of the headroom left), capped by `lease_usd` and
  by `horizon` seconds of the book's recent spend rate, and at least the need;
  a lease only grows into headroom no other replica holds, and never shrinks on
  a grow, so every hold already taken stays backed;
- **return** when the book has admitted nothing for `idle` seconds: the lease
  goes back to what is in use, for the rest of the fleet. The ledger stops
  admitting on the lease before the call (`BudgetLedger.surrender`), so the
  amount in use is exact. A book whose grow fell short of its need returns
  its lease too, at once: the headroom it lacks is leased to other replicas,
  and if they are short as well, each holding a piece too small for one
  request, nobody would ever admit it (throttled, not refused, until the
  period ends). Given back, the pieces go whole to whichever grow comes next;
  the others are throttled until they read the fleet's new spend, then
  refused for the limit if it is reached;
- **read** every `refresh` seconds otherwise, for the fleet's committed spend
  (the soft-budget check and the metrics read it from memory).

The spend rate is measured from the ledger's running total of holds, so the
ledger needs no clock; the planner uses the keeper's monotonic clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from router.core.budget import LeaseView

GROW, RETURN, READ = "grow", "return", "read"
RATE_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class Ask:
    """One call the keeper makes to the store for one book."""

    account: str
    period: str
    mode: str  # GROW, RETURN or READ
    ceiling: float
    cap: float  # most a grow may reach by rate and `lease_usd` (the store applies the share)
    need: float  # least a grow should reach (in use + the throttled request's amount)
    pinned: float  # what a return must keep (holds in flight and settled, not flushed)


@dataclass
class _Track:
    admitted: float
    seen_at: float
    rate: float = -1.0  # USD/s; negative until one window has been measured
    active_at: float = -math.inf
    asked_at: float = -math.inf
    granted: float = 0.0
    short: bool = False  # the last grow fell short of the need: the rest is held elsewhere


class LeasePlanner:
    """Decides each cycle which books to grow, return or read."""

    def __init__(self, *, share: float, cap: float, horizon: float, idle: float,
                 refresh: float, ttl: float) -> None:
        """Grow to `share` of the headroom, at most `cap` USD and `horizon` s of spend."""
        self.share, self.cap, self.horizon = share, cap, horizon
        self.idle, self.refresh, self.ttl = idle, refresh, ttl
        self._tracks: dict[tuple[str, str], _Track] = {}

    def _track(self, view: LeaseView, mono: float) -> _Track:
        key = (view.account, view.period)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(view.admitted_usd, mono)
            if view.admitted_usd > 0:
                track.active_at = mono
        moved = view.admitted_usd - track.admitted
        if moved > 0 or view.need > 0:  # admitting, or asking to: the lease is in use
            track.active_at = mono
        elapsed = mono - track.seen_at
        if elapsed >= RATE_WINDOW_S:
            rate = moved / elapsed
            track.rate = rate if track.rate < 0 else 0.5 * track.rate + 0.5 * rate
            track.admitted, track.seen_at = view.admitted_usd, mono
        return track

    def asks(self, views: list[LeaseView], mono: float, wall: float) -> list[Ask]:
        """The calls to make now, one per book at most."""
        out: list[Ask] = []
        for view in views:
            track = self._track(view, mono)
            mode = self._mode(view, track, mono, wall)
            if mode is None:
                continue
            track.asked_at = mono
            cap = self.cap
            if track.rate > 0:
                cap = min(cap, track.rate * self.horizon)
            out.append(Ask(view.account, view.period, mode, view.ceiling, cap, view.need,
                           view.in_use))
        return out

    def _mode(self, view: LeaseView, track: _Track, mono: float, wall: float) -> str | None:
        if view.ceiling == math.inf:  # no limit: no lease, only the standing to show
            return READ if mono - track.asked_at >= self.refresh else None
        valid = view.lease if wall < view.lease_until else 0.0
        busy = mono - track.active_at < self.idle
        if track.short:  # yield the piece: a replica whose grow comes first gets it all
            track.short, track.granted = False, 0.0  # and no low-water refill of it
            if valid > view.in_use + 1e-12:
                return RETURN
        if view.need > 0:
            return GROW
        if valid > view.in_use + 1e-12 and not busy:
            return RETURN
        if view.lease > 0 and wall >= view.lease_until - self.ttl / 2:
            return GROW  # keep-alive: the store would let it lapse at its TTL
        if busy and valid - view.in_use < track.granted / 2:
            return GROW
        return READ if mono - track.asked_at >= self.refresh else None

    def granted(self, ask: Ask, own: float) -> None:
        """The store answered a grow with a lease of `own`."""
        track = self._tracks.get((ask.account, ask.period))
        if track is not None and ask.mode == GROW:
            track.granted = own
            track.short = own < ask.need - 1e-12

    def forget(self, keys: set[tuple[str, str]]) -> None:
        """Drop the tracks of books the ledger no longer keeps."""
        for key in set(self._tracks) - keys:
            del self._tracks[key]
