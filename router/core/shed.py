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
- 2 (u >= keep_share): sent to split or cloud first (when they meet its SLO; the
  edge stays its fallback).

Under a steady load the shares do not move, so a key keeps its mode and quality.
When the load moves, a refresh's new shares are reached over the next refresh
period (`moving`), not at once: the keys between the old and the new share change
mode one after another, each once, so the mode mix follows the load smoothly
instead of stepping at each refresh.

The shares come from demand, not from the load they leave: the router counts
every request by its key's home node (`LoadTracker.arrivals`), and at each fresh
refresh turns the count since the last one into a rate λ. By Little's law the
node's keys need N = λ × base_ms slot-seconds per second at full quality. With
room R = TARGET × slots (leaving headroom for bursts of the keys it keeps):

- N <= R: every key at full;
- N × f <= R (f: `constrained`'s latency factor): a share d of the keys degraded,
  N × (1 − d + d f) = R;
- else: every key degraded and keep_share = R / (N f).

Demand does not depend on the shares, so they do not oscillate: after a shock
(the first feed, a node lost and its keys re-homed) the first refresh sees part
of a window of the new demand and the second all of it, so the mix settles in at
most two refreshes, in one step each. Slots here are this router's: its lease
when it shares the fleet.
"""

from __future__ import annotations

from router.core.ring import hash64

TARGET = 0.75  # share of a node's slots its kept keys fill on average
MIN_WINDOW_S = 5.0  # a shorter window since the last reading keeps the share it had
UNIT = float(1 << 64)


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
    room = TARGET * slots
    if slots <= 0 or need <= room:
        return 1.0, 1.0
    if need * factor <= room:  # degrading a share d of the keys makes them fit
        return 1.0 - (need - room) / (need * (1.0 - factor)), 1.0
    return 0.0, room / (need * factor)


def moving(before: float, after: float, since: float, now: float, span: float) -> float:
    """A share going from `before` (at `since`) to `after` over `span` seconds, at `now`."""
    if before == after or now >= since + span:
        return after
    return before + (after - before) * max(0.0, now - since) / span


def tier(key: str, node_id: str, full: float, keep: float) -> int:
    """0: `key`, at home on `node_id`, keeps full quality; 1: it is served degraded;
    2: it is shed from the edge (split or cloud first)."""
    if full >= 1.0:
        return 0
    u = hash64(f"{key}|{node_id}|keep") / UNIT
    return 0 if u < full else 1 if u < keep else 2
