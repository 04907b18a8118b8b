"""A cloud pool in the simulated world: its price, reachability and capacity.

A pool is elastic unless the policy bounds it (`max_inflight`, a reservation's
`reserved_slots`). A spot reclaim notice lowers what the feed says it offers
(`available`) at once; the reclaim itself, `notice_s` later, shrinks its
capacity and ends what the instances that went were computing (`reclaim`).
"""

from __future__ import annotations

from router.core.policy import CloudPool


class Pool:
    """A cloud pool: elastic (or up to its capacity), unless partitioned or reclaimed."""

    __slots__ = ("available", "busy", "cap", "partitioned_until", "price", "spec")

    def __init__(self, spec: CloudPool) -> None:
        """The pool at its policy price, reachable, all its capacity offered."""
        self.spec = spec
        self.price = spec.usd_per_hour
        self.partitioned_until = -1.0
        self.available = 1.0  # share of the capacity a spot notice leaves (what the feed says)
        self.cap: int | None = spec.capacity or None  # requests at once; None: elastic
        self.busy = 0  # requests it is computing

    def full(self) -> bool:
        """Whether a request arriving now finds no capacity (a reclaimed or full pool)."""
        return self.cap is not None and self.busy >= self.cap

    def reclaim(self, fraction: float, computing: int) -> int:
        """Take `fraction` of the capacity away now; how many of the `computing` requests
        were on the instances that went (a bounded pool's excess over what is left; an
        elastic pool's load was spread evenly, so that fraction of it; all of it at 1)."""
        if self.cap is not None:
            self.cap = int(self.cap * (1.0 - fraction))
            return max(0, computing - self.cap)
        if fraction >= 1.0:
            self.cap = 0
            return computing
        return round(fraction * computing)
