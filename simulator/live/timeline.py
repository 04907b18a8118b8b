"""The live twin's world process: every node and pool of a policy served from one `LiveWorld`.

Each node and pool address of the (live copy of the) policy gets an aiohttp server.
A request is served as the router decided, read from the `x-route-*` headers Envoy
passes on: `x-route-mode` (`split` on a node: features here, inference in the pool
named by `x-route-split-cloud`; any other mode on a node: an inference at
`x-route-quality`; on a pool: the whole payload to the cloud), the payload being
the request body. No `x-route-mode` is Envoy's fail-open: a full-quality inference.
The answer is JSON: where it ran, the decision as the upstream saw it, and
`upstream_ms`, the time the request spent here (the world's latency, without the
proxy hop).

The process also writes the feed every `refresh_seconds` of scenario time (the
world's `feed`, as the simulator samples it) to a file that `hybrid-router feed serve`
watches and pushes to the router over gRPC `Watch` (as a production feed would reach
it; this process stays off the router's transport); and it applies the
scenario's events at their times: world events through `simulator.run`'s own
`apply_world_event`, a budget change by rewriting the policy file, which the router
reloads as it would in production. Scenario t=0 is set by `POST /start?t0=EPOCH` on
the control address; until then the world is idle and the feed says so. `GET /concurrency`
there gives each node's own count: its slots, the most inferences it held at once, and how
many arrived while every slot was busy (`over_slots`: more than the node's slots in flight).

    python -m simulator.live.upstream --policy LIVE.yaml --scenario F --feed FEED.json \
        --control 127.0.0.1:PORT [--ports-file OUT]

With `--ports-file` every node and pool listens on a port the kernel picks (the policy's
ports are ignored) and OUT gets `{"targets": {"id": port}, "control": port}` once all
listen (`--control` may ask for port 0 too): a caller that writes the real policy
afterwards hands no port over between closing it and this process binding it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from router import wire
from router.core.feedsnapshot import FeedSnapshot, format_time
from router.core.policy import Policy
from router.policy.loader import load_policy
from simulator.live.realtime import LiveWorld, Outcome
from simulator.scenario import Scenario, load_scenario


def feed_document(snap: FeedSnapshot, wall: float) -> dict[str, Any]:
    """A feed document (docs/reference.md, "Feed") saying what `snap` says, stamped `wall`."""
    nodes = []
    for nid, s in snap.nodes.items():
        entry: dict[str, Any] = {"id": nid, "healthy": s.healthy,
                                 "compute_score": s.compute_score, "slots": s.slots,
                                 "inflight": s.inflight,
                                 "vram_used_fraction": round(s.vram_used_fraction, 6)}
        if s.p95_ms is not None:
            entry["p95_ms"] = round(s.p95_ms, 3)
        if s.uplink_mbps is not None:
            entry["uplink_mbps"] = round(s.uplink_mbps, 6)
        nodes.append(entry)
    prices = [{"instance_type": k, "usd_per_hour": v} for k, v in snap.prices.items()]
    return {"version": 1, "generated_at": format_time(wall), "nodes": nodes, "prices": prices}


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so no reader sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Upstreams:
    """The servers, the feed and the events of one live world."""

    def __init__(self, policy: Policy, policy_path: Path, scenario: Scenario,
                 feed_path: Path, loop: asyncio.AbstractEventLoop) -> None:
        """The world for `scenario` with `policy`'s nodes and pools, idle."""
        self.policy, self.policy_path, self.scenario = policy, policy_path, scenario
        self.feed_path = feed_path
        self.live = LiveWorld(policy, scenario.world, scenario.seed, loop)
        self.pool_at = {p.address: p.id for p in policy.pools}
        self.refreshes = 0

    def write_feed(self) -> None:
        """The world's feed now, to the file and at once to the router's watch."""
        doc = feed_document(self.live.feed(time.time()), time.time())
        write_atomically(self.feed_path, json.dumps(doc))
        self.refreshes += 1

    def start(self, t0_wall: float) -> None:
        """Scenario t=0 is wall time `t0_wall`: schedule the feed and the events from it."""
        loop = self.live.loop
        origin = loop.time() + (t0_wall - time.time())
        self.live.start_clock(origin)
        refresh = self.policy.refresh_seconds

        def feed_at(k: int) -> None:
            if self.live.tick() >= self.live.feed_late_until:  # else late (feed_delay)
                self.write_feed()
            loop.call_at(origin + (k + 1) * refresh, feed_at, k + 1)

        loop.call_at(origin, feed_at, 0)
        for ev in self.scenario.events:
            loop.call_at(origin + ev.at_s, self.event, ev.kind, ev.args)

    def event(self, kind: str, args: dict[str, Any]) -> None:
        """One scenario event, now."""
        if not self.live.apply(kind, args) and kind == "budget":
            doc = yaml.safe_load(self.policy_path.read_text())
            tenants = doc.setdefault("budgets", {}).setdefault("tenants", {})
            entry = tenants.get(args["tenant"]) or {}
            tenants[args["tenant"]] = {**entry, "limit_usd": float(args["limit_usd"])}
            write_atomically(self.policy_path, yaml.safe_dump(doc, sort_keys=False))
        print(f"twin: t={self.live.tick():.2f}s {kind} {args}", flush=True)

    async def concurrency(self, _request: web.Request) -> web.Response:
        """`GET /concurrency` on the control address: the nodes' own counts (`LiveWorld`)."""
        return web.json_response(self.live.concurrency())

    async def serve(self, request: web.Request) -> web.Response:
        """One request as the router decided it (module docstring)."""
        entered = self.live.loop.time()
        target: tuple[str, str] = request.app["target"]
        body = await request.read()  # an inference server reads the whole request first
        h = request.headers
        mode = h.get(wire.H_MODE, "fail-open")
        quality = h.get(wire.H_QUALITY) or "full"
        pool = self.pool_at.get(h.get(wire.H_SPLIT_CLOUD, ""))
        kind, tid = target
        if kind == "cloud":
            out = await self.live.cloud(tid, len(body))
        elif mode == wire.MODE_SPLIT and pool is not None:
            out = await self.live.split(tid, pool, len(body))
        else:
            out = await self.live.edge(tid, h.get(wire.H_KEY, ""), quality)
        return _answer(tid, kind, mode, quality, pool, h, out,
                       (self.live.loop.time() - entered) * 1000.0)


def _answer(tid: str, kind: str, mode: str, quality: str, pool: str | None,
            h: Any, out: Outcome, ms: float) -> web.Response:
    body = {"served_by": tid, "kind": kind, "mode": mode,
            "quality": quality if kind == "edge" and mode != wire.MODE_SPLIT else None,
            "split_pool": pool if mode == wire.MODE_SPLIT else None,
            "cost_usd": h.get(wire.H_COST), "upstream_ms": round(ms, 3), "warm": out.warm,
            "status": out.status, "late_ms": round(out.late_ms, 3)}
    return web.json_response(body, status=out.status)


async def _site(app: web.Application, address: str, any_port: bool = False
                ) -> tuple[web.AppRunner, int]:
    """Serve `app` on `address` (on port 0 with `any_port`): its runner and the port bound."""
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0 if any_port else int(port)).start()
    return runner, int(runner.addresses[0][1])


async def _targets(ups: Upstreams, policy: Policy, any_port: bool
                   ) -> tuple[list[web.AppRunner], dict[str, int]]:
    """A server for every node and pool: their runners and {target id: port bound}."""
    runners, ports = [], {}
    for kind, tid, address in [("edge", n.id, n.address) for n in policy.nodes] + \
            [("cloud", p.id, p.address) for p in policy.pools]:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app["target"] = (kind, tid)
        app.router.add_route("*", "/{tail:.*}", ups.serve)
        runner, ports[tid] = await _site(app, address, any_port)
        runners.append(runner)
    # a split names its pool by address: the address it listens on, not the one asked for
    ups.pool_at = {f"{p.address.rpartition(':')[0]}:{ports[p.id]}": p.id for p in policy.pools}
    return runners, ports


async def _main(args: argparse.Namespace, policy: Policy, scenario: Scenario) -> None:
    loop = asyncio.get_running_loop()
    ups = Upstreams(policy, Path(args.policy), scenario, Path(args.feed), loop)
    ups.write_feed()  # the idle world, for the router's first load
    runners, ports = await _targets(ups, policy, args.ports_file is not None)
    started = asyncio.Event()

    async def start(request: web.Request) -> web.Response:
        if started.is_set():
            return web.json_response({"error": "already started"}, status=409)
        ups.start(float(request.query["t0"]))
        started.set()
        return web.json_response({"ok": True})

    control = web.Application()
    control.router.add_post("/start", start)
    control.router.add_get("/concurrency", ups.concurrency)
    runner, control_port = await _site(control, args.control)
    runners.append(runner)
    if args.ports_file is not None:
        write_atomically(Path(args.ports_file),
                         json.dumps({"targets": ports, "control": control_port}))
    print(f"twin: {len(policy.nodes)} nodes, {len(policy.pools)} pools up", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    ups.live.stop()
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Serve the live world until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m simulator.live.upstream",
                                     description=__doc__.split("\n\n")[0])
    for name in ("--policy", "--scenario", "--feed", "--control"):
        parser.add_argument(name, required=True)
    parser.add_argument("--ports-file", metavar="OUT",
                        help="listen on ports the kernel picks; write them to OUT as JSON")
    args = parser.parse_args(argv)
    scenario, problems = load_scenario(args.scenario)
    if scenario is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    asyncio.run(_main(args, load_policy(args.policy), scenario))
    return 0


if __name__ == "__main__":
    sys.exit(main())
