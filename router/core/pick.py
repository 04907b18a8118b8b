"""The bounded-load picker: one walk of a class's weighted ring (see `router.core.ring`).

The walk starts at hash64(key) and takes the first member node that is under
its bounded-load cap (with the utilization floor), its physical slots and this
router's lease of them (`router.core.capacity`; unlimited for a router alone).
It writes nothing: it returns the node it took and the nodes it passed, as found
(`Walk`), which explain renders and admission reads for unmet demand (the first
node each walk passed for want of lease only, counted in the tracker's `blocked`;
explain's plans count nothing). The first node on the ring is the key's *home*;
a key leaves its home only while the home is at its cap. The same walk over the
nodes' feature slots (counted apart from inference slots) places split
extractions, so a split is possible exactly when the edge's inference slots are
full. When every node the inference walk passed is full, it offers a place in a
node's queue (`queue`, `edge.queue_per_slot`), its wait in `Pick.wait_ms`: the
plan ranks it with that wait in its estimate, so a wait that meets the SLO keeps
the request on the edge and one that misses it leaves it to split or cloud. With a
queue, a walk that passed the key's home for its slots alone (not its cap) also
offers the home's queue (`home_queue`): the plan takes it over the node with room
when the key's rung there, wait included, meets its SLO, as that node would serve
it cold.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from typing import NamedTuple

from router import wire
from router.core.decision import Candidate
from router.core.loads import UNLEASED
from router.core.ring import hash64
from router.core.table import ClassEntry, NodeRt, Snapshot

# A key's hash is needed on every request and keys repeat (sessions, cameras): memoized,
# bounded, it costs a dictionary lookup instead of a blake2b digest.
_key_hash = functools.lru_cache(maxsize=1 << 16)(hash64)


class Pick(NamedTuple):
    """The node a walk reached, whether it is the key's home, and its load and cap then."""

    node: NodeRt
    home: bool
    load: int
    cap: int
    wait_ms: float = 0.0  # > 0: queued, every node the walk passed full (`queue`)


class Step(NamedTuple):
    """A node the walk passed without taking it, as it found it."""

    node: NodeRt
    load: int
    cap: int  # its bounded-load cap
    slots: int  # the slots it could use: its own, or this router's lease of them if fewer
    leased: bool  # this router holds a lease of its slots (a fleet's shared store)
    slot: int  # its load-tracker slot
    short: bool  # room on the node, none left in this router's lease (unmet demand)


class Walk(NamedTuple):
    """One walk: the node it took (None: none under its cap) and the nodes it passed first."""

    pick: Pick | None
    passed: tuple[Step, ...] = ()
    home_wait: bool = False  # queued at the key's home, passed first, though a node had room


NOWHERE = Walk(None)


def pick_edge(entry: ClassEntry, snap: Snapshot, key: str) -> Walk:
    """Bounded-load walk over inference slots: the first node under its cap."""
    total = snap.tracker.total(entry.gid, entry.member_slots)
    return _walk(entry, snap, key, total, False)


def pick_feature(entry: ClassEntry, snap: Snapshot, key: str) -> Walk:
    """The same walk over feature slots (where a split extracts features)."""
    total = snap.tracker.total(entry.fgid, entry.feature_slots)
    return _walk(entry, snap, key, total, True)


def home_of(entry: ClassEntry, snap: Snapshot, key: str) -> NodeRt | None:
    """The key's home: the first node on the class's ring from its hash (None: no members)."""
    keys = entry.ring.keys
    if not keys:
        return None
    pos = bisect_right(keys, _key_hash(key))
    return snap.nodes[entry.ring.owners[pos if pos < len(keys) else 0]]


def _cap(value: float, floor: int) -> int:
    """ceil(`value`), at least `floor`: a node's bounded-load cap (router.core.ring.cap)."""
    limit = int(value)
    if limit != value:
        limit += 1
    return floor if floor > limit else limit


def _walk(entry: ClassEntry, snap: Snapshot, key: str, total: int, features: bool) -> Walk:
    keys = entry.ring.keys
    n = len(keys)
    if n == 0:
        return NOWHERE
    loads, held = snap.tracker.loads, snap.tracker.held
    where = snap.walk_features if features else snap.walk_inference
    weights, floors = snap.walk_weights, snap.walk_floors
    wsum = entry.weight_sum
    # cap_i = max(ceil((1 + eps)(L + 1) w_i / sum w), floor_i): router.core.ring.cap's
    # arithmetic in its order (the same float rounding), the constant part hoisted
    scale = (1.0 + snap.epsilon) * (total + 1)
    owners = entry.ring.owners
    start = bisect_right(keys, _key_hash(key))
    # the common case first: the key's home has room (the loop below decides it alike)
    owner = owners[start if start < n else 0]
    slot, size = where[owner]
    load = loads[slot]
    limit = _cap(scale * weights[owner] / wsum if wsum > 0 else 0.0, floors[owner])
    if load < size and load < held[slot] and load < limit:
        return Walk(Pick(snap.nodes[owner], True, load, limit), ())
    want = len(entry.ring.members)
    seen: set[int] = set()
    passed: list[Step] | None = None  # built only when the walk passes a node
    for pos in range(start, start + n):
        owner = owners[pos - n if pos >= n else pos]
        if owner in seen:
            continue
        seen.add(owner)
        slot, size = where[owner]
        load = loads[slot]
        limit = _cap(scale * weights[owner] / wsum if wsum > 0 else 0.0, floors[owner])
        lease = held[slot]
        if load < size and load < lease and load < limit:
            return Walk(Pick(snap.nodes[owner], passed is None, load, limit),
                        () if passed is None else tuple(passed))
        if passed is None:
            passed = []
        passed.append(Step(snap.nodes[owner], load, limit, min(size, lease),
                           lease < UNLEASED, slot, lease <= load < size))
        if len(seen) == want:
            break
    if passed is None:
        return NOWHERE
    steps = tuple(passed)
    if not features and snap.queue_per_slot > 0.0:
        return Walk(queue(steps, snap.queue_per_slot), steps)
    return Walk(None, steps)


def queue(passed: tuple[Step, ...], per_slot: float) -> Pick | None:
    """A place in a node's queue once the walk found every node full: the first node in
    walk order (the key's home first) whose slots are all busy and that holds fewer than
    `per_slot` × its slots waiting, its load still under its bounded-load cap (a queue
    never takes a node past its share); None: none.

    Its wait is that of a place behind the requests already queued there: each of them,
    and this one, waits for one of the node's slots to free, taken at the node's unloaded
    tail (tail_ms / slots each), as the SLO the wait is held against is met or missed per
    request.
    """
    for i, step in enumerate(passed):
        place = _place(step, per_slot, i == 0)
        if place is not None:
            return place
    return None


def _place(step: Step, per_slot: float, home: bool) -> Pick | None:
    """A place in the queue of the node `step` passed, when its slots are all busy, fewer
    than `per_slot` × its slots wait and it is under its cap; its wait behind those queued."""
    full, load = step.slots, step.load
    if full <= 0 or load < full or load >= step.cap or load >= full + int(per_slot * full):
        return None
    return Pick(step.node, home, load, step.cap, (load - full + 1) * step.node.tail_ms / full)


def home_queue(walk: Walk, per_slot: float) -> Pick | None:
    """A place in the key's home's queue for a request the walk took to another node: the
    home passed first for want of slots (not of its cap), with fewer than `per_slot` × its
    slots waiting; its wait as `queue` counts it. None: the walk stayed home, found no
    room anywhere (then `queue` has already been asked), or the home cannot take it.

    Whether the request waits there instead of going to the other node cold is the plan's
    (`router.core.plan`): only when its rung at home, wait included, meets its SLO.
    """
    pick = walk.pick
    if pick is None or pick.home or pick.wait_ms > 0.0 or not walk.passed or per_slot <= 0.0:
        return None
    return _place(walk.passed[0], per_slot, True)


def notes_of(walk: Walk, features: bool) -> list[Candidate]:
    """What explain says of a walk: every node passed and why, then the one taken."""
    mode = wire.MODE_SPLIT if features else wire.MODE_EDGE
    out: list[Candidate] = []
    for step in walk.passed:
        node = step.node
        why = "at its bounded-load cap"
        if step.load >= step.slots:
            why = "out of leased slots" if step.leased else "out of slots"
        out.append(Candidate(node.id, mode, f"features: {why}" if features else why,
                             node.est_ms, node.cost_usd, load=step.load,
                             cap=min(step.cap, step.slots)))
    if walk.pick is not None:
        pick = walk.pick
        what = "features: picked by the walk over feature slots" if features \
            else "picked by bounded-load walk"
        if walk.home_wait:
            out.pop(0)  # the home passed, then queued at after all (`home_queue`)
            what = (f"queued at the key's home: waits ~{pick.wait_ms:.0f} ms for a slot, within "
                    "its SLO, rather than go to another node cold")
        elif pick.wait_ms > 0.0:
            what = f"queued: every node full, waits ~{pick.wait_ms:.0f} ms for a slot"
        out.append(Candidate(pick.node.id, mode, what, pick.node.est_ms, pick.node.cost_usd,
                             load=pick.load, cap=pick.cap))
    return out
