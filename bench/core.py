"""In-process cost of one routing decision vs. a plain uhashring lookup, side by side.

For 10, 100 and 1,000 nodes: decisions per second and p50/p99 per decision for
(1) `uhashring.HashRing.get_node` on a ring of the same nodes (the reference),
(2) the core's `decide` (table lookup + bounded-load pick + budget check), with
64 requests kept in flight, a Zipf key mix and three request classes, and
(3) `Runtime.route` (tag parsing from headers + decide). Writes docs/BENCHMARKS.md.

    .venv/bin/python bench/core.py [--decisions N]
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import time
from pathlib import Path

import numpy as np
from uhashring import HashRing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
from router.core.admit import decide, finish
from router.core.policy import (
    BudgetConfig,
    Cloud,
    CloudPool,
    Edge,
    EdgeNode,
    Hashing,
    Policy,
    TenantBudget,
)
from router.core.request import RouteRequest
from router.core.ring import hash64
from router.runtime import Runtime

HW = [("jetson-agx-orin", 1.0, 4, 35.0), ("rtx-4090", 3.0, 8, 22.0), ("nvidia-l4", 2.0, 6, 28.0),
      ("a100-80g", 8.0, 16, 14.0)]
INFLIGHT = 64


def fleet(n: int) -> Policy:
    """n nodes of four hardware classes, half GDPR, two pools, budgets."""
    nodes = []
    for i in range(n):
        hw, w, slots, lat = HW[i % 4]
        nodes.append(EdgeNode(id=f"edge-{i:05d}", address=f"10.0.{i // 250}.{i % 250}:8000",
                              hardware=hw, weight=w, slots=slots,
                              residency=frozenset({"GDPR"} if i % 2 else {"CCPA"}),
                              models=frozenset({"*"}), base_latency_ms=lat,
                              usd_per_inference=0.001))
    pools = (CloudPool(id="eu", address="10.9.0.1:443", residency=frozenset({"GDPR"}),
                       models=frozenset({"*"}), instance_type="h100", latency_ms=120,
                       compute_ms=40, egress_usd_per_gb=0.09, usd_per_hour=2.1),
             CloudPool(id="us", address="10.9.0.2:443", residency=frozenset({"CCPA"}),
                       models=frozenset({"*"}), instance_type="a100", latency_ms=140,
                       compute_ms=55, egress_usd_per_gb=0.12, usd_per_hour=1.6))
    return Policy(version=1, refresh_seconds=30, hashing=Hashing(balance_factor=0.25),
                  edge=Edge(usd_per_inference=0.001, nodes=tuple(nodes)),
                  cloud=Cloud(pools=pools),
                  budgets=BudgetConfig(tenants={"default": TenantBudget(limit_usd=1e9)})
                  ).with_digest("bench")


def keys(count: int, seed: int = 1) -> list[str]:
    """Zipf-distributed session keys."""
    rng = np.random.default_rng(seed)
    return [f"session-{k}" for k in rng.zipf(1.2, count) % 100_000]


def pct(samples: list[int]) -> tuple[float, float, float]:
    """(decisions/s, p50 µs, p99 µs) from per-call nanoseconds."""
    arr = np.asarray(samples, dtype=np.float64) / 1000.0
    return 1e6 / arr.mean(), float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def bench_uhashring(policy: Policy, ks: list[str]) -> list[int]:
    """Per-call time of a plain uhashring lookup on the same weighted nodes."""
    ring = HashRing(nodes={n.id: {"vnodes": 40, "weight": int(n.weight)} for n in policy.nodes},
                    hash_fn=hash64)
    get, clock, out = ring.get_node, time.perf_counter_ns, []
    for k in ks:
        t0 = clock()
        get(k)
        out.append(clock() - t0)
    return out


def bench_decide(policy: Policy, ks: list[str]) -> tuple[list[int], collections.Counter[str]]:
    """Per-call time of decide with INFLIGHT requests held, plus the mode mix."""
    rt = Runtime(policy, clock=lambda: 1_795_000_000.0)
    table, tracker, ledger = rt.snapshot, rt.tracker, rt.ledger
    classes = [(frozenset({"GDPR"}), None), (frozenset({"CCPA"}), None), (frozenset(), None)]
    reqs = [RouteRequest(key=k, tenant="default", residency=classes[i % 3][0],
                         slo_ms=(100.0, 20.0, 150.0, 12.0)[i % 4],
                         model=classes[i % 3][1], accept_degradation=i % 4 != 3, max_cost_usd=None,
                         payload_bytes=4096) for i, k in enumerate(ks)]
    for r in reqs[:200]:  # warm the class cache
        finish(decide(r, table, ledger, now=1_795_000_000.0), tracker, ledger)
    held: collections.deque = collections.deque()  # type: ignore[type-arg]
    clock, out, modes = time.perf_counter_ns, [], collections.Counter()
    for r in reqs:
        t0 = clock()
        routed = decide(r, table, ledger, now=1_795_000_000.0)
        out.append(clock() - t0)
        modes[routed.decision.mode] += 1
        held.append(routed)
        if len(held) >= INFLIGHT:
            finish(held.popleft(), tracker, ledger)
    return out, modes


def bench_route(policy: Policy, ks: list[str]) -> list[int]:
    """Per-call time of Runtime.route (headers → decision) with INFLIGHT held."""
    rt = Runtime(policy, clock=lambda: 1_795_000_000.0)
    headers = [{"x-affinity-key": k, "x-affinity-residency": ("GDPR", "CCPA")[i % 2],
                "x-affinity-slo-ms": ("100", "20", "150", "12")[i % 4],
                "x-affinity-degrade": ("true", "true", "true", "false")[i % 4]}
               for i, k in enumerate(ks)]
    held: collections.deque = collections.deque()  # type: ignore[type-arg]
    clock, out = time.perf_counter_ns, []
    for h in headers:
        t0 = clock()
        routed = rt.route(h, request_id="r")
        out.append(clock() - t0)
        held.append(routed)
        if len(held) >= INFLIGHT:
            rt.finish(held.popleft())
    return out


def main() -> int:
    """Run every size, print and record the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    for n in (10, 100, 1000):
        policy = fleet(n)
        ks = keys(args.decisions)
        gc.collect()
        gc.disable()
        try:
            # Interleave the three measurements twice; keep the better run of each.
            results: dict[str, tuple[float, float, float]] = {}
            mix: collections.Counter[str] = collections.Counter()
            for _ in range(2):
                for name, fn in (("uhashring", bench_uhashring), ("decide", bench_decide),
                                 ("route", bench_route)):
                    out = fn(policy, ks)
                    if name == "decide":
                        out, mix = out  # type: ignore[misc]
                    stats = pct(out)  # type: ignore[arg-type]
                    if name not in results or stats[2] < results[name][2]:
                        results[name] = stats
        finally:
            gc.enable()
        u, d, r = results["uhashring"], results["decide"], results["route"]
        rows.append((n, u, d, r, mix))
        print(f"{n:>5} nodes  uhashring {u[0]:>9,.0f}/s p50 {u[1]:5.1f} p99 {u[2]:5.1f} µs | "
              f"decide {d[0]:>8,.0f}/s p50 {d[1]:5.1f} p99 {d[2]:5.1f} µs | "
              f"route {r[0]:>8,.0f}/s p50 {r[1]:5.1f} p99 {r[2]:5.1f} µs  {dict(mix)}")
    if not args.no_write:
        lines = ["| nodes | uhashring get_node p50 / p99 µs | decide p50 / p99 µs | "
                 "decide/s | decide ÷ uhashring (p50) | route (tags+decide) p50 / p99 µs |",
                 "|---:|---:|---:|---:|---:|---:|"]
        for n, u, d, r, _ in rows:
            lines.append(f"| {n:,} | {u[1]:.1f} / {u[2]:.1f} | {d[1]:.1f} / {d[2]:.1f} | "
                         f"{d[0]:,.0f} | {d[1] / u[1]:.1f}x | {r[1]:.1f} / {r[2]:.1f} |")
        body = "\n".join(lines) + (
            f"\n\n{args.decisions:,} decisions per size, Zipf(1.2) keys over 100k sessions, three "
            "request classes (GDPR, CCPA, any), SLOs of 12-150 ms and one request in four "
            f"refusing degradation (edge, degraded and best-effort picks all occur), {INFLIGHT} "
            "requests held in flight so caps bite; per-call `perf_counter_ns`, GC off, best of two "
            "interleaved runs. "
            "`decide` is the per-request work of the server and the simulator: class lookup, "
            "one bounded-load walk, the mode ladder and the budget check. Goal: p99 under "
            "50 µs at 100 nodes in pure Python.\n\n"
            "Reproduce: `.venv/bin/python bench/core.py`.")
        write_section("core", "Routing core: per-decision cost vs. plain uhashring", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
