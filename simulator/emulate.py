"""The node emulator: every edge node and cloud pool of a policy, in real time, following the
simulator's world model.

Each node and pool address of the policy gets an aiohttp server, and every request is served
by one `LiveWorld` (`simulator.live.realtime`): the simulator's own lifecycle and physics
(`simulator.physics`: slots and queues, warm keys, contention, shared uplinks, the pools'
answer times) on the event loop's clock. So the latency the demo, a test or the live twin
sees is the one a what-if models. A request is served as the router decided, read from the
`x-route-*` headers Envoy passes on: `x-route-mode` (`split` on a node: features here,
inference in the pool named by `x-route-split-cloud`; any other mode on a node: an
inference of `x-affinity-key` at `x-route-quality`; on a pool: the whole payload to the
cloud), the payload being the request body. No `x-route-mode` is Envoy's fail-open: a
full-quality inference.

The answer echoes the `x-route-*` headers and adds `x-served-by`; its JSON body says where
it ran, the decision as the upstream saw it, and `upstream_ms`, the time spent here. Test
hooks in request headers: `x-emulate-delay-ms` (a fixed latency instead of the world's),
`x-emulate-stream-ms` (the headers at once, or after that delay, then the body in chunks
over that many ms, as a streamed answer), `x-emulate-status` (answer with that status),
`x-emulate-reset: 1` (drop the connection). `GET /_stats` on any address says what reached
it: hits, inferences and split feature extractions in flight and the most at once, hits
per mode.

    python -m simulator.emulate --policy FILE [--seed N] [--ports-file OUT]
    python -m simulator.emulate --policy LIVE.yaml --scenario F --feed FEED.json \
        --control 127.0.0.1:PORT [--ports-file OUT]

The first serves a world of the model's defaults (docs/reference.md, "World model"). The
second is the live twin's world: the scenario's `world` and `seed`, its feed and events
(`simulator.live.timeline`) and a control address. With `--ports-file` every node and pool
listens on a port the kernel picks (the policy's ports are ignored) and OUT gets
`{"targets": {"id": port}}` (and `"control": port` with a scenario) once all listen: a
caller that writes the real policy afterwards hands no port over between closing it and
this process binding it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web

from router import wire
from router.core.policy import QUALITY_LEVELS, Policy
from router.harness.bound import write_atomically
from router.policy.loader import PolicyError, load_policy
from simulator.lifecycle import OK
from simulator.live.realtime import LiveWorld, Outcome
from simulator.live.timeline import Timeline
from simulator.scenario import Scenario, WorldConfig, load_scenario

MAX_BODY = 64 * 1024 * 1024  # camera frames, documents
HOOKS = ("x-emulate-delay-ms", "x-emulate-status", "x-emulate-stream-ms")


@dataclass
class Target:
    """One node or pool and what reached it."""

    id: str
    kind: str  # edge | cloud
    address: str
    hits: int = 0
    inflight: int = 0  # inferences: edge modes, cloud, and Envoy's fail-open
    max_inflight: int = 0
    features: int = 0  # split feature extractions, held apart from inference slots
    max_features: int = 0
    modes: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def holding(self, mode: str) -> Iterator[None]:
        """Count one request in `mode` for as long as it is here."""
        self.hits += 1
        self.modes[mode] = self.modes.get(mode, 0) + 1
        split = mode == wire.MODE_SPLIT and self.kind == "edge"
        self._held(split, 1)
        try:
            yield
        finally:
            self._held(split, -1)

    def _held(self, split: bool, n: int) -> None:
        if split:
            self.features += n
            self.max_features = max(self.max_features, self.features)
        else:
            self.inflight += n
            self.max_inflight = max(self.max_inflight, self.inflight)

    def stats(self) -> dict[str, object]:
        """What `GET /_stats` says."""
        return {"id": self.id, "hits": self.hits, "inflight": self.inflight,
                "max_inflight": self.max_inflight, "features": self.features,
                "max_features": self.max_features, "modes": self.modes}


TARGET = web.AppKey("target", Target)


class Asked(NamedTuple):
    """What a request asks of the upstream: the router's decision and the test hooks."""

    mode: str
    quality: str
    split_pool: str | None  # the pool `x-route-split-cloud` names, if one of the policy's
    key: str
    hooks: dict[str, float]  # the numeric test hooks present

    @property
    def fixed(self) -> bool:
        """Whether the hooks fix the answer's time (a delay, a stream): the world is not asked."""
        return "x-emulate-delay-ms" in self.hooks or "x-emulate-stream-ms" in self.hooks

    @classmethod
    def read(cls, h: Mapping[str, str], pool_at: Mapping[str, str]) -> Asked:
        """The request's headers read; ValueError says which one is wrong."""
        quality = h.get(wire.H_QUALITY) or "full"
        if quality not in QUALITY_LEVELS:
            raise ValueError(f"{wire.H_QUALITY} must be one of {', '.join(QUALITY_LEVELS)}, "
                             f"got {quality!r}")
        hooks = {}
        for name in HOOKS:
            if name in h:
                try:
                    hooks[name] = float(h[name])
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {h[name]!r}") from None
        return cls(h.get(wire.H_MODE, "fail-open"), quality,
                   pool_at.get(h.get(wire.H_SPLIT_CLOUD, "")), h.get(wire.H_KEY, ""), hooks)


class Emulator:
    """Every node and pool of a policy, served from one live world (module docstring)."""

    def __init__(self, policy: Policy, world: LiveWorld) -> None:
        """The targets on the policy's addresses; nothing listens yet."""
        self.world = world
        self.targets = [Target(n.id, "edge", n.address) for n in policy.nodes]
        self.targets += [Target(p.id, "cloud", p.address) for p in policy.pools]
        self.pool_at: dict[str, str] = {}

    async def listen(self, any_port: bool) -> list[web.AppRunner]:
        """A server on every target's address, or on a port the kernel picks (`any_port`,
        and the target's address becomes the one bound); their runners."""
        runners = []
        for target in self.targets:
            app = web.Application(client_max_size=MAX_BODY)
            app[TARGET] = target
            app.router.add_get("/_stats", _stats)
            app.router.add_route("*", "/{tail:.*}", self.handle)
            runner, target.address = await listen(app, target.address, any_port)
            runners.append(runner)
        # a split names its pool by address: the one it listens on, not the one asked for
        self.pool_at = {t.address: t.id for t in self.targets if t.kind == "cloud"}
        return runners

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One request as the router decided it, or as its test hooks say (module docstring)."""
        target = request.app[TARGET]
        try:
            asked = Asked.read(request.headers, self.pool_at)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        with target.holding(asked.mode):
            entered = self.world.loop.time()
            nbytes = len(await request.read())  # an inference server reads it all first
            if asked.fixed:
                await asyncio.sleep(asked.hooks.get("x-emulate-delay-ms", 0.0) / 1000.0)
                out = Outcome(OK)
            else:
                out = await self._world(target, asked, nbytes)
            ms = (self.world.loop.time() - entered) * 1000.0
            if request.headers.get("x-emulate-reset") == "1":
                if request.transport is not None:
                    request.transport.abort()
                raise web.HTTPInternalServerError()
            return await _answer(request, target, asked, out, ms)

    async def _world(self, target: Target, asked: Asked, nbytes: int) -> Outcome:
        if target.kind == "cloud":
            return await self.world.cloud(target.id, nbytes)
        if asked.mode == wire.MODE_SPLIT and asked.split_pool is not None:
            return await self.world.split(target.id, asked.split_pool, nbytes)
        return await self.world.edge(target.id, asked.key, asked.quality)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[TARGET].stats())


async def _answer(request: web.Request, target: Target, asked: Asked, out: Outcome,
                  ms: float) -> web.StreamResponse:
    """The route headers echoed with `x-served-by`, and where and how it ran as JSON."""
    h = request.headers
    status = int(asked.hooks.get("x-emulate-status", out.status))
    echo = {k: v for k, v in h.items() if k.lower().startswith(wire.ROUTE_PREFIX)}
    echo["x-served-by"] = target.id
    if "x-emulate-stream-ms" in asked.hooks:
        return await _stream(request, status, echo, asked.hooks["x-emulate-stream-ms"])
    split = asked.mode == wire.MODE_SPLIT
    body = {"served_by": target.id, "kind": target.kind, "mode": asked.mode,
            "quality": asked.quality if target.kind == "edge" and not split else None,
            "split_pool": asked.split_pool if split else None,
            "cost_usd": h.get(wire.H_COST), "upstream_ms": round(ms, 3), "warm": out.warm,
            "status": status, "late_ms": round(out.late_ms, 3),
            "route": {k.lower(): v for k, v in echo.items()}}
    return web.json_response(body, status=status, headers=echo)


async def _stream(request: web.Request, status: int, headers: dict[str, str],
                  ms: float, chunks: int = 10) -> web.StreamResponse:
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_type = "text/event-stream"
    await resp.prepare(request)
    for i in range(chunks):
        await asyncio.sleep(ms / 1000.0 / chunks)
        await resp.write(f"data: {i}\n\n".encode())
    await resp.write_eof()
    return resp


async def listen(app: web.Application, address: str, any_port: bool
                 ) -> tuple[web.AppRunner, str]:
    """Serve `app` on `address` (on port 0 with `any_port`): its runner and the address bound."""
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, 0 if any_port else int(port)).start()
    return runner, f"{host}:{runner.addresses[0][1]}"


async def _serve(args: argparse.Namespace, policy: Policy, scenario: Scenario | None) -> None:
    loop = asyncio.get_running_loop()
    world = LiveWorld(policy, scenario.world if scenario else WorldConfig(),
                      scenario.seed if scenario else args.seed, loop)
    emu = Emulator(policy, world)
    runners = await emu.listen(args.ports_file is not None)
    bound: dict[str, Any] = {"targets": {t.id: int(t.address.rpartition(":")[2])
                                         for t in emu.targets}}
    if scenario is not None:  # the feed is written before the ports: a twin waits for both
        timeline = Timeline(world, policy, Path(args.policy), scenario, Path(args.feed))
        runner, control = await listen(timeline.control(), args.control, False)
        runners.append(runner)
        bound["control"] = int(control.rpartition(":")[2])
    else:
        world.forget_every(policy.refresh_seconds)
    if args.ports_file is not None:
        write_atomically(Path(args.ports_file), json.dumps(bound))
    print(f"emulate: {len(policy.nodes)} nodes, {len(policy.pools)} pools up", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    world.stop()
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Serve every node and pool of a policy until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m simulator.emulate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--seed", type=int, default=1,
                        help="the world's random seed without --scenario (default 1)")
    parser.add_argument("--ports-file", metavar="OUT",
                        help="listen on ports the kernel picks; write them to OUT as JSON")
    twin = parser.add_argument_group("the live twin's world (all three or none)")
    twin.add_argument("--scenario", help="its world, seed, events and feed period")
    twin.add_argument("--feed", metavar="FEED.json", help="where the world's feed is written")
    twin.add_argument("--control", metavar="HOST:PORT", help="POST /start, GET /concurrency")
    args = parser.parse_args(argv)
    if len({args.scenario is None, args.feed is None, args.control is None}) > 1:
        parser.error("--scenario, --feed and --control go together")
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    scenario = None
    if args.scenario is not None:
        scenario, problems = load_scenario(args.scenario)
        for problem in problems:
            print(problem, file=sys.stderr)
        if scenario is None:
            return 2
    asyncio.run(_serve(args, policy, scenario))
    return 0


if __name__ == "__main__":
    sys.exit(main())
