"""`hybrid-router demo`: real Envoy, the router, a feed server and emulated nodes, live.

Starts every process on 127.0.0.1 ports the kernel picks, state under `state/demo/`,
drives mixed traffic through Envoy, prints a live summary, and injects events along the
way (a node lost, a spot-price spike, the router restarted) so the reaction shows.
Ctrl-C (or --duration) stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import time
from pathlib import Path

from router.cliargs import POSITIVE, number
from router.core.policy import Policy
from router.demo import stack
from router.demo.files import ROOT, World
from router.demo.summary import render, scrape
from router.demo.traffic import Stats, drive
from router.harness.procs import Processes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the demo's options."""
    parser.add_argument("--duration", type=number(float, 0), default=0.0, metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--rate", type=POSITIVE, default=120.0, metavar="RPS",
                        help="request rate through Envoy (default 120)")
    parser.add_argument("--event-every", type=number(float, 0), default=20.0, metavar="SECONDS",
                        help="seconds between injected events (default 20; 0: none)")
    parser.add_argument("--state", default=str(ROOT / "state" / "demo"), metavar="DIR",
                        help="where policy, feed, logs and the budget database go")
    parser.add_argument("--refresh", type=POSITIVE, default=1.0, metavar="SECONDS",
                        help="summary refresh interval (default 1)")


EVENTS = ("node-lost", "price-spike", "router-restart", "recover")
LOST = ("orin-03", "rtx-03", "l4-02")


def _event(name: str, world: World, procs: Processes, policy: Policy) -> str:
    if name == "node-lost":
        for node in LOST:
            world.node(node)["healthy"] = False
        world.write_feed()
        return (f"US edge site lost ({', '.join(LOST)}) — their keys move; CCPA traffic with no "
                "edge left goes to hyper-us")
    if name == "price-spike":
        world.set_price("h100-spot", 9.50)
        world.set_price("a100-spot", 7.20)
        world.write_feed()
        return "spot prices ×4.5 — cloud spend climbs toward the soft, then hard budget"
    if name == "router-restart":
        procs.stop("router")
        time.sleep(2.0)
        stack.start_router(procs, world)
        return "router restarted — Envoy failed open meanwhile (ring hash), then it resumed"
    for node in LOST:
        world.node(node)["healthy"] = True
    for pool in policy.pools:
        world.set_price(pool.instance_type, pool.usd_per_hour)
    world.write_feed()
    return "US site back, prices normal"


async def _live(args: argparse.Namespace, world: World, procs: Processes, policy: Policy,
                url: str, metrics_url: str) -> None:
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    traffic = asyncio.create_task(drive(url, args.rate, stats, stop))
    started = time.monotonic()
    events: list[str] = []
    next_event = args.event_every if args.event_every > 0 else float("inf")
    index = 0
    tty = sys.stdout.isatty()
    last_plain = 0.0
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if args.duration and elapsed >= args.duration:
                break
            if elapsed >= next_event:
                name = EVENTS[index % len(EVENTS)]
                text = await asyncio.to_thread(_event, name, world, procs, policy)
                events.append(f"t={elapsed:.0f}s {text}")
                print(f"EVENT t={elapsed:.0f}s {text}", flush=True)
                index += 1
                next_event += args.event_every
            metrics = await asyncio.to_thread(scrape, metrics_url)
            screen = render(policy, stats, metrics, elapsed=elapsed, events=events)
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + screen + "\n")
                sys.stdout.flush()
            elif elapsed - last_plain >= 5.0:
                print(screen + "\n", flush=True)
                last_plain = elapsed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.refresh)
    finally:
        stop.set()
        await traffic
        metrics = await asyncio.to_thread(scrape, metrics_url)
        print(render(policy, stats, metrics, elapsed=time.monotonic() - started,
                     events=events), flush=True)
        print("SUMMARY " + " ".join(f"{m}={c}" for m, c in stats.modes.most_common())
              + f" total={stats.total}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Start the stack, show the live summary, stop everything on the way out."""
    state = Path(args.state)
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    procs = Processes(state)
    try:
        world, policy, url, metrics_url = stack.start(procs, state)
        print(f"demo: Envoy on {url}, router metrics on {metrics_url}, logs in {state}",
              flush=True)
        asyncio.run(_live(args, world, procs, policy, url, metrics_url))
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo: {exc}; see the logs in {state}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        print("demo: every process it started has stopped", flush=True)
    return 0
