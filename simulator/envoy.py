"""Envoy's ring hash with bounded load (`hash_balance_factor`), as Envoy 1.40 picks a host.

Ring. Each host gets ring entries in proportion to its normalized weight, about
`MIN_RING_SIZE` entries in all and at least one each (Envoy's
`minimum_ring_size` default); a key goes to the first entry at or after its
hash. Entry and key hashes here are this project's blake2b, not xxHash, so
keys land on other hosts than in a real Envoy, but with the same statistics.

Bounded load (Envoy's `BoundedLoadHashingLoadBalancer`). With `overall` the
requests active on the cluster and f = hash_balance_factor (a percentage),

    total_slots = ceil((overall + 1) × f / 100)
    slots_h     = max(ceil(total_slots × weight_h / Σ weight), 1)

and host h is overloaded when its active requests exceed slots_h (so it may
reach slots_h + 1). An overloaded first host sends the request down a
pseudo-random permutation of the hosts seeded by the key's hash (the same keys
take the same detour) to the first host not overloaded, or failing that to
the least overloaded. Envoy knows nothing of a node's physical slots: what
goes past them queues on the node.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Mapping, Sequence

from router.core.policy import EdgeNode
from router.core.ring import hash64

MIN_RING_SIZE = 1024


class EnvoyRing:
    """One cluster's ring over `nodes` with their effective weights."""

    def __init__(self, nodes: Sequence[EdgeNode], weights: Sequence[float],
                 balance_factor_pct: int) -> None:
        """Build the ring (weights > 0; a node of weight 0 gets no entries)."""
        live = [(n, w) for n, w in zip(nodes, weights, strict=True) if w > 0]
        total = sum(w for _, w in live) or 1.0
        self.nodes = [n for n, _ in live]
        self.share = {n.id: w / total for n, w in live}
        self.factor = balance_factor_pct
        points: list[tuple[int, int]] = []
        for i, (n, w) in enumerate(live):
            count = max(1, round(MIN_RING_SIZE * w / total))
            points += [(hash64(f"{n.address}_{j}"), i) for j in range(count)]
        points.sort()
        self.hashes = [h for h, _ in points]
        self.owner = [i for _, i in points]

    def slots(self, node: EdgeNode, overall: int) -> int:
        """Envoy's bounded-load slots of `node` with `overall` requests active."""
        total = -(-(overall + 1) * self.factor // 100)
        return max(math.ceil(total * self.share[node.id]), 1)

    def choose(self, key: str, active: Mapping[str, int]) -> tuple[EdgeNode, float, EdgeNode]:
        """(host, its (active + 1) / slots as picked, the key's first host) for `key`."""
        h = hash64(key)
        pos = bisect_left(self.hashes, h)
        first = self.nodes[self.owner[pos if pos < len(self.hashes) else 0]]
        overall = sum(active[n.id] for n in self.nodes)
        slots = self.slots(first, overall)
        if active[first.id] <= slots:
            return first, (active[first.id] + 1) / slots, first
        best, best_factor = first, active[first.id] / slots
        order = list(range(len(self.nodes)))
        random.Random(h).shuffle(order)
        for k in order:
            node = self.nodes[k]
            if node is first:
                continue
            slots = self.slots(node, overall)
            factor = active[node.id] / slots
            if factor <= 1.0:
                return node, (active[node.id] + 1) / slots, first
            if factor < best_factor:
                best, best_factor = node, factor
        return best, (active[best.id] + 1) / self.slots(best, overall), first
