"""The bounded-load picker: one walk of a class's weighted ring (see `router.core.ring`).

The walk starts at hash64(key) and takes the first member node that is under
its bounded-load cap (with the utilization floor) and its physical slots. The
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


def _walk(entry: ClassEntry, snap: Snapshot, key: str, total: int, features: bool,
          notes: list[Candidate] | None) -> Pick | None:
    keys = entry.ring.keys
    n = len(keys)
    if n == 0:
        return None
    start = bisect_right(keys, _key_hash(key))
    seen: set[int] = set()
    if notes is None:
        # The common case first: the key's home has room (no bookkeeping of the walk).
        home = entry.ring.owners[start if start < n else 0]
        node = snap.nodes[home]
        load = snap.tracker.loads[node.feature_slot if features else node.slot]
        limit = cap(total, node.weight, entry.weight_sum, snap.policy.hashing.balance_factor,
                    node.min_cap)
        if load < (node.feature_slots if features else node.slots) and load < limit:
            return Pick(node, True, load, limit)
        seen.add(home)  # the home is full: the walk goes on past it
        if len(entry.members) == 1:
            return None
    return _onward(entry, snap, start, seen, total, features, notes)


def _onward(entry: ClassEntry, snap: Snapshot, start: int, seen: set[int], total: int,
            features: bool, notes: list[Candidate] | None) -> Pick | None:
    """The walk from ring position `start`, skipping the nodes in `seen` (already refused)."""
    owners, n, want = entry.ring.owners, len(entry.ring.keys), len(entry.members)
    nodes: Sequence[NodeRt] = snap.nodes
    loads, wsum = snap.tracker.loads, entry.weight_sum
    first = not seen
    # ring.cap's arithmetic, term for term (so the same float rounding), hoisted out of the
    # loop: a walk past a full home probes a few nodes, and this runs once per probe
    scale = (1.0 + snap.policy.hashing.balance_factor) * (total + 1)
    for pos in range(start, start + n):
        owner = owners[pos - n if pos >= n else pos]
        if owner in seen:
            continue
        seen.add(owner)
        node = nodes[owner]
        slots = node.feature_slots if features else node.slots
        load = loads[node.feature_slot if features else node.slot]
        limit = node.min_cap
        if wsum > 0:
            value = scale * node.weight / wsum
            whole = int(value)
            whole = whole if whole == value else whole + 1
            limit = whole if whole > limit else limit
        if load < slots and load < limit:
            if notes is not None:
                _note(notes, node, features, None, load, limit)
            return Pick(node, first, load, limit)
        if notes is not None:
            _note(notes, node, features, "out of slots" if load >= slots
                  else "at its bounded-load cap", load, min(limit, slots))
        first = False
        if len(seen) == want:
            break
    return None


def _note(notes: list[Candidate], node: NodeRt, features: bool, why: str | None, load: int,
          limit: int) -> None:
    """The explain line of one step of the walk (`why` None: picked)."""
    if why is None:
        why = "picked by the walk over feature slots" if features else "picked by bounded-load walk"
    notes.append(Candidate(node.id, wire.MODE_SPLIT if features else wire.MODE_EDGE,
                           f"features: {why}" if features else why, node.est_ms, node.cost_usd,
                           load=load, cap=limit))
