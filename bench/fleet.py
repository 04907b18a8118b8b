"""One edge fleet, many routers: edge use, recovery after a gateway dies, store calls, and
ext_proc throughput with leases against a router alone, through real processes.

(1) Three gateways (router + Envoy) on one redis-server, four emulated nodes with
2/4/4/8 slots holding each request 250 ms, 36 closed-loop clients at 30/4/2: twice
the edge's 18 slots. The nodes' own in-flight counts are sampled every 100 ms: the
share of the edge's slots in use once settled, then after gateway A is SIGKILLed
(its clients move to B and C) how long until the edge is 90% used again, against
the lease TTL + 1 s; each node's peak in flight over the whole run. B's and C's
router_store_round_trips_total give the store calls per router.
(2) ext_proc throughput: one router with slot leases off (`capacity_sync=0`) and one
leasing, both on the same Redis budget store, interleaved rounds of wrk (32
connections) through Envoy, medians; and the router's CPU per request.
Writes docs/BENCHMARKS.md.

    .venv/bin/python bench/fleet.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
from bench.envoy_extproc import cpu_seconds, wrk, wrk_script
from tests.integration.stack import Stack
from tests.integration.test_fleet_slots import POLICY, SLOTS, Gateways, closed_loop
from tests.stores.conftest import RedisServer

TTL_S = 2.0
QUIET = (": the machine was quiet before; the run's own processes (six Python and Envoy"
         " processes, the nodes, Redis and the clients on 2 cores) make the rest")
BUSY = (": other work shared the 2 cores, so the throughput rounds are noisy; the ratios"
        " within the run still compare")
TRIPS, SYNCS = "router_store_round_trips_total", "router_capacity_syncs_total"
EDGE = sum(SLOTS.values())


def in_flight(stack: Stack) -> int:
    """Requests in flight on the emulated edge nodes now, by their own count."""
    return sum(int(stack.stats(node)["inflight"]) for node in SLOTS)


async def sample(stack: Stack, until: float, into: list[tuple[float, int]]) -> None:
    """(time, edge in flight) every 100 ms until `until` (monotonic)."""
    while time.monotonic() < until:
        into.append((time.monotonic(), await asyncio.to_thread(in_flight, stack)))
        await asyncio.sleep(0.1)


def fmt(values: Sequence[float], digits: int = 0) -> str:
    """Numbers joined for the page."""
    return " ".join(f"{v:.{digits}f}" for v in values)


def counter(port: int, prefix: str) -> float:
    """A router's counters whose series start with `prefix`, summed over their labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return sum(float(line.split()[-1]) for line in r.read().decode().splitlines()
                   if line.startswith(prefix))


def utilization(seconds: float, tmp: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Part 1: edge use at 2x offered load, recovery after a gateway dies, store calls;
    and each node's peak in flight over the run, by its own count."""
    (tmp / "redis").mkdir()
    server = RedisServer(tmp / "redis")
    server.start()
    fleet = Gateways(tmp, server.url, f"&capacity_ttl={TTL_S:g}")
    try:
        fleet.start()
        a, b, c = fleet.urls
        routes = [a] * 30 + [b] * 4 + [c] * 2
        samples: list[tuple[float, int]] = []
        counts: Counter[str] = Counter()
        # B and C run the whole time (A's counters die with it): read theirs
        trips0 = sum(counter(p, TRIPS) for p in fleet.metrics[1:])
        syncs0 = sum(counter(p, SYNCS) for p in fleet.metrics[1:])

        async def run() -> tuple[float, float, float]:
            began = time.monotonic()
            load = asyncio.create_task(closed_loop(routes, 2 * seconds + 4, counts, []))
            watch = asyncio.create_task(sample(fleet.stack, began + 2 * seconds + 4, samples))
            await asyncio.sleep(seconds)
            killed = time.monotonic()
            await asyncio.to_thread(fleet.kill, 0)
            for i in range(30):
                routes[i] = b if i % 2 else c
            await asyncio.gather(load, watch)
            return began, killed, time.monotonic()

        began, killed, ended = asyncio.run(run())
        peaks = {n: int(fleet.stack.stats(n)["max_inflight"]) for n in SLOTS}
        trips = sum(counter(p, TRIPS) for p in fleet.metrics[1:]) - trips0
        synced = sum(counter(p, SYNCS) for p in fleet.metrics[1:]) - syncs0
    finally:
        fleet.close()
        server.kill()
    steady = [n for t, n in samples if began + 2 <= t < killed]
    after = [(t - killed, n) for t, n in samples if t >= killed]
    back = next((t for i, (t, _) in enumerate(after)
                 if all(n >= 0.9 * EDGE for _, n in after[i:i + 5])), float("inf"))
    router_seconds = 2 * (ended - began)
    return {"steady": statistics.mean(steady) / EDGE, "back_s": back,
            "trips": trips / router_seconds, "syncs": synced / router_seconds,
            "edge": counts["edge"], "cloud": counts["cloud"]}, peaks


# 1,600 keys; the emulated nodes answer at once
LUA = wrk_script(1600, (("x-emulate-delay-ms", "0"),))


class Round(NamedTuple):
    """One wrk run through one stack: requests/s and the router's CPU µs per request."""

    rps: float
    cpu_us: float


def throughput_once(stack: Stack, seconds: float, script: Path) -> Round:
    """wrk (32 connections) through the stack's Envoy; the router's CPU over the run."""
    router = stack.procs["router"].pid  # its own session: it and its policy worker
    cpu0 = cpu_seconds(router)
    rps, _, _ = wrk(stack.url, int(seconds), script)
    return Round(rps, 1e6 * (cpu_seconds(router) - cpu0) / (rps * int(seconds)))


def throughput(seconds: float, rounds: int, tmp: Path) -> dict[str, list[Round]]:
    """Part 2: one router alone against one leasing from Redis, interleaved."""
    for sub in ("redis2", "alone", "leased"):
        (tmp / sub).mkdir()
    (tmp / "wrk.lua").write_text(LUA)
    server = RedisServer(tmp / "redis2")
    server.start()
    # the same Redis budget store for both; slot leases off for the router alone
    stacks = {"alone": Stack(tmp / "alone", policy=POLICY, store=f"{server.url}?capacity_sync=0",
                             message_timeout_s=10.0),
              "leased": Stack(tmp / "leased", policy=POLICY, store=server.url,
                              message_timeout_s=10.0)}
    runs: dict[str, list[Round]] = {k: [] for k in stacks}
    try:
        for s in stacks.values():
            s.start()
            wrk(s.url, 2, tmp / "wrk.lua")  # warm-up
        for _ in range(rounds):
            for name, s in stacks.items():
                runs[name].append(throughput_once(s, seconds, tmp / "wrk.lua"))
    finally:
        for s in stacks.values():
            s.close()
        server.kill()
    return runs


def main() -> None:
    """Run both parts and write the section."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        u, peaks = utilization(args.seconds, Path(tmp))
        runs = throughput(args.seconds, args.rounds, Path(tmp))
    load_after = os.getloadavg()
    t = {k: statistics.median(r.rps for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r.cpu_us for r in v) for k, v in runs.items()}
    ratio = t["leased"] / t["alone"]
    over = sum(max(0, peaks[n] - s) for n, s in SLOTS.items())
    rows = "\n".join(f"| {goal} | {got} | {'yes' if ok else 'no'} |" for goal, got, ok in (
        ("0 requests over any node's slots (30/4/2 clients, then A killed)",
         "peak in flight " + ", ".join(f"{peaks[n]}/{s}" for n, s in SLOTS.items())
         + " (the nodes' own counts)", over == 0),
        ("≥ 90% of the edge's slots in use at 2× offered load",
         f"{100 * u['steady']:.0f}% (the nodes' own in-flight counts, every 100 ms)",
         u["steady"] >= 0.9),
        (f"back to ≥ 90% within TTL + 1 s ({TTL_S + 1:g} s) after a gateway is SIGKILLed",
         f"{u['back_s']:.1f} s", u["back_s"] <= TTL_S + 1),
        ("≤ 10 store calls/s per router (round trips, every purpose)",
         f"{u['trips']:.1f}/s, {u['syncs']:.1f} of them capacity syncs", u["trips"] <= 10),
        ("ext_proc throughput with leases ≥ 0.95× a router alone",
         f"{t['leased']:.0f} vs {t['alone']:.0f} req/s: {ratio:.2f}×; router CPU "
         f"{cpu['leased']:.0f} vs {cpu['alone']:.0f} µs/request: "
         f"{cpu['alone'] / cpu['leased']:.2f}× the requests per CPU second", ratio >= 0.95)))
    body = f"""
Three gateways (router + Envoy) on one Redis, nodes of 2/4/4/8 slots holding each
request 250 ms, 36 closed-loop clients at 30/4/2 (twice the edge's {EDGE} slots);
`bench/fleet.py`, lease TTL {TTL_S:g} s.

| goal | measured | met |
|---|---|---|
{rows}

A router's demand for a node is what it has in flight there plus the requests since its
last sync that found no room in its leases (`router.core.capacity`). Counting instead
every walk that passed its home for want of lease (165ba7c) moved a home slot from
router to router for requests already placed on leased room elsewhere: this bench over
that code measured 86% in use in both of two runs on 2026-12-06 (the code since: 96–98%
in five); recovery after the kill took 2.4–3.5 s with either, within noise.

Requests in the utilization run: {u['edge']} edge, {u['cloud']} cloud (the overflow).
Throughput: wrk, 32 connections through one Envoy (1,600 keys, upstreams answering at
once), medians of {args.rounds} interleaved rounds of {args.seconds:g} s (req/s by round:
alone {fmt([r.rps for r in runs["alone"]])}, leased {fmt([r.rps for r in runs["leased"]])});
the router's CPU per request from /proc over each round.

Load average (1, 5, 15 min) before the run {fmt(load_before, 2)}, after it
{fmt(load_after, 2)}{QUIET if load_before[0] < 1.0 else BUSY}.
"""
    write_section("fleet", "Many routers, one fleet: leased slots", body)
    print(body)


if __name__ == "__main__":
    main()
