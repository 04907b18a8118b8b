"""What the budget ledger and a store's keeper hand each other (`router.core.budget`).

The ledger appends `Held`, `Settled` and `Billed` entries to its outbox, in the
order they happened; the keeper writes them to the store in that order and
acknowledges them. A shared store's view of one book comes back as a
`Standing`; the keeper reads each book as a `LeaseView` to decide its lease.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.core.spend import Reservation


@dataclass(frozen=True, slots=True)
class Held:
    """Outbox entry: a request was admitted holding `reservation`."""

    reservation: Reservation


@dataclass(frozen=True, slots=True)
class Settled:
    """Outbox entry: a request ended costing `actual`."""

    reservation: Reservation
    actual: float
    seq: int = 0  # the ledger's count of settlements: a store skips one it already applied


@dataclass(frozen=True, slots=True)
class Billed:
    """Outbox entry: the billing feed's spend as of `as_of` (see `router.core.spend`)."""

    account: str
    period: str
    usd: float
    as_of: float | None


Entry = Held | Settled | Billed


@dataclass(frozen=True, slots=True)
class Standing:
    """A shared store's view of one book, as the keeper read it."""

    committed: float  # fleet-wide: flushed settlements and bills
    lease: float  # this process's lease
    lease_until: float  # ledger time until which the lease may be spent locally


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What the keeper reads of one book to keep its lease right."""

    account: str
    period: str
    ceiling: float
    in_use: float  # own holds + unflushed holds: the part of the lease that is spoken for
    lease: float
    lease_until: float
    need: float  # the largest in_use + amount a throttled request asked for
    admitted_usd: float  # all holds ever taken (the keeper derives a spend rate)
