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
rooms: keys degrade past D = DEGRADE × slots and leave the edge past
R = TARGET × slots (f: `constrained`'s latency factor):

- N <= D: every key at full;
- N × f <= D: a share d of the keys degraded, N × (1 − d + d f) = D;
- else: every key degraded and keep_share = min(1, R / (N f)).

Degrading early is what keeps keys in one mode: slots are few (3 to 16), and
at 0.75 of them busy on average a node is full often enough (Erlang) that its
keys' requests spill one at a time to split or cloud. Degraded requests are
faster, so within the SLO; keys leave the edge, at a cost, only past R.

Demand does not depend on the shares, so they do not oscillate: after a shock
the first refresh sees part of a window of the new demand and the second all of
it, so the mix settles in at most two refreshes, in one step each. Slots here are
this router's: its lease when it shares the fleet.
"""

from __future__ import annotations

from router.core.policy import LATENCY_FACTOR
from router.core.ring import hash64

DEGRADE = 0.5  # share of a node's slots its keys may fill at full quality on average
TARGET = 0.75  # share of a node's slots its kept keys fill on average, degraded
MIN_WINDOW_S = 5.0  # a shorter window since the last reading keeps the share it had
SHOCK = 0.25  # a window's demand this far off the last one's is a shock: new shares at once
UNIT = float(1 << 64)
FACTOR = LATENCY_FACTOR["constrained"]  # what a degraded request costs a node, of a full one

# A node's shares as a rebuild carries them on: (full_keep, keep_share), the shares they move
# from, the tracker's arrival count and the time they were set, the demand (req/s) then
Keeping = tuple[tuple[float, float], tuple[float, float], int, float, float]


def shares(slots: int, base_ms: float, factor: float, arrivals: int, elapsed_s: float,
           previous: tuple[float, float]) -> tuple[float, float]:
    """(full, keep): the shares of a node's home keys served at full quality and on the edge
    at all (module docstring); too short a window keeps `previous`.

    `factor` is the latency factor of the first degraded quality: a key between the two
    shares is served degraded, which costs the node that factor of a full request.
    """
    if elapsed_s < MIN_WINDOW_S:
        return previous
    need = arrivals / elapsed_s * base_ms / 1000.0  # slot-seconds per second, all at full
    room = DEGRADE * slots
    if slots <= 0 or need <= room:
        return 1.0, 1.0
    if need * factor <= room:  # degrading a share d of the keys makes them fit
        return 1.0 - (need - room) / (need * (1.0 - factor)), 1.0
    return 0.0, min(1.0, TARGET * slots / (need * factor))


def moving(before: float, after: float, since: float, now: float, span: float) -> float:
    """A share going from `before` (at `since`) to `after` over `span` seconds, at `now`."""
    if before == after or now >= since + span:
        return after
    return before + (after - before) * max(0.0, now - since) / span


def origin(reached: tuple[float, float], new: tuple[float, float], before: float,
           demand: float) -> tuple[float, float]:
    """Where a refresh's `new` shares move from: where the last move had `reached`; or
    `new` itself, taken at once, after a shock: no demand known `before` (the first
    reading), or `demand` (arrivals per second) off the last window's by over SHOCK."""
    if before < 0.0 or abs(demand - before) > SHOCK * max(demand, before):
        return new
    return reached


def keeping(count: int, slots: int, base_ms: float, before: Keeping | None, fresh: bool,
            now: float, span: float) -> Keeping:
    """A node's shares rebuilt at `now`, `count` arrivals at its home counted so far, from
    what the node it replaces carried (`before`; None: a new node). `fresh`: a new feed
    reading; a policy reload, or too short a window since `before`, keeps them."""
    if before is None:
        return (1.0, 1.0), (1.0, 1.0), count, now, -1.0
    was, moved_from, seen, since, demand_before = before
    elapsed = now - since
    if not fresh or elapsed < MIN_WINDOW_S:
        return before
    arrived = count - seen
    new = shares(slots, base_ms, FACTOR, arrived, elapsed, was)
    # moving on from where the previous move had got to
    reached = (moving(moved_from[0], was[0], since, now, span),
               moving(moved_from[1], was[1], since, now, span))
    demand = arrived / elapsed
    return new, origin(reached, new, demand_before, demand), count, now, demand


def tier(key: str, node_id: str, full: float, keep: float) -> int:
    """0: `key`, at home on `node_id`, keeps full quality; 1: it is served degraded;
    2: it is shed from the edge (split or cloud first)."""
    if full >= 1.0:
        return 0
    u = hash64(f"{key}|{node_id}|keep") / UNIT
    return 0 if u < full else 1 if u < keep else 2
