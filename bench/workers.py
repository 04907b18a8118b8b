"""`serve --workers N` on a box without spare cores: what the lease sync costs, by simulation.

Each worker is a process with the worker's own `WorkerRuntime` and the capacity keeper
`serve --workers` starts, leasing node slots from one host-local SQLite file at its
production pace. It routes requests from their headers (tags, walk, ladder, admission)
and keeps a fixed number in flight, ending the oldest as each new one is admitted, so
the slots it holds and the demand it asks for move as a gateway's would; there is no
gRPC and no Envoy, whose costs per request do not depend on how many workers there are.
Two phases for each N, with the same total concurrency:

- *all busy*: the concurrency split evenly over the workers;
- *one busy*: all of it on worker 0, the others idle (one Envoy connection pinned to
  one worker): with a static split of the slots it could use only 1/N of each node.

Figures per N: router CPU µs per request (the median over busy workers, against N=1),
the share of requests served on the edge, the most of one node's slots a single worker
held, and the lease store's round trips per worker per second.

    .venv/bin/python bench/workers.py [--seconds 4] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section

NODES, SLOTS, CONCURRENCY = 4, 8, 40  # 32 edge slots; 40 requests in flight in all
WARMUP = 5000  # requests before the clock starts
EDGE = ("edge", "edge-degraded")


def policy_text() -> str:
    """Four 8-slot GDPR nodes and a GDPR pool for what they cannot take."""
    nodes = "\n".join(
        f'    - {{id: n{i}, address: "127.0.0.1:{9001 + i}", hardware: rtx-4090, weight: 1, '
        f"slots: {SLOTS}, residency: [GDPR], base_latency_ms: 5}}" for i in range(NODES))
    return (f"version: 1\nedge:\n  nodes:\n{nodes}\ncloud:\n  pools:\n"
            '    - {id: cloud, address: "127.0.0.1:9100", residency: [GDPR]}\n'
            "budgets: {store: memory}\n")


def worker(policy: str, capfile: str, n: int, index: int, inflight: int, seconds: float,
           out: Any) -> None:
    """One worker's run; puts (index, requests, cpu s, edge requests, max held, syncs)."""
    from router.policy.loader import load_policy
    from router.server.workers import WorkerRuntime
    from router.stores.capkeeper import open_capacity

    rt = WorkerRuntime(load_policy(Path(policy)), workers=n, index=index)
    keeper = open_capacity(f"sqlite:{capfile}", rt.tracker, lambda: rt.snapshot)
    assert keeper is not None
    held: deque[Any] = deque()
    requests = edge = most = 0
    slots = [rt.tracker.slot(f"n{i}") for i in range(NODES)]
    for i in range(WARMUP if inflight else 0):  # caches and memos filled, leases settled
        routed = rt.route({"x-affinity-residency": "GDPR", "x-affinity-key": f"k{i % 5000}"},
                          now=time.time())
        if routed.decision.routed:
            rt.finish(routed)
    syncs0 = keeper.stats.syncs
    t_end = time.monotonic() + seconds
    c0 = time.process_time()
    while inflight and time.monotonic() < t_end:
        for _ in range(100):
            routed = rt.route({"x-affinity-residency": "GDPR",
                               "x-affinity-key": f"k{requests % 5000}"}, now=time.time())
            requests += 1
            if routed.decision.routed:
                edge += routed.decision.mode in EDGE
                held.append(routed)
            if len(held) >= inflight:
                rt.finish(held.popleft())
        most = max(most, max(rt.tracker.held[s] for s in slots))
    cpu = time.process_time() - c0
    if not inflight:
        time.sleep(seconds)
    syncs = keeper.stats.syncs - syncs0
    while held:
        rt.finish(held.popleft())
    keeper.close()
    out.put((index, requests, cpu, edge, most, syncs / seconds))


def run(n: int, busy: str, seconds: float, tmp: Path) -> dict[str, float]:
    """N workers on one lease file; `busy` 'all' or 'one'. The phase's figures."""
    policy = tmp.parent / "policy.yaml"
    tmp.mkdir(exist_ok=True)
    capfile = tmp / f"capacity-{n}-{busy}.db"
    spread = [CONCURRENCY // n] * n if busy == "all" else [CONCURRENCY] + [0] * (n - 1)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(str(policy), str(capfile), n, i, spread[i],
                                              seconds, out)) for i in range(n)]
    for p in procs:
        p.start()
    rows = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    active = [r for r in rows if r[1] > 0]
    return {"cpu_us": statistics.median(1e6 * r[2] / r[1] for r in active),
            "edge": sum(r[3] for r in active) / sum(r[1] for r in active),
            "most": max(r[4] for r in active),
            "syncs": statistics.median(r[5] for r in rows)}


def main() -> int:
    """Every N, both phases, side by side; write the section."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    phases = [(n, busy) for n in counts for busy in (("all", "one") if n > 1 else ("all",))]
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    (tmp / "policy.yaml").write_text(policy_text())
    before = os.getloadavg()
    runs: dict[tuple[int, str], list[dict[str, float]]] = {p: [] for p in phases}
    for r in range(args.rounds):  # interleaved, so a busy spell slows every phase alike
        for n, busy in phases:
            runs[(n, busy)].append(run(n, busy, args.seconds, tmp / f"r{r}"))
    after = os.getloadavg()
    results = {p: {k: statistics.median(x[k] for x in v) for k in v[0]}
               for p, v in runs.items()}
    base = results[(counts[0], "all")]["cpu_us"]
    lines = ["| workers | busy | router CPU µs/request | ÷ 1 worker | served on the edge | "
             f"most of one node's {SLOTS} slots one worker held | lease syncs/s per worker |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for (n, busy), r in results.items():
        lines.append(f"| {n} | {busy if n > 1 else '-'} | {r['cpu_us']:.1f} | "
                     f"{r['cpu_us'] / base:.2f}x | {r['edge']:.1%} | {r['most']:.0f} | "
                     f"{r['syncs']:.1f} |")
        print(lines[-1], flush=True)
    load = (" ".join(f"{x:.2f}" for x in before) + " before, "
            + " ".join(f"{x:.2f}" for x in after) + " after")
    write_section("workers", "`--workers N` without spare cores: the lease sync's cost",
                  "\n".join(lines) + f"\n\n{args.rounds} interleaved rounds of "
                  f"{args.seconds:g} s per phase, medians. Load average (1, 5, 15 min): "
                  f"{load}.\n\n" + reading(results, counts) + NOTE)
    return 0


def reading(results: dict[tuple[int, str], dict[str, float]], counts: list[int]) -> str:
    """What this run's figures say, in words."""
    base = results[(counts[0], "all")]
    many = [r for (n, _), r in results.items() if n > 1]
    ones = [r for (n, busy), r in results.items() if n > 1 and busy == "one"]
    ratios = [r["cpu_us"] / base["cpu_us"] for r in many]
    syncs = [r["syncs"] for r in results.values()]
    return (f"This run: with 2 or more workers, CPU per request is {min(ratios):.2f}x to "
            f"{max(ratios):.2f}x one worker's, and each worker makes {min(syncs):.1f} to "
            f"{max(syncs):.1f} lease round trips a second whatever N. One busy worker among "
            f"idle ones served {min(r['edge'] for r in ones):.1%} to "
            f"{max(r['edge'] for r in ones):.1%} of its requests on the edge (a lone worker "
            f"{base['edge']:.1%}) and held up to {min(r['most'] for r in ones):.0f} of a "
            f"node's {SLOTS} slots, where a static split would give it {SLOTS // max(counts)}"
            f" to {SLOTS // 2}.")


NOTE = """

Measured with `.venv/bin/python bench/workers.py`. Each worker is a process with its own
`WorkerRuntime` and the capacity keeper `serve --workers` starts (slot leases from one
host-local SQLite file, synced every 0.25 s). It routes requests from their headers (tags,
walk, ladder, admission) with a fixed number in flight, 40 in all against 32 edge slots, so
the rest go to the cloud pool, ending the oldest as each new one is admitted. There is no
gRPC and no Envoy: their cost per request does not depend on N. Phases: *all* busy, the 40
split evenly; *one* busy, all 40 on worker 0 and the others idle (one Envoy connection pinned
to one worker). This machine has 2 cores, so 4 workers time-share them; CPU per request is
counted per process and is what bounds a worker's throughput on a core of its own, so N
workers on N free cores serve N times one worker's requests less what the ratio column adds.

"""


if __name__ == "__main__":
    sys.exit(main())
