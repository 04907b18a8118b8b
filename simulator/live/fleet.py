"""The live twin with several gateways (a scenario's `gateways:`, two or more).

One redis-server, started here (persistent: AOF, as the store refuses a Redis without it)
in the run's directory and stopped with every other process, and per gateway a router
(`router-I`) and the Envoy in front of it (`envoy-I`), every router on that store (the
policy copy's `budgets.store`, with `capacity_sync` the scenario's `lease_sync_s`): they
share the budgets and lease the nodes' slots from it.

Traffic: each request goes to the Envoy of its key's gateway, picked as the simulator
picks it (`simulator.gateways.pick`: by the shares, among the gateways up).
`gateway_down: I` moves gateway I's clients to the others at once, as the simulator does,
and SIGKILLs its router: no goodbye to the store, so its slot leases go back only at
`capacity_ttl`, as a crashed router's do. Its Envoy stays up without traffic (an Envoy
whose router is gone fails open, which a dead gateway does not do). `gateway_up: I`
starts the router again on its old ext_proc port (its Envoy reconnects there), and the
clients come back once it listens.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.harness.procs import Processes, free_port, wait_port
from simulator.gateways import cumulative, pick
from simulator.live import stack
from simulator.scenario import Scenario


class RedisUnavailable(RuntimeError):
    """The scenario names gateways and no redis-server could be started."""


@dataclass
class Fleet:
    """The gateways of one live run: their ports, which are up, what happened to them."""

    shares: list[float]
    upstream_timeout_s: float
    ports: list[dict[str, int]] = field(default_factory=list)
    up: list[bool] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # {t, gateway, event}
    _edges: tuple[list[float], list[int]] = ([], [])

    def __post_init__(self) -> None:
        """Every gateway up."""
        self.up = [True] * len(self.shares)
        self._edges = cumulative(self.shares, self.up)

    def route(self, key: str) -> tuple[int, str | None]:
        """(gateway, its Envoy's URL) for a request of `key` now; (-1, None) when none is up."""
        g = pick(key, *self._edges)
        return (g, f"http://127.0.0.1:{self.ports[g]['listen']}/infer") if g >= 0 else (g, None)

    def _set(self, index: int, up: bool, t: float) -> None:
        self.up[index] = up
        self._edges = cumulative(self.shares, self.up)
        self.events.append({"t": round(t, 3), "gateway": index, "event": "up" if up else "down"})

    def down(self, procs: Processes, index: int, t: float) -> None:
        """`gateway_down`: its clients move now, its router is SIGKILLed."""
        self._set(index, False, t)
        proc = procs.procs.pop(f"router-{index}", None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self, procs: Processes, twin: stack.Twin, index: int, t0: float) -> None:
        """`gateway_up`: its router again on its old port; its clients back once it listens
        (blocking: run in a thread). `t0` is the monotonic time of scenario t=0."""
        if self.up[index]:
            return
        grpc = self.ports[index]["grpc"]
        self.ports[index].update(stack.start_router(procs, twin, f"router-{index}",
                                                    self.upstream_timeout_s, grpc))
        self._set(index, True, time.monotonic() - t0)


def redis_url(port: int, sync_s: float) -> str:
    """The store URL the routers share: node-slot leases synced every `sync_s`."""
    return f"redis://127.0.0.1:{port}/0?capacity_sync={sync_s:g}"


def start_redis(procs: Processes, twin: stack.Twin) -> int:
    """A persistent redis-server in the run's directory, listening: its port."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RedisUnavailable("the scenario names gateways, which share a Redis store, and "
                               "no redis-server is on PATH (apt-get install redis-server)")
    port = free_port()  # redis-server's --port 0 means no TCP at all
    proc = procs.start("redis", [exe, "--bind", "127.0.0.1", "--port", str(port),
                                 "--dir", str(twin.state), "--save", "", "--appendonly", "yes",
                                 "--protected-mode", "no", "--loglevel", "warning"])
    try:
        wait_port(port, 10.0, proc)
    except (RuntimeError, TimeoutError) as exc:
        raise RedisUnavailable(f"redis-server did not start: {exc}") from exc
    return port


def start(procs: Processes, twin: stack.Twin, scenario: Scenario, upstream_timeout_s: float
          ) -> Fleet:
    """Redis, the world and its feed server, then each gateway's router and Envoy."""
    port = start_redis(procs, twin)
    twin.doc.setdefault("budgets", {})["store"] = redis_url(port, scenario.lease_sync_s)
    stack.start_upstreams(procs, twin, Path(scenario.file))
    fleet = Fleet([g.share for g in scenario.gateways], upstream_timeout_s)
    for i in range(len(fleet.shares)):
        fleet.ports.append(stack.start_gateway(procs, twin, f"-{i}", upstream_timeout_s))
    return fleet


class GatewaySwitch:
    """A live run's gateways and the scenario's `gateway_down` / `gateway_up` events."""

    def __init__(self, gateways: Fleet, procs: Processes, twin: stack.Twin,
                 scenario: Scenario) -> None:
        """The switch for `gateways`, started by `procs` with `twin`'s policy."""
        self.fleet, self.procs, self.twin = gateways, procs, twin
        self.events = [(e.at_s, e.kind == "gateway_up", int(e.args["gateway"]))
                       for e in scenario.events if e.kind in ("gateway_down", "gateway_up")]

    def schedule(self, origin: float) -> list[asyncio.Task[None]]:
        """Each event at loop time `origin + at_s` (t=0 at `origin`)."""
        return [asyncio.create_task(self._at(origin, at, up, g)) for at, up, g in self.events]

    async def _at(self, origin: float, at_s: float, up: bool, index: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, origin + at_s - loop.time()))
        t0 = time.monotonic() - (loop.time() - origin)
        if up:
            await asyncio.to_thread(self.fleet.restart, self.procs, self.twin, index, t0)
        else:
            await asyncio.to_thread(self.fleet.down, self.procs, index, loop.time() - origin)
