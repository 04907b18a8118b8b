"""Mixed demo traffic through Envoy, and the statistics the live summary shows.

Open loop at a fixed rate: several tenants, residencies, SLOs and keys. The
route a request took is read back from the response headers the emulated
upstreams echo (`x-route-mode`, `x-route-node`, ...); a request that reached
an upstream without them went through Envoy's fail-open path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from router import wire

FALLBACK = "fail-open"


@dataclass(frozen=True, slots=True)
class TrafficClass:
    """One kind of request the demo sends."""

    name: str
    weight: float
    headers: tuple[tuple[str, str], ...]
    keys: int


def _class(name: str, weight: float, keys: int, *, tenant: str, slo_ms: int, degrade: bool,
           residency: str | None = None, model: str | None = None) -> TrafficClass:
    """A class whose requests carry these tags in the router's request headers."""
    tags = ((wire.H_TENANT, tenant), (wire.H_RESIDENCY, residency), (wire.H_MODEL, model),
            (wire.H_SLO, str(slo_ms)), (wire.H_DEGRADE, "true" if degrade else "false"))
    return TrafficClass(name, weight, tuple((h, v) for h, v in tags if v is not None), keys)


CLASSES = (
    _class("eu-vision", 0.35, 400, tenant="acme", residency="GDPR", model="vision-v3",
           slo_ms=60, degrade=True),
    _class("eu-fraud", 0.25, 2000, tenant="fintech", residency="GDPR", model="fraud-v2",
           slo_ms=75, degrade=True),
    _class("us-llm", 0.25, 800, tenant="default", residency="CCPA", model="llm-8b",
           slo_ms=150, degrade=False),
    _class("batch", 0.15, 5000, tenant="default", slo_ms=400, degrade=False),
)


@dataclass
class Stats:
    """Rolling counters and latency samples, per mode."""

    window_s: float = 10.0
    started: float = field(default_factory=time.monotonic)
    total: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    modes: collections.Counter[str] = field(default_factory=collections.Counter)
    nodes: collections.Counter[str] = field(default_factory=collections.Counter)
    recent: collections.deque[tuple[float, str, float]] = field(
        default_factory=collections.deque)

    def record(self, mode: str, node: str, latency_ms: float) -> None:
        """One finished request."""
        now = time.monotonic()
        self.total += 1
        self.modes[mode] += 1
        self.nodes[node] += 1
        self.recent.append((now, mode, latency_ms))
        while self.recent and self.recent[0][0] < now - self.window_s:
            self.recent.popleft()

    def rate(self) -> float:
        """Requests per second over the window."""
        if not self.recent:
            return 0.0
        span = max(1.0, min(self.window_s, time.monotonic() - self.started))
        return len(self.recent) / span

    def percentiles(self) -> dict[str, tuple[int, float, float, float]]:
        """Per mode over the window: (count, p50, p95, p99) in ms."""
        by_mode: dict[str, list[float]] = collections.defaultdict(list)
        for _, mode, ms in self.recent:
            by_mode[mode].append(ms)
        out = {}
        for mode, values in sorted(by_mode.items()):
            arr = np.asarray(values)
            p50, p95, p99 = np.percentile(arr, [50, 95, 99])
            out[mode] = (len(values), float(p50), float(p95), float(p99))
        return out


async def _one(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
               stats: Stats) -> None:
    t0 = time.perf_counter()
    try:
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            ms = (time.perf_counter() - t0) * 1000.0
            if resp.status == 200:
                mode = resp.headers.get(wire.H_MODE, FALLBACK)
                stats.record(mode, resp.headers.get(wire.H_NODE, "?"), ms)
            else:
                reason = resp.headers.get(wire.H_REASON, "")
                stats.errors[f"{resp.status} {reason}".strip()] += 1
    except (TimeoutError, aiohttp.ClientError) as exc:
        stats.errors[type(exc).__name__] += 1


async def drive(url: str, rate_rps: float, stats: Stats, stop: asyncio.Event, *,
                seed: int = 7) -> None:
    """Send requests at `rate_rps` (Poisson arrivals) until `stop` is set."""
    rng = np.random.default_rng(seed)
    weights = np.asarray([c.weight for c in CLASSES])
    weights = weights / weights.sum()
    timeout = aiohttp.ClientTimeout(total=5.0)
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        next_at = time.monotonic()
        while not stop.is_set():
            cls = CLASSES[int(rng.choice(len(CLASSES), p=weights))]
            key = f"{cls.name}-{int(rng.zipf(1.3)) % cls.keys}"
            headers = dict(cls.headers)
            headers[wire.H_KEY] = key
            task = asyncio.create_task(_one(session, url, headers, stats))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += float(rng.exponential(1.0 / rate_rps))
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        if pending:
            await asyncio.wait(pending, timeout=6.0)
