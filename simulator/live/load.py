"""The live twin's load: the scenario's arrivals, sent open-loop through Envoy and recorded.

The arrivals are the simulator's own (`simulator.traffic.arrivals` with the scenario's
seed: the same times, classes and keys), each sent at its scheduled time whatever
the earlier requests are doing, with its class's affinity tags as headers and a body
of the class's `payload_kb`. Per request it records what the upstream answered
(where it ran, the decision it was given, the time it spent there) or, for a
refusal, the router's reason; the latency the client saw, from the moment the
request was sent to the end of the answer; and how late it was sent (`lag_ms`: the
load generator's own lateness, which a saturated machine shows first).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from router import wire
from simulator.scenario import TrafficClass

Route = Callable[[str], tuple[int, str | None]]  # key -> (gateway, its Envoy's URL)
CLIENT_SLACK_S = 15.0  # past the world's longest request, the client stops waiting


def class_headers(cls: TrafficClass) -> dict[str, str]:
    """The affinity tags a request of `cls` carries (its key added per request)."""
    h = {wire.H_TENANT: cls.tenant, wire.H_DEGRADE: "true" if cls.degrade else "false",
         wire.H_SLO: str(max(1, round(cls.slo_ms)))}
    if cls.residency:
        h[wire.H_RESIDENCY] = ",".join(sorted(cls.residency))
    if cls.model is not None:
        h[wire.H_MODEL] = cls.model
    if cls.max_cost_usd is not None:
        h[wire.H_MAX_COST] = f"{cls.max_cost_usd:.9f}".rstrip("0").rstrip(".")  # no exponent
    return h


@dataclass
class Recorded:
    """Per-request columns of a live run, in arrival order."""

    n: int
    mode: list[str] = field(default_factory=list)
    node: list[str] = field(default_factory=list)  # node, or pool for cloud; '' when refused
    pool: list[str | None] = field(default_factory=list)
    quality: list[str | None] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)  # as the client saw it
    upstream_ms: list[float] = field(default_factory=list)  # time spent in the world
    late_ms: list[float] = field(default_factory=list)  # the world's timers, past their time
    lag_ms: list[float] = field(default_factory=list)
    warm: list[bool | None] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    gateway: list[int] = field(default_factory=list)  # whose Envoy it went to; -1: none up

    def __post_init__(self) -> None:
        """Every column sized `n`, unanswered until a request ends."""
        n = self.n
        self.mode, self.node, self.pool = ["error"] * n, [""] * n, [None] * n
        self.quality, self.cost_usd = [None] * n, [0.0] * n
        self.latency_ms, self.upstream_ms = [math.nan] * n, [math.nan] * n
        self.late_ms = [math.nan] * n
        self.lag_ms, self.warm, self.status = [0.0] * n, [None] * n, [0] * n
        self.reason, self.gateway = [""] * n, [0] * n

    def record(self, i: int, status: int, headers: Any, text: str) -> None:
        """What request `i`'s answer says."""
        self.status[i] = status
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        if not isinstance(body, dict) or "served_by" not in body:
            self.mode[i] = "refused" if 400 <= status < 600 else "error"
            self.reason[i] = headers.get(wire.H_REASON, body.get("error", "")
                                         if isinstance(body, dict) else "")
            return
        mode = str(body["mode"])
        self.mode[i] = mode
        self.node[i] = str(body["served_by"])
        self.pool[i] = body["served_by"] if body["kind"] == "cloud" else body.get("split_pool")
        self.quality[i] = body.get("quality")
        self.cost_usd[i] = float(body.get("cost_usd") or 0.0)
        self.upstream_ms[i] = float(body["upstream_ms"])
        self.late_ms[i] = float(body.get("late_ms") or 0.0)
        self.warm[i] = body.get("warm")


async def drive(route: Route, times: list[float], cls_of: list[int], keys: list[str],
                classes: tuple[TrafficClass, ...], origin: float,
                client_timeout_s: float) -> Recorded:
    """Send request i at loop time `origin + times[i]` to the Envoy `route` names for its
    key then; wait for every answer."""
    loop = asyncio.get_running_loop()
    out = Recorded(len(times))
    headers = [class_headers(c) for c in classes]
    bodies = [b"\0" * int(c.payload_kb * 1024) for c in classes]
    timeout = aiohttp.ClientTimeout(total=client_timeout_s + CLIENT_SLACK_S)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            c = cls_of[i]
            sent = loop.time()
            out.lag_ms[i] = (sent - origin - times[i]) * 1000.0
            out.gateway[i], url = route(keys[i])
            if url is None:
                out.mode[i], out.reason[i] = "refused", "no gateway up"
                return
            try:
                async with session.post(url, data=bodies[c],
                                        headers={**headers[c], wire.H_KEY: keys[i]}) as r:
                    text = await r.text()
                    out.latency_ms[i] = (loop.time() - sent) * 1000.0
                    out.record(i, r.status, r.headers, text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                out.latency_ms[i] = (loop.time() - sent) * 1000.0
                out.reason[i] = type(exc).__name__

        tasks = []
        for i, t in enumerate(times):
            wait = origin + t - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return out


def wall_origin(lead_s: float) -> tuple[float, float]:
    """(wall time, loop time) of a t=0 `lead_s` seconds from now, read together."""
    loop = asyncio.get_running_loop()
    return time.time() + lead_s, loop.time() + lead_s
