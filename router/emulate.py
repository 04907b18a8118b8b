"""Emulated edge nodes and cloud pools: one small HTTP server per policy address.

Each answers after a latency drawn from its profile (a node's base latency
scaled by the quality it was asked for, a pool's latency), records what reached
it, and echoes the route headers so a client can see where it ran. Test hooks
in request headers: `x-emulate-delay-ms` (fixed latency), `x-emulate-status`
(answer with that status), `x-emulate-reset: 1` (drop the connection),
`x-emulate-stream-ms` (send the headers at once, then the body in chunks over
that many milliseconds, as a streamed inference answer would).
`GET /_stats` returns hits, in-flight and max in-flight as JSON.

    python -m router.emulate --policy FILE [--speed 1.0] [--any-port --ports-file OUT]

With `--any-port` every target listens on a port the kernel picks (the policy's ports are
ignored) and OUT gets `{"target id": port}` once all listen: a caller that writes the real
policy afterwards hands no port over between closing it and the emulator binding it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from router import wire
from router.core.policy import LATENCY_FACTOR, Policy
from router.policy.loader import PolicyError, load_policy


@dataclass
class Target:
    """One emulated node or pool and what reached it."""

    id: str
    address: str
    latency_ms: float
    kind: str  # edge | cloud
    hits: int = 0
    inflight: int = 0  # inference: edge modes, cloud, and Envoy's fail-open
    max_inflight: int = 0
    features: int = 0  # split feature extractions, held apart from inference slots
    max_features: int = 0
    modes: dict[str, int] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)

    def stats(self) -> dict[str, object]:
        """JSON-able counters."""
        return {"id": self.id, "hits": self.hits, "inflight": self.inflight,
                "max_inflight": self.max_inflight, "features": self.features,
                "max_features": self.max_features, "modes": self.modes}


TARGET = web.AppKey("target", Target)


def targets(policy: Policy) -> list[Target]:
    """Every node and pool of `policy` as a target."""
    out = [Target(n.id, n.address, n.base_latency_ms, "edge") for n in policy.nodes]
    out += [Target(p.id, p.address, p.latency_ms, "cloud") for p in policy.pools]
    return out


def make_app(target: Target, *, speed: float = 1.0, seed: int = 0) -> web.Application:
    """The aiohttp app serving one target."""
    rng = random.Random(f"{target.id}-{seed}")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(target.stats())

    async def handle(request: web.Request) -> web.StreamResponse:
        h = request.headers
        target.hits += 1
        mode = h.get(wire.H_MODE, "fail-open")
        split = mode == wire.MODE_SPLIT and target.kind == "edge"
        if split:
            target.features += 1
            target.max_features = max(target.max_features, target.features)
        else:
            target.inflight += 1
            target.max_inflight = max(target.max_inflight, target.inflight)
        target.modes[mode] = target.modes.get(mode, 0) + 1
        try:
            await request.read()  # an inference server reads the whole request before it answers
            if "x-emulate-delay-ms" in h:
                delay = float(h["x-emulate-delay-ms"]) / 1000.0
            else:
                factor = LATENCY_FACTOR.get(h.get(wire.H_QUALITY, "full"), 1.0)
                base = target.latency_ms * factor
                delay = max(0.0, rng.gauss(base, base * 0.15)) / 1000.0 / speed
            await asyncio.sleep(delay)
            if h.get("x-emulate-reset") == "1":
                if request.transport is not None:
                    request.transport.abort()
                raise web.HTTPInternalServerError()
            status = int(h.get("x-emulate-status", "200"))
            echo = {k: v for k, v in h.items() if k.lower().startswith(wire.ROUTE_PREFIX)}
            echo["x-served-by"] = target.id
            if "x-emulate-stream-ms" in h:
                return await _stream(request, status, echo, float(h["x-emulate-stream-ms"]))
            body = json.dumps({"served_by": target.id, "kind": target.kind, "mode": mode,
                               "route": {k.lower(): v for k, v in echo.items()}})
            return web.Response(status=status, text=body, headers=echo,
                                content_type="application/json")
        finally:
            if split:
                target.features -= 1
            else:
                target.inflight -= 1

    app = web.Application(client_max_size=64 * 1024 * 1024)  # camera frames, documents
    app[TARGET] = target
    app.router.add_get("/_stats", stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


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


async def serve(policy: Policy, *, speed: float = 1.0, any_port: bool = False
                ) -> list[web.AppRunner]:
    """Start a server for every target; returns the runners (cleanup() each to stop).

    With `any_port` each binds port 0 and its target's `address` becomes the bound one.
    """
    runners = []
    for target in targets(policy):
        host, _, port = target.address.rpartition(":")
        runner = web.AppRunner(make_app(target, speed=speed), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0 if any_port else int(port))
        await site.start()
        if any_port:
            server: Any = site._server  # aiohttp keeps the bound socket only here
            target.address = f"{host}:{server.sockets[0].getsockname()[1]}"
        runners.append(runner)
    return runners


def write_ports(path: str, runners: list[web.AppRunner]) -> None:
    """`{"target id": port}` for every target, written whole (rename) so a reader never
    sees half of it."""
    ports = {}
    for runner in runners:
        target = runner.app[TARGET]
        ports[target.id] = int(target.address.rpartition(":")[2])
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(ports))
    tmp.replace(path)


async def _main(policy: Policy, speed: float, ports_file: str | None) -> None:
    runners = await serve(policy, speed=speed, any_port=ports_file is not None)
    if ports_file is not None:
        write_ports(ports_file, runners)
    print(f"emulate: {len(runners)} targets up", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Serve every target of a policy until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m router.emulate", description=__doc__)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--speed", type=float, default=1.0,
                        help="divide every latency by this (default 1)")
    parser.add_argument("--any-port", action="store_true",
                        help="listen on ports the kernel picks instead of the policy's")
    parser.add_argument("--ports-file", metavar="OUT",
                        help="with --any-port: write {target id: port} as JSON once all listen")
    args = parser.parse_args(argv)
    if args.any_port != (args.ports_file is not None):
        parser.error("--any-port and --ports-file go together")
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    asyncio.run(_main(policy, args.speed, args.ports_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
