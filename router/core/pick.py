"""The bounded-load picker: one walk of a class's weighted ring (see `router.core.ring`).

The walk starts at hash64(key) and takes the first member node that is under
its bounded-load cap and its physical slots. The first node on the ring is the
key's *home*; a key leaves its home only while the home is at its cap.
"""

from __future__ import annotations

from bisect import bisect_right

from router import wire
from router.core.decision import Candidate
from router.core.ring import cap, hash64
from router.core.table import ClassEntry, NodeRt, Snapshot


def pick_edge(entry: ClassEntry, snap: Snapshot, key: str,
              notes: list[Candidate] | None = None) -> tuple[NodeRt | None, bool]:
    """Bounded-load walk: (first eligible node under its cap, whether it is the key's home)."""
    keys = entry.ring.keys
    n = len(keys)
    if n == 0:
        return None, False
    nodes = snap.nodes
    loads = snap.tracker.loads
    total = snap.tracker.total(entry.gid, entry.member_slots)
    eps = snap.policy.balance_factor
    wsum = entry.weight_sum
    owners = entry.ring.owners
    start = bisect_right(keys, hash64(key))
    want = len(entry.members)
    seen: set[int] = set()
    first = True
    for pos in range(start, start + n):
        owner = owners[pos - n if pos >= n else pos]
        if owner in seen:
            continue
        seen.add(owner)
        node = nodes[owner]
        load = loads[node.slot]
        limit = cap(total, node.weight, wsum, eps)
        if load < node.slots and load < limit:
            if notes is not None:
                notes.append(Candidate(node.id, wire.MODE_EDGE, "picked by bounded-load walk",
                                       node.est_ms, node.cost_usd, load=load, cap=limit))
            return node, first
        if notes is not None:
            why = "out of slots" if load >= node.slots else "at its bounded-load cap"
            notes.append(Candidate(node.id, wire.MODE_EDGE, why, node.est_ms, node.cost_usd,
                                   load=load, cap=min(limit, node.slots)))
        first = False
        if len(seen) == want:
            break
    return None, False
