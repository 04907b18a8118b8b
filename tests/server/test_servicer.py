"""The ext_proc servicer over a real grpc.aio channel: mutations, refusals, bound, exactly-once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from router.metrics import RouterMetrics
from router.runtime import Runtime
from router.server.servicer import Processor
from tests.server.test_workers import policy


def headers_msg(**headers: str) -> Any:
    """A request_headers message as Envoy sends it (raw_value)."""
    hs = [base_pb2.HeaderValue(key=k.replace("_", "-"), raw_value=v.encode())
          for k, v in headers.items()]
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=hs), end_of_stream=True))


class Client:
    """One in-process server and a stub; streams are opened by tests."""

    def __init__(self, max_streams: int = 64) -> None:
        self.runtime = Runtime(policy())
        self.metrics = RouterMetrics()
        self.processor = Processor(self.runtime, self.metrics, max_streams=max_streams)

    async def __aenter__(self) -> Client:
        self.server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(self.processor, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ExternalProcessorStub(self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.server.stop(None)

    async def open(self, **headers: str) -> tuple[Any, Any, asyncio.Queue[Any]]:
        """Send request headers on a new stream; (call, first answer, outbox to send more)."""
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        await outbox.put(headers_msg(**headers))

        async def requests() -> AsyncIterator[Any]:
            while (msg := await outbox.get()) is not None:
                yield msg

        call = self.stub.Process(requests())
        return call, await call.read(), outbox

    async def settled(self) -> dict[str, int]:
        """In-flight counts once the server has seen every stream end."""
        for _ in range(100):
            if self.processor.open_streams == 0:
                break
            await asyncio.sleep(0.01)
        return {k: v for k, v in self.runtime.inflight().items() if v}


def mutation(answer: Any) -> tuple[dict[str, str], list[str]]:
    m = answer.request_headers.response.header_mutation
    return ({o.header.key: o.header.raw_value.decode() for o in m.set_headers},
            list(m.remove_headers))


async def test_routes_with_mutations_and_drops_client_route_headers() -> None:
    async with Client() as c:
        call, answer, outbox = await c.open(x_affinity_key="k1", x_affinity_residency="GDPR",
                                            x_route_target="10.0.0.1:80", x_route_debug="me")
        set_, removed = mutation(answer)
        assert set_["x-route-target"] in {n.address for n in c.runtime.policy.nodes}
        assert set_["x-route-mode"] == "edge" and set_["x-route-node"] in ("eu-a", "eu-b")
        assert removed == ["x-route-debug"]  # x-route-target is overwritten, not removed
        assert c.runtime.inflight()[set_["x-route-node"]] == 1
        await outbox.put(None)  # Envoy's graceful close at the end of the HTTP request
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert await c.settled() == {} and c.processor.unfinished == 0


@pytest.mark.parametrize(("headers", "status", "reason", "error"), [
    ({"x_affinity_slo_ms": "soon"}, 400, "bad-tag", "bad_affinity_tag"),
    ({"x_affinity_residency": "GDPR,CCPA"}, 503, "residency", "no_eligible_target"),
], ids=["bad-tag", "unservable"])
async def test_refusals_are_immediate_json_responses(headers: dict[str, str], status: int,
                                                     reason: str, error: str) -> None:
    async with Client() as c:
        _, answer, outbox = await c.open(**headers)
        imm = answer.immediate_response
        assert imm.status.code == status
        got = {o.header.key: o.header.raw_value.decode() for o in imm.headers.set_headers}
        assert got["x-route-reason"] == reason and got["content-type"] == "application/json"
        assert json.loads(imm.body)["error"] == error
        await outbox.put(None)
        assert await c.settled() == {}


async def test_budget_refusal_carries_retry_after() -> None:
    async with Client() as c:
        for i in range(4):
            _, answer, outbox = await c.open(x_affinity_tenant="tight",
                                                x_affinity_residency="HIPAA",
                                                x_affinity_key=f"h{i}")
            await outbox.put(None)
            await c.settled()
        imm = answer.immediate_response
        got = {o.header.key: o.header.raw_value.decode() for o in imm.headers.set_headers}
        assert imm.status.code == 429 and int(got["retry-after"]) > 0


async def test_past_the_stream_bound_refuses_with_503_overload() -> None:
    async with Client(max_streams=2) as c:
        held = [await c.open(x_affinity_key=f"k{i}", x_affinity_residency="CCPA")
                for i in range(2)]
        _, answer, outbox = await c.open(x_affinity_key="k9", x_affinity_residency="CCPA")
        imm = answer.immediate_response
        got = {o.header.key: o.header.raw_value.decode() for o in imm.headers.set_headers}
        assert imm.status.code == 503 and got["x-route-reason"] == "overload"
        assert json.loads(imm.body)["error"] == "router_overloaded" and got["retry-after"]
        assert sum(c.runtime.inflight().values()) == 2  # the refusal holds nothing
        for _, _, box in [*held, (None, None, outbox)]:
            await box.put(None)
        assert await c.settled() == {}


async def test_a_reset_stream_releases_its_slot_exactly_once() -> None:
    async with Client() as c:
        calls = [await c.open(x_affinity_key=f"r{i}", x_affinity_residency="CCPA")
                 for i in range(5)]
        assert sum(c.runtime.inflight().values()) == 5
        for call, _, _ in calls:
            call.cancel()  # Envoy resetting the stream: client reset, upstream reset
        assert await c.settled() == {} and c.processor.unfinished == 0
        assert all(v >= 0 for v in c.runtime.inflight().values())
