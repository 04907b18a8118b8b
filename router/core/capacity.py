"""Capacity leases: how the routers of one fleet share each node's slots (pure).

Theory of operation
-------------------
A node's `slots` (likewise its `feature_slots` and a pool's `max_inflight`) are
one capacity C for the whole fleet, however many routers admit onto it. Each
router admits onto a resource only within its *lease* of it, a whole number of
slots the shared store holds for it. Invariant: the leases of all live routers
on one resource never add up to more than C, so neither do their requests.

Why it holds. The store changes a lease only through `settle` (one atomic Lua
script in Redis, one transaction in SQLite), for one router at a time:

1. the router's lease first drops to `keep`, what the router itself still
   admits on (it stopped admitting above that before the call, so nothing in
   flight loses its backing);
2. it grows only into slots no live lease holds (`free = C − Σ leases`).

A lease that is not renewed within its TTL lapses (its router died) and its
slots are free again. So Σ leases ≤ C after every call, in any interleaving.

Fairness. Every call also computes the router's *target* (`fair`): max-min fair
by demand (water-filling: each router gets min(demand, level), the level as
high as C allows); what demand leaves over is spread evenly, so at low load
every router holds room on every node and a key reaches its home node through
any gateway. A router over its target keeps the excess while no other router
is short of its own target (beyond the free slots); when one is, it does not
give slots back in the store at once: it stops admitting above its target at
the reply, and hands the rest back
as `keep` at its next call (less what is still in flight above the target,
which goes back at a later call), where a busy router can grow into it at that
router's next call. A demand shift is followed within about three sync periods
plus the time requests take.

Demand (`demand`): what the router has in flight at the sync, plus the
requests since the last one whose walk found no room anywhere in its leases,
each counted at the first node it passed for want of lease only
(`router.core.admit`). A walk that went on to leased room elsewhere asks for
nothing: its request is served on slots the router holds, and counting it
would move a home slot from router to router for a request already placed (at
twice the edge's load such churn left a tenth of the slots idle in transit). A
busy router's demand is then large and an idle one's small, so max-min
fairness hands the busy one what the idle ones do not use, and a router that
asked too little finds its turned-away requests in its next demand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router.core.loads import UNLEASED
from router.core.table import FEATURES, Snapshot

__all__ = ["POOL", "UNLEASED", "Resource", "demand", "fair", "held_after", "keep", "resources",
           "safe_share", "settle"]
POOL = "pool:"  # store name prefix of a pool's max_inflight


@dataclass(frozen=True, slots=True)
class Resource:
    """One leased capacity: a node's slots, its feature slots or a pool's max_inflight."""

    name: str  # store key: node id, node id + '#features', or 'pool:' + pool id
    slot: int  # the load tracker's slot that counts it
    capacity: int


def resources(snap: Snapshot) -> list[Resource]:
    """The leased capacities of a snapshot: every node's slots and feature slots, and
    every pool with a `max_inflight` (0 there means unlimited: not leased)."""
    out: list[Resource] = []
    for n in snap.nodes:
        out.append(Resource(n.id, n.slot, max(0, n.slots)))
        out.append(Resource(n.id + FEATURES, n.feature_slot, max(0, n.feature_slots)))
    out += [Resource(POOL + p.id, p.slot, p.max_inflight) for p in snap.pools
            if p.max_inflight > 0]
    return out


def fair(capacity: int, demands: Mapping[str, int]) -> dict[str, int]:
    """Max-min fair whole-slot targets of `demands` on `capacity`, leftover spread evenly.

    Ties (fewer slots than routers still short) go to the largest shortfall, then by
    name; the even spread's remainder goes to the largest demands first (then by
    name), so a spare slot goes where it is used. The store's Lua mirrors this.
    """
    names = sorted(demands)
    alloc = dict.fromkeys(names, 0)
    left = max(0, capacity)
    want = {n: max(0, demands[n]) for n in names}
    active = [n for n in names if want[n] > 0]
    while left > 0 and active:
        each = left // len(active)
        if each == 0:
            short = sorted(active, key=lambda n: (alloc[n] - want[n], n))
            for n in short[:left]:
                alloc[n] += 1
            left = 0
            break
        for n in active:
            give = min(each, want[n] - alloc[n])
            alloc[n] += give
            left -= give
        active = [n for n in active if alloc[n] < want[n]]
    if left > 0 and names:
        each, extra = divmod(left, len(names))
        for i, n in enumerate(sorted(names, key=lambda n: (-want[n], n))):
            alloc[n] += each + (1 if i < extra else 0)
    return alloc


def settle(capacity: int, leases: Mapping[str, int], demands: Mapping[str, int],
           member: str, keep: int) -> tuple[int, int]:
    """(new lease, target) of `member` after one call; see the module docstring.

    `leases` and `demands` are every live router's, `member`'s own included
    (its demand already updated); `keep` is what `member` still admits on. The
    target is the fair one, raised to what `member` may keep because nobody is
    short of theirs (beyond the free slots): a slot is given back only when
    another router wants it, so demand that moves faster than the syncs leaves
    no slot idle.
    """
    own = min(leases.get(member, 0), max(0, keep))
    targets = fair(capacity, demands)
    others = sum(v for m, v in leases.items() if m != member)
    free = capacity - others - own
    target = targets.get(member, 0)
    new = own + max(0, min(target - own, free)) if target > own else own
    short = sum(max(0, t - leases.get(m, 0)) for m, t in targets.items() if m != member)
    wanted = max(0, short - (capacity - others - new))
    return new, max(target, new - wanted)


def held_after(lease: int, target: int) -> int:
    """What a router admits up to after the store's reply: its lease, or its target if less.

    Requests already in flight above it run to their end; until they have, the
    router reports them in `keep` (`keep`), so they stay backed in the store.
    """
    return min(lease, target)


def keep(held: int, load: int) -> int:
    """What a router tells the store it still needs backed: what it admits up to, or more
    while requests above that are still in flight."""
    return max(held, load)


def demand(load: int, blocked: int) -> int:
    """The demand a router reports for a resource: what it has in flight now, plus the
    requests since its last sync that found no leased room and passed it first."""
    return load + blocked


def safe_share(capacity: int, members: int) -> int:
    """What a router cut off from the store admits on once its lease lapsed: C / N, floored.

    With N the fleet's size when the store last answered, every router falling back
    together stays within C.
    """
    return max(0, capacity) // max(1, members)
