"""Which keys a node keeps, and at which quality: hash-stable shares set per refresh from demand.

Theory of operation
-------------------
A key's mode should follow the load, not the instant: if requests left a full
node one at a time whenever its slots happened to be taken, the same camera's
consecutive frames would hop between edge, degraded and split at random. So the
choice is made for *keys*. Each node carries two shares, `full_keep` <= `keep_share`;
a key at home on the node, with hash u = unit(key, node), is in tier

- 0 (u < full_keep): served at full quality;
- 1 (full_keep <= u < keep_share): served degraded (`constrained`) when it accepts it;
- 2 (u >= keep_share): sent to split or cloud first, even when neither meets its
  SLO (then a pool before a split, whose feature slot comes and goes): on the edge
  whenever a slot happened to be free, these keys would fill the room sized for
  the others and every key of the node would spill at random instants. The edge
  stays their fallback.

Under a steady load the shares do not move, so a key keeps its mode and quality.
When the load moves, a refresh's new shares are reached over the next refresh
period (`moving`), not at once: the keys between the old and the new share change
mode one after another, each once, so the mode mix follows the load smoothly
instead of stepping at each refresh. After a shock (`origin`: the first reading,
or a window's demand more than a quarter off the last one's, as when a node is lost
and its keys re-home) the new shares are taken at once instead.

The shares come from demand, not from the load they leave: the router counts
every request by its key's home node (`LoadTracker.arrivals`), and at each fresh
refresh turns the count since the last one into a rate λ. By Little's law the
node's keys need N = λ × base_ms slot-seconds per second at full quality. Two
rooms: keys degrade past D = min(DEGRADE, F) × slots and leave the edge past
R = F × slots, f being `constrained`'s latency factor, F the fill target (`fill`)
and slots those its keys may use on the node (up to its bounded-load cap):

- N <= D: every key at full;
- N × f <= D: a share d of the keys degraded, N × (1 − d + d f) = D;
- else: every key degraded and a share keep = min(1, R / (N f)) of them kept.

A request that cannot degrade costs its node a full one in any tier, so f is the
window's mix: f + (1 − f) × the share of requests that cannot degrade.

Which keys leave. Shedding costs nothing to a key whose class meets its SLO off
the edge (a batch class of 300 ms, in the cloud) and the SLO to one whose class
does not, so the keys leave in that order: the loose keys' share of the load
(counted apart while the node degrades, by the same estimate the ladder ranks
with) goes first, `keep_loose`, and only what it does not cover takes tight
keys, `keep_share` (`by_class`). A node with one kind of request has one share.

Degrading early is what keeps keys in one mode: slots are few (3 to 16), and a
kept key's request that finds every slot it may walk to busy waits in a queue
(`router.core.pick.queue`) or, past it or past its SLO, spills to split or cloud,
one request at a time. So F is sized by Erlang B for the slots its keys
may walk to (`walkable`: the nodes in the ring with its residency or more and a
model in common, each counted up to its bounded-load cap): the load at which at
most BLOCKING of their requests find them all busy, and at most TARGET. A lone
8-slot node (the only one with a residency) fills 0.45 of its slots; 24 slots
that pool their overflow fill 0.69. Degraded requests are faster, so within the
SLO; keys leave the edge, at a cost, only past R.

A node away. While a node is out of the ring (lost, unhealthy, weight 0) its keys
are homed on the others and it counts no arrivals: a window read then would say
it has no demand, and the keys coming back with it would start at full quality
for a refresh, then be degraded at the next. So a node away, and the node at
the first build it is back, holds the shares it had when it left and restarts
its demand window; the first window it has spent in the ring sets them again.

Quality recovers slowly. A production trace's demand swings from one window to the
next (±15 % on fintech-trace's nodes) though the load is steady, and the full share
follows it steeply: with `constrained` at 0.6 the share at full moves 2.5 points for
each point of demand, so the keys at its margin would hop between full and degraded
at every refresh. So the full share is sized for a held demand: a window's own when
it is higher (degrading is never late), or a shock off the held one (taken at once,
as above); a lower one moves it only RECOVER of the way down each refresh. The share
kept on the edge at all follows each window's demand, as it costs money.

Demand does not depend on the shares, so they do not oscillate: after a shock
the first refresh sees part of a window of the new demand and the second all of
it, so the mix settles in at most two refreshes, in one step each. F depends
only on the slots and the ring, not on the load. Slots here are this router's:
its lease when it shares the fleet.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from router.core.policy import LATENCY_FACTOR
from router.core.ring import cap, hash64

DEGRADE = 0.5  # share of a node's slots its keys may fill at full quality on average
TARGET = 0.75  # share of a node's slots its kept keys fill on average, degraded, at most
BLOCKING = 0.02  # share of kept keys' requests that may find every slot they can walk to busy
MIN_WINDOW_S = 5.0  # a shorter window since the last reading keeps the share it had
SHOCK = 0.25  # a window's demand this far off the last one's is a shock: new shares at once
RECOVER = 0.5  # how far down a window's lower demand moves the full share's, each refresh
UNIT = float(1 << 64)
FACTOR = LATENCY_FACTOR["constrained"]  # what a degraded request costs a node, of a full one

# A node's shares: (full, kept of the keys whose class misses its SLO off the edge, kept of
# those that meet it); the tracker's counts at a refresh: arrivals, rigid (cannot degrade),
# loose (their class meets its SLO off the edge), loose and rigid; a node's shares as a
# rebuild carries them on: its shares, the shares they move from, the counts and the time
# they were set, the demand (req/s) held then (`holding`)
Shares = tuple[float, float, float]
Counts = tuple[int, int, int, int]
Keeping = tuple[Shares, Shares, Counts, float, float]


def erlang_b(servers: int, offered: float) -> float:
    """Share of arrivals that find all `servers` busy at `offered` Erlangs (Erlang B)."""
    blocked = 1.0
    for k in range(1, servers + 1):
        blocked = offered * blocked / (k + offered * blocked)
    return blocked


@functools.lru_cache(maxsize=1024)
def fill(pooled: int) -> float:
    """The share of its slots a node's kept keys may fill on average when they can walk to
    `pooled` slots in all: the load at which Erlang B blocks BLOCKING of them, at most
    TARGET (so a lone 8-slot node fills 0.45 of them, a pool of 24 slots 0.69)."""
    if pooled <= 0:
        return TARGET
    low, high = 0.0, float(pooled)
    for _ in range(40):  # bisection: blocking rises with the load
        mid = (low + high) / 2.0
        low, high = (low, mid) if erlang_b(pooled, mid) > BLOCKING else (mid, high)
    return min(TARGET, low / pooled)


def walkable(nodes: Sequence[tuple[frozenset[str], frozenset[str], int, float]],
             epsilon: float) -> list[tuple[int, int]]:
    """Per node (residency, models, slots, ring weight; weight 0: out of the ring): the
    slots its keys may use on it, up to its bounded-load cap with every slot they may walk
    to busy (`cap`), and the slots of every node they may walk to (in the ring, its
    residency or more, a model in common), counted alike. Nodes are grouped by kind, so
    the cost is nodes × kinds."""
    mates = {(r, m): [j for j, (r2, m2, _, w) in enumerate(nodes) if w > 0 and r2 >= r and
                      ("*" in m or "*" in m2 or bool(m & m2))]
             for r, m in {(r, m) for r, m, _, _ in nodes}}
    totals = {kind: (sum(nodes[j][3] for j in near), sum(nodes[j][2] for j in near))
              for kind, near in mates.items()}
    usable = []
    for residency, models, slots, weight in nodes:
        total_w, total_s = totals[residency, models]
        usable.append(min(slots, cap(total_s - 1, weight, total_w, epsilon))
                      if total_w > 0 else slots)
    pooled = {kind: sum(usable[j] for j in near) for kind, near in mates.items()}
    return [(usable[i], pooled[r, m] if w > 0 else usable[i])
            for i, (r, m, _, w) in enumerate(nodes)]


def shares(slots: int, base_ms: float, factor: float, arrivals: float, elapsed_s: float,
           previous: tuple[float, float], pooled: int = 0) -> tuple[float, float]:
    """(full, keep): the shares of a node's home keys served at full quality and on the edge
    at all (module docstring); too short a window keeps `previous`.

    `factor` is the latency factor of the first degraded quality: a key between the two
    shares is served degraded, which costs the node that factor of a full request.
    `pooled`: the slots its keys may walk to (`fill`; 0: its own).
    """
    if elapsed_s < MIN_WINDOW_S:
        return previous
    need = arrivals / elapsed_s * base_ms / 1000.0  # slot-seconds per second, all at full
    target = fill(pooled or slots)
    room = min(DEGRADE, target) * slots
    if slots <= 0 or need <= room:
        return 1.0, 1.0
    if need * factor <= room:  # degrading a share d of the keys makes them fit
        return 1.0 - (need - room) / (need * (1.0 - factor)), 1.0
    return 0.0, min(1.0, target * slots / (need * factor))


def by_class(keep: float, cost: float, loose_cost: float) -> tuple[float, float]:
    """(tight, loose): the shares of a node's keys kept on the edge when `keep` of them all
    would be, shedding first those whose class meets its SLO off the edge (`loose_cost` of
    the window's `cost`, both in full inferences degraded). Where all of them are of one
    kind, both shares are `keep`."""
    if keep >= 1.0 or loose_cost <= 0.0 or loose_cost >= cost:
        return keep, keep
    shed = (1.0 - keep) * cost
    if shed <= loose_cost:
        return 1.0, 1.0 - shed / loose_cost
    return max(0.0, 1.0 - (shed - loose_cost) / (cost - loose_cost)), 0.0


def moving(before: float, after: float, since: float, now: float, span: float) -> float:
    """A share going from `before` (at `since`) to `after` over `span` seconds, at `now`."""
    if before == after or now >= since + span:
        return after
    return before + (after - before) * max(0.0, now - since) / span


def origin(reached: Shares, new: Shares, before: float, demand: float) -> Shares:
    """Where a refresh's `new` shares move from: where the last move had `reached`; or
    `new` itself, taken at once, after a shock: no demand known `before` (the first
    reading), or `demand` (arrivals per second) off the last window's by over SHOCK."""
    if before < 0.0 or abs(demand - before) > SHOCK * max(demand, before):
        return new
    return reached


def keeping(count: Counts, slots: tuple[int, int], base_ms: float, before: Keeping | None,
            fresh: bool, now: float, span: float, away: bool = False) -> Keeping:
    """A node's shares rebuilt at `now`, `count` what the tracker counted at its home so far, from
    what the node it replaces carried (`before`; None: a new node); `slots`: those its keys
    may use on it and those they may walk to (`walkable`). `fresh`: a new feed reading; a
    policy reload, or too short a window since `before`, keeps them. `away`: the node is
    out of the ring now or was at the last build (module docstring, "A node away")."""
    if before is None:
        return (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), count, now, -1.0
    was, moved_from, seen, since, demand_before = before
    elapsed = now - since
    if not fresh or elapsed < MIN_WINDOW_S:
        return before
    # moving on from where the previous move had got to
    reached = (moving(moved_from[0], was[0], since, now, span),
               moving(moved_from[1], was[1], since, now, span),
               moving(moved_from[2], was[2], since, now, span))
    if away:  # its keys were homed elsewhere: hold the shares, count afresh from now
        return reached, reached, count, now, demand_before
    arrived, rigid, loose, loose_rigid = (c - s for c, s in zip(count, seen, strict=True))
    # what the window's requests cost their node degraded, each that cannot degrade whole
    factor = FACTOR + (1.0 - FACTOR) * rigid / arrived if arrived > 0 else FACTOR
    demand = arrived / elapsed
    held = holding(demand_before, demand)
    full = shares(slots[0], base_ms, factor, held * elapsed, elapsed, was[:2], slots[1])[0]
    keep = shares(slots[0], base_ms, factor, arrived, elapsed, was[:2], slots[1])[1]
    new = (full, *by_class(keep, FACTOR * (arrived - rigid) + rigid,
                           FACTOR * (loose - loose_rigid) + loose_rigid))
    return new, origin(reached, new, demand_before, demand), count, now, held


def holding(before: float, demand: float) -> float:
    """The demand a node's full-quality share is sized for: a window's own when it is more
    than the last one held, or a shock off it; else the held demand moves RECOVER of the
    way down (module docstring, "Quality recovers slowly")."""
    if before < 0.0 or demand >= before or before - demand > SHOCK * before:
        return demand
    return before + RECOVER * (demand - before)


def tier(key: str, node_id: str, full: float, keep: float) -> int:
    """0: `key`, at home on `node_id`, keeps full quality; 1: it is served degraded;
    2: it is shed from the edge (split or cloud first)."""
    if full >= 1.0:
        return 0
    u = hash64(f"{key}|{node_id}|keep") / UNIT
    return 0 if u < full else 1 if u < keep else 2
