"""The live twin's scenario in the world process: its t=0, the feed it writes, its events.

The world itself is served by the node emulator (`simulator.emulate`); with a scenario it
also writes the feed every `refresh_seconds` of scenario time (the world's `feed`, as the
simulator samples it) to a file that `hybrid-router feed serve` watches and pushes to the
router over gRPC `Watch` (as a production feed would reach it; the world stays off the
router's transport), and it applies the scenario's events at their times: world events
through `simulator.run`'s own `apply_world_event`, a budget change by rewriting the policy
file, which the router reloads as it would in production. Scenario t=0 is set by
`POST /start?t0=EPOCH` on the control address; until then the world is idle and the feed
says so. `GET /concurrency` there gives each node's own count: its slots, the most
inferences it held at once, and how many arrived while every slot was busy (`over_slots`:
more than the node's slots in flight).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from router.core.feedsnapshot import FeedSnapshot, format_time
from router.core.policy import Policy
from router.harness.bound import write_atomically
from simulator.live.realtime import LiveWorld
from simulator.scenario import Scenario


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


class Timeline:
    """One scenario played on a live world: its feed, its events, its control address."""

    def __init__(self, live: LiveWorld, policy: Policy, policy_path: Path, scenario: Scenario,
                 feed_path: Path) -> None:
        """The scenario on `live`, not started: the world idle, its feed written once."""
        self.live, self.policy, self.policy_path = live, policy, policy_path
        self.scenario, self.feed_path = scenario, feed_path
        self.refreshes = 0
        self.started = False
        self.write_feed()  # the idle world, for the router's first load

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
            # an event due with a feed goes after it, as the simulator orders them (its heap
            # takes REFRESH before EVENT): the loop runs the timers due at one instant in no
            # set order, so a node lost at 25 s was in the 25-s feed in some runs and not others
            loop.call_at(origin + ev.at_s, loop.call_soon, self.event, ev.kind, ev.args)

    def event(self, kind: str, args: dict[str, Any]) -> None:
        """One scenario event, now."""
        if not self.live.apply(kind, args) and kind == "budget":
            doc = yaml.safe_load(self.policy_path.read_text())
            tenants = doc.setdefault("budgets", {}).setdefault("tenants", {})
            entry = tenants.get(args["tenant"]) or {}
            tenants[args["tenant"]] = {**entry, "limit_usd": float(args["limit_usd"])}
            write_atomically(self.policy_path, yaml.safe_dump(doc, sort_keys=False))
        print(f"twin: t={self.live.tick():.2f}s {kind} {args}", flush=True)

    def control(self) -> web.Application:
        """The control address's app: `POST /start?t0=EPOCH`, `GET /concurrency`."""
        app = web.Application()
        app.router.add_post("/start", self._start)
        app.router.add_get("/concurrency", self._concurrency)
        return app

    async def _start(self, request: web.Request) -> web.Response:
        if self.started:
            return web.json_response({"error": "already started"}, status=409)
        try:
            t0 = float(request.query["t0"])
        except (KeyError, ValueError):
            return web.json_response({"error": "give t0=EPOCH (seconds)"}, status=400)
        self.start(t0)
        self.started = True
        return web.json_response({"ok": True})

    async def _concurrency(self, _request: web.Request) -> web.Response:
        return web.json_response(self.live.concurrency())
