"""Router and Envoy agree after a restart, through real Envoy (issue 20, item 4).

A router restarted with a changed policy (eu-b removed, eu-c added) used to answer
with eu-c while Envoy, still waiting out its ADS reconnect backoff, held the old
clusters: `override_host` fell back to ring hash and served the request on eu-b, the
removed node, under an `x-route-node: eu-c`. Now the router names only endpoints the
asking Envoy has ACKed (503 `xds-pending` until it has), and ADS reconnects within
half a second.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from .stack import POLICY, Stack, free_port

# how soon Envoy holds the new endpoints
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.alone]
Result = tuple[float, int, dict[str, str]]  # (start time, status, response headers)
Marks = dict[str, float]  # moments of the scenario, time.monotonic()
PENDING = 'router_refusals_total{code="503",reason="xds-pending"}'


def with_eu_c(stack: Stack) -> str:
    """The stack's policy with eu-b replaced by eu-c, served by an emulator of its own."""
    extra = stack.tmp / "extra.yaml"
    extra.write_text("version: 1\nedge:\n  nodes:\n    - {id: eu-c, address: \"127.0.0.1:1\", "
                     "weight: 4, slots: 16, residency: [GDPR]}\n")
    port = stack.emulate("emulate-extra", extra)["eu-c"]
    text = POLICY.format(store="memory", **stack.ports)
    start = text.index('    - {id: eu-b, address:')
    end = text.index("\n    - {id: us-a")
    edited = (text[:start] + f'    - {{id: eu-c, address: "127.0.0.1:{port}", '
              'hardware: a100-80g, weight: 4, slots: 16,\n       residency: [GDPR], '
              'base_latency_ms: 4}' + text[end:])
    assert "eu-b" not in edited and "eu-c" in edited
    return edited


async def load(stack: Stack, stop: asyncio.Event, out: list[Result]) -> None:
    """Closed-loop GDPR traffic from 12 clients until `stop`."""
    async def client(i: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            headers = {"x-affinity-key": f"c{i}-{n % 40}", "x-affinity-residency": "GDPR"}
            began = time.monotonic()
            try:
                async with session.get(stack.url + "/infer", headers=headers) as resp:
                    await resp.read()
                    out.append((began, resp.status,
                                {k.lower(): v for k, v in resp.headers.items()}))
            except aiohttp.ClientError:
                out.append((began, -1, {}))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await asyncio.gather(*(client(i, session) for i in range(12)))


def restart_under_load(stack: Stack, policy: str, then: Callable[[Marks], Awaitable[None]],
                       router_args: tuple[str, ...] | None = None) -> tuple[list[Result], Marks]:
    """Under load, kill the router and start it on `policy` (and `router_args`) without
    waiting for Envoy to sync (mark "up"), then run `then`; every request's result."""
    results: list[Result] = []
    marks: Marks = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        traffic = asyncio.create_task(load(stack, stop, results))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stack.stop_router, signal.SIGKILL)
        stack.policy.write_text(policy)
        if router_args is not None:
            stack.router_args = router_args
        await asyncio.to_thread(stack.start_router, wait_synced=False)
        marks["up"] = time.monotonic()
        await then(marks)
        stop.set()
        await traffic

    asyncio.run(scenario())
    return results, marks


@pytest.mark.parametrize("workers", [1, 2])
def test_restart_with_a_changed_policy_under_load_never_routes_to_the_removed_node(
        tmp_path: Path, workers: int) -> None:
    # a 2 s message timeout: the subject is the restart, not the 200 ms deadline. With two
    # workers Envoy's ADS stream is on one of them, its ext_proc streams on both: the
    # other worker decides among what Envoy ACKed there too (router.xds.ackshare)
    stack = Stack(tmp_path, message_timeout_s=2.0, workers=workers).start()
    try:
        async def then(marks: Marks) -> None:  # the new router serves; Envoy reconnects
            await asyncio.to_thread(stack.wait_synced)
            marks["synced"] = time.monotonic()
            await asyncio.sleep(2.0)

        results, marks = restart_under_load(stack, with_eu_c(stack), then)
        after = [(s, h) for t, s, h in results if t > marks["up"]]
        served = Counter(h.get("x-served-by") for s, h in after if s == 200)
        assert len(after) > 100 and served["eu-c"] > 0, served
        # the removed node: the router never names it once it is back, and nothing reaches
        # it once Envoy holds the new endpoints. Before that, a request Envoy forwarded
        # without the router (its message missed the deadline: the documented fail-safe)
        # goes by the clusters Envoy still holds, which have eu-b.
        on_b = [(round(t - marks["up"], 2), h.get("x-route-reason"), h.get("x-route-node"))
                for t, s, h in results if t > marks["up"] and h.get("x-served-by") == "eu-b"]
        assert all(reason == "fail-open" and node is None and t < marks["synced"] - marks["up"]
                   for t, reason, node in on_b), (on_b, round(marks["synced"] - marks["up"], 2))
        routed = [h for s, h in after if s == 200 and "x-route-node" in h]
        assert routed and all(h["x-route-node"] == h["x-served-by"] for h in routed), \
            Counter((h["x-route-node"], h["x-served-by"]) for h in routed)
        # until Envoy held the new endpoints the router said so, in the open
        pending = [h for s, h in after if s == 503]
        assert all(h.get("x-route-reason") == "xds-pending" for h in pending), \
            Counter(h.get("x-route-reason") for h in pending)
        synced_in = marks["synced"] - marks["up"]
        assert synced_in < 3.0, f"Envoy took {synced_in:.1f} s to hold the new endpoints"
        assert all(s in (200, 503) for s, _ in after), Counter(s for s, _ in after)
    finally:
        stack.close()


def pending(stack: Stack) -> list[float]:
    """Each worker's xds-pending refusals so far (0: not listening yet)."""
    out = []
    for i in range(stack.workers):
        try:
            out.append(stack.metrics(i).get(PENDING, 0.0))
        except OSError:
            out.append(0.0)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_until_envoy_holds_the_new_endpoints_the_router_refuses_rather_than_misroutes(
        tmp_path: Path, workers: int) -> None:
    # ADS on its own port (serve/envoy-config --xds); the restarted router first listens for
    # ADS where Envoy does not look, so Envoy keeps the old clusters as long as it likes.
    # With two workers no worker has a record of this Envoy then: whichever of them an
    # ext_proc stream reaches (Envoy's four threads hold a connection each) refuses.
    xds = f"127.0.0.1:{free_port()}"
    stack = Stack(tmp_path, message_timeout_s=2.0, router_args=("--xds", xds),
                  envoy_args=("--xds", xds), workers=workers,
                  envoy_concurrency=2 * workers).start()
    try:
        refused: list[float] = []

        async def then(marks: Marks) -> None:
            await asyncio.sleep(2.0)
            refused.extend(await asyncio.to_thread(pending, stack))
            marks["fixed"] = time.monotonic()
            await asyncio.to_thread(stack.stop_router)
            stack.router_args = ("--xds", xds)
            await asyncio.to_thread(stack.start_router)  # until Envoy holds the new set
            marks["synced"] = time.monotonic()
            await asyncio.sleep(1.5)

        results, marks = restart_under_load(stack, with_eu_c(stack), then,
                                            ("--xds", f"127.0.0.1:{free_port()}"))
        unsynced = [(s, h) for t, s, h in results if marks["up"] < t < marks["fixed"] - 0.5]
        assert len(unsynced) > 50
        # Envoy never held eu-c: every answer the router gave was a refusal that says why
        assert Counter((s, h.get("x-route-reason")) for s, h in unsynced) == \
            {(503, "xds-pending"): len(unsynced)}
        assert sum(refused) > 50, refused  # per worker
        synced = [(s, h) for t, s, h in results if t > marks["synced"]]
        served = Counter(h.get("x-served-by") for s, h in synced if s == 200)
        assert len(synced) > 50 and served["eu-c"] > 0 and served["eu-b"] == 0, served
        assert all(h["x-route-node"] == h["x-served-by"] for s, h in synced if s == 200)
        # eu-b saw only what Envoy routed on its own while the router was going down and
        # down between the two restarts (the documented fail-safe, on the clusters it held)
        on_b = [(t, h) for t, s, h in results if t > marks["up"] and
                h.get("x-served-by") == "eu-b"]
        assert all(marks["fixed"] - 0.5 < t < marks["synced"] and
                   h.get("x-route-reason") == "fail-open" for t, h in on_b), \
            ([(round(t - marks["up"], 2), h.get("x-route-reason"), h.get("x-route-node"))
              for t, h in on_b][:10], round(marks["fixed"] - marks["up"], 2),
             round(marks["synced"] - marks["up"], 2))
    finally:
        stack.close()
