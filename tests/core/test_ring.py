"""The weighted ring: uhashring-compatible points, caps, and walks."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from uhashring import HashRing

from router.core.ring import PointCache, build_ring, cap, hash64, point_count, walk


def test_hash64_is_stable_across_processes() -> None:
    # A fixed digest, not Python's randomized hash(): same value under any hash seed.
    code = "from router.core.ring import hash64; print(hash64('session-42'))"
    values = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert values == {str(hash64("session-42"))}
    assert hash64("a") != hash64("b")


def test_first_node_matches_uhashring_with_the_same_points() -> None:
    names = [f"node-{i}" for i in range(12)]
    weights = [1.0 + (i % 4) for i in range(12)]
    ours = build_ring(names, weights, PointCache())
    theirs = HashRing(nodes={n: {"vnodes": 1, "weight": point_count(w)}
                             for n, w in zip(names, weights, strict=True)}, hash_fn=hash64)
    for i in range(2000):
        key = f"key-{i}"
        assert names[walk(ours, hash64(key))[0]] == theirs.get_node(key)


def test_points_are_proportional_to_weight() -> None:
    ring = build_ring(["a", "b", "c"], [1.0, 2.0, 4.0], PointCache())
    counts = [list(ring.owners).count(i) for i in range(3)]
    assert counts == [point_count(1.0), point_count(2.0), point_count(4.0)]
    assert counts[2] == 4 * counts[0]


def test_zero_weight_nodes_are_off_the_ring() -> None:
    ring = build_ring(["a", "b"], [1.0, 0.0], PointCache())
    assert ring.members == (0,)
    assert set(ring.owners) == {0}


@pytest.mark.parametrize(("load", "w", "total", "eps", "expected"), [
    (0, 1, 4, 0.25, 1),
    (10, 1, 4, 0.25, math.ceil(1.25 * 11 / 4)),
    (99, 3, 10, 0.5, math.ceil(1.5 * 100 * 3 / 10)),
    (7, 2, 2, 0.25, 10),
])
def test_cap_formula(load: int, w: float, total: float, eps: float, expected: int) -> None:
    assert cap(load, w, total, eps) == expected


def test_walk_visits_every_member_once() -> None:
    ring = build_ring([f"n{i}" for i in range(20)], [1.0] * 20, PointCache())
    order = walk(ring, hash64("x"))
    assert sorted(order) == list(range(20))
