"""The bounded-load picker: one walk of a class's weighted ring (see `router.core.ring`).

The walk starts at hash64(key) and takes the first member node that is under
its bounded-load cap (with the utilization floor), its physical slots and this
router's lease of them (`router.core.capacity`; unlimited for a router alone).
The first node a walk passes for want of lease only is counted in the
tracker's `blocked` (once per walk): the one thing a walk writes, read by the
capacity keeper as unmet demand (explain's walk counts nothing). The
first node on the ring is the key's *home*; a key leaves its home only while
the home is at its cap. The same walk over the nodes' feature slots (counted
apart from inference slots) places split extractions, so a split is possible
exactly when the edge's inference slots are full.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from router import wire
from router.core.decision import Candidate
from router.core.loads import UNLEASED
from router.core.ring import cap, hash64
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


def pick_edge(entry: ClassEntry, snap: Snapshot, key: str,
              notes: list[Candidate] | None = None) -> Pick | None:
    """Bounded-load walk over inference slots: the first node under its cap, or None."""
    total = snap.tracker.total(entry.gid, entry.member_slots)
    return _walk(entry, snap, key, total, False, notes)


def pick_feature(entry: ClassEntry, snap: Snapshot, key: str,
                 notes: list[Candidate] | None = None) -> Pick | None:
    """The same walk over feature slots (where a split extracts features), or None."""
    total = snap.tracker.total(entry.fgid, entry.feature_slots)
    return _walk(entry, snap, key, total, True, notes)


def home_of(entry: ClassEntry, snap: Snapshot, key: str) -> NodeRt | None:
    """The key's home: the first node on the class's ring from its hash (None: no members)."""
    keys = entry.ring.keys
    if not keys:
        return None
    pos = bisect_right(keys, _key_hash(key))
    return snap.nodes[entry.ring.owners[pos if pos < len(keys) else 0]]


def _walk(entry: ClassEntry, snap: Snapshot, key: str, total: int, features: bool,
          notes: list[Candidate] | None) -> Pick | None:
    keys = entry.ring.keys
    n = len(keys)
    if n == 0:
        return None
    if notes is not None:
        return _walk_explained(entry, snap, key, total, features, notes)
    tracker = snap.tracker
    loads, held, blocked = tracker.loads, tracker.held, tracker.blocked
    where = snap.walk_features if features else snap.walk_inference
    weights, floors = snap.walk_weights, snap.walk_floors
    wsum = entry.weight_sum
    # cap_i = max(ceil((1 + eps)(L + 1) w_i / sum w), floor_i): router.core.ring.cap's
    # arithmetic in its order (the same float rounding), the constant part hoisted
    scale = (1.0 + snap.epsilon) * (total + 1)
    owners = entry.ring.owners
    start = bisect_right(keys, _key_hash(key))
    want = len(entry.members)
    seen: set[int] = set()
    first = unmet = True
    for pos in range(start, start + n):
        owner = owners[pos - n if pos >= n else pos]
        if owner in seen:
            continue
        seen.add(owner)
        slot, size = where[owner]
        load = loads[slot]
        if load < size:
            if load >= held[slot]:
                if unmet:  # room on the node, none in this router's lease: counted once
                    blocked[slot] += 1
                    unmet = False
            else:
                value = scale * weights[owner] / wsum if wsum > 0 else 0.0
                limit = int(value)
                if limit != value:
                    limit += 1
                floor = floors[owner]
                if floor > limit:
                    limit = floor
                if load < limit:
                    return Pick(snap.nodes[owner], first, load, limit)
        first = False
        if len(seen) == want:
            break
    return None


def _walk_explained(entry: ClassEntry, snap: Snapshot, key: str, total: int, features: bool,
                    notes: list[Candidate]) -> Pick | None:
    """The same walk, noting every node it passes and why (explain): `cap` per node."""
    keys = entry.ring.keys
    n = len(keys)
    nodes: Sequence[NodeRt] = snap.nodes
    loads, held = snap.tracker.loads, snap.tracker.held
    owners = entry.ring.owners
    mode = wire.MODE_SPLIT if features else wire.MODE_EDGE
    start = bisect_right(keys, _key_hash(key))
    seen: set[int] = set()
    first = True
    for pos in range(start, start + n):
        owner = owners[pos - n if pos >= n else pos]
        if owner in seen:
            continue
        seen.add(owner)
        node = nodes[owner]
        slot = node.feature_slot if features else node.slot
        slots = min(node.feature_slots if features else node.slots, held[slot])
        load = loads[slot]
        limit = cap(total, node.weight, entry.weight_sum, snap.epsilon, node.min_cap)
        if load < slots and load < limit:
            what = "features: picked by the walk over feature slots" if features \
                else "picked by bounded-load walk"
            notes.append(Candidate(node.id, mode, what, node.est_ms, node.cost_usd, load=load,
                                   cap=limit))
            return Pick(node, first, load, limit)
        why = "at its bounded-load cap"
        if load >= slots:
            why = "out of leased slots" if held[slot] < UNLEASED else "out of slots"
        notes.append(Candidate(node.id, mode, f"features: {why}" if features else why,
                               node.est_ms, node.cost_usd, load=load, cap=min(limit, slots)))
        first = False
        if len(seen) == len(entry.members):
            break
    return None
