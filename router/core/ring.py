"""Weighted consistent hashing with bounded load (docs/reference.md, "Routing").

Theory of operation
-------------------
Ring. Each node owns `round(POINTS_PER_WEIGHT × w_i)` points (at least one),
where w_i = policy weight × feed compute_score × health factor. Point j of
node n sits at hash64(f"{n}-{j}") — exactly uhashring's point scheme with
vnodes=1 and weight=points, so `uhashring.HashRing` with the same `hash_fn`
maps every key to the same first node (tests check this). A node's points
depend only on its own name and weight: adding or removing one of n nodes
moves only the keys whose first point changes owner, about 1/n of them.

Bounded load. With L requests in flight on the eligible nodes and ε the
policy's balance_factor, node i may hold at most

    cap_i = ceil((1 + ε) × (L + 1) × w_i / Σw)

A pick walks the ring clockwise from hash64(key) and takes the first node that
is eligible, under its cap and under its physical slots. Since Σ cap_i ≥
(1 + ε)(L + 1) > L, some node always has room unless every node is out of
slots. A key keeps its node while that node stays under its cap.

Utilization floor. With `hashing.min_cap_fraction` f > 0 a node's cap is never
below floor(f × slots_i): at low load the proportional bound would spread keys
over nearly idle nodes (a cap of 1 on a 16-slot node at 95 req/s), losing
their warm caches for no gain; the floor keeps a key on its home node until
that node is f full, and the proportional bound governs above it.

Speed. Points are hashed once per (node, count) and cached; a rebuild sorts
the concatenated points with numpy. A request class's ring is the global ring
filtered to its eligible nodes, which is the same as walking the global ring
and skipping ineligible nodes, only without the skipping. Class rings are
`array.array`s copied straight from numpy's buffers: `bisect` and indexing
work on them as on lists, but building one is a memcpy, not a Python int per
point (which made 1,000-node rebuilds slow).
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

POINTS_PER_WEIGHT = 40
MAX_POINTS_PER_NODE = 2000


def hash64(text: str) -> int:
    """Stable 64-bit hash (blake2b); never Python's randomized hash()."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def point_count(weight: float) -> int:
    """Ring points for a node of effective weight `weight` (0: not on the ring)."""
    if weight <= 0:
        return 0
    return max(1, min(MAX_POINTS_PER_NODE, round(POINTS_PER_WEIGHT * weight)))


class PointCache:
    """hash64(f"{name}-{j}") for j < count, computed once per name."""

    def __init__(self) -> None:
        """Start empty."""
        self._points: dict[str, np.ndarray] = {}

    def points(self, name: str, count: int) -> np.ndarray:
        """The first `count` points of `name` as uint64."""
        have = self._points.get(name)
        if have is None or len(have) < count:
            start = 0 if have is None else len(have)
            grow = max(count, start * 2 if start else count)
            extra = np.fromiter((hash64(f"{name}-{j}") for j in range(start, grow)),
                                dtype=np.uint64, count=grow - start)
            have = extra if have is None else np.concatenate([have, extra])
            self._points[name] = have
        return have[:count]


@dataclass(frozen=True, slots=True)
class Ring:
    """Sorted ring points and the owner (an index into the caller's node list) of each."""

    keys: Sequence[int]
    owners: Sequence[int]
    members: tuple[int, ...]

    def __len__(self) -> int:
        """Number of points."""
        return len(self.keys)


def build_ring(names: Sequence[str], weights: Sequence[float], cache: PointCache) -> Ring:
    """Global ring over nodes `names` with effective `weights`."""
    parts: list[np.ndarray] = []
    counts: list[int] = []
    members = []
    for idx, (name, weight) in enumerate(zip(names, weights, strict=True)):
        count = point_count(weight)
        if count == 0:
            continue
        members.append(idx)
        counts.append(count)
        parts.append(cache.points(name, count))
    if not parts:
        return Ring(keys=(), owners=(), members=())
    keys = np.concatenate(parts)
    owners = np.repeat(np.asarray(members, dtype=np.int32), counts)
    # Points are distinct 64-bit hashes (a tie is a 2^-64 event), so the unstable sort
    # orders them exactly as a stable one would, and several times faster.
    order = np.argsort(keys)
    # numpy arrays here (fast to filter); class rings are arrays (fast to bisect).
    return Ring(keys=cast(Sequence[int], keys[order]), owners=cast(Sequence[int], owners[order]),
                members=tuple(members))


def filter_ring(ring: Ring, eligible: Sequence[int]) -> Ring:
    """The sub-ring of `ring` holding only nodes in `eligible`, as bisectable arrays."""
    if not len(ring):
        return Ring(keys=array("Q"), owners=array("i"), members=())
    keys = np.asarray(ring.keys, dtype=np.uint64)
    owners = np.asarray(ring.owners, dtype=np.int32)
    allowed = np.zeros(int(owners.max()) + 1, dtype=bool)
    wanted = [i for i in eligible if 0 <= i < len(allowed)]
    allowed[wanted] = True
    mask = allowed[owners]
    members = tuple(sorted(set(int(x) for x in eligible) & set(ring.members)))
    sub_keys = array("Q")
    sub_keys.frombytes(np.ascontiguousarray(keys[mask]).tobytes())
    sub_owners = array("i")
    sub_owners.frombytes(np.ascontiguousarray(owners[mask]).tobytes())
    return Ring(keys=sub_keys, owners=sub_owners, members=members)


def cap(load_total: int, weight: float, weight_sum: float, epsilon: float, floor: int = 0) -> int:
    """Bounded-load cap of a node: max(ceil((1 + ε)(L + 1) w / Σw), floor).

    `floor` is the utilization floor (min_cap_fraction × slots): at low load a key
    keeps its node while that node is under that share of its slots.
    """
    if weight_sum <= 0:
        return floor
    value = (1.0 + epsilon) * (load_total + 1) * weight / weight_sum
    whole = int(value)
    whole = whole if whole == value else whole + 1
    return whole if whole > floor else floor


def walk(ring: Ring, key_hash: int) -> list[int]:
    """Distinct owners in ring order starting at `key_hash` (for explain and tests)."""
    n = len(ring.keys)
    if n == 0:
        return []
    start = bisect_right(ring.keys, key_hash)
    seen: list[int] = []
    found: set[int] = set()
    for step in range(n):
        owner = int(ring.owners[(start + step) % n])
        if owner not in found:
            found.add(owner)
            seen.append(owner)
            if len(seen) == len(ring.members):
                break
    return seen
