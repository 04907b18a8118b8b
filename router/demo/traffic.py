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

FALLBACK = "fail-open"


@dataclass(frozen=True, slots=True)
class TrafficClass:
    """One kind of request the demo sends."""

    name: str
    weight: float
    headers: tuple[tuple[str, str], ...]
    keys: int


CLASSES = (
    TrafficClass("eu-vision", 0.35, (("x-affinity-tenant", "acme"),
                                     ("x-affinity-residency", "GDPR"),
                                     ("x-affinity-model", "vision-v3"),
                                     ("x-affinity-slo-ms", "60"),
                                     ("x-affinity-degrade", "true")), 400),
    TrafficClass("eu-fraud", 0.25, (("x-affinity-tenant", "fintech"),
                                    ("x-affinity-residency", "GDPR"),
                                    ("x-affinity-model", "fraud-v2"),
                                    ("x-affinity-slo-ms", "75"),
                                    ("x-affinity-degrade", "true")), 2000),
    TrafficClass("us-llm", 0.25, (("x-affinity-tenant", "default"),
                                  ("x-affinity-residency", "CCPA"),
                                  ("x-affinity-model", "llm-8b"),
                                  ("x-affinity-slo-ms", "150"),
                                  ("x-affinity-degrade", "false")), 800),
    TrafficClass("batch", 0.15, (("x-affinity-tenant", "default"),
                                 ("x-affinity-slo-ms", "400"),
                                 ("x-affinity-degrade", "false")), 5000),
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
                mode = resp.headers.get("x-route-mode", FALLBACK)
                stats.record(mode, resp.headers.get("x-route-node", "?"), ms)
            else:
                reason = resp.headers.get("x-route-reason", "")
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
            headers["x-affinity-key"] = key
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
