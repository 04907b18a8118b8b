"""The ext_proc servicer over a real grpc.aio channel: mutations, refusals, bound, exactly-once,
strict tags from raw bytes, and a 503 router_error (never a failed stream) on any failure."""

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

from router import wire
from router.metrics import RouterMetrics
from router.runtime import Runtime
from router.server import extproc
from router.server.servicer import Processor
from tests.server.test_workers import policy


def headers_msg(**headers: str) -> Any:
    """A request_headers message as Envoy sends it (raw_value)."""
    return raw_msg([(k.replace("_", "-"), v.encode()) for k, v in headers.items()])


def raw_msg(pairs: list[tuple[str, bytes]]) -> Any:
    """A request_headers message with these exact entries: repeats and any bytes."""
    hs = [base_pb2.HeaderValue(key=k, raw_value=v) for k, v in pairs]
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
        return await self.open_msg(headers_msg(**headers))

    async def open_msg(self, first: Any) -> tuple[Any, Any, asyncio.Queue[Any]]:
        """Send `first` on a new stream; (call, first answer, outbox to send more)."""
        outbox: asyncio.Queue[Any] = asyncio.Queue()
        await outbox.put(first)

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


def refusal_of(answer: Any) -> tuple[int, dict[str, str], dict[str, str]]:
    """(status, headers, JSON body) of an immediate response."""
    imm = answer.immediate_response
    got = {o.header.key: o.header.raw_value.decode() for o in imm.headers.set_headers}
    return imm.status.code, got, json.loads(imm.body)


DEEP = b"[" * 1500 + b"]" * 1500
MALFORMED = [
    ([("x-affinity-slo-ms", "²".encode())], "x-affinity-slo-ms", "slo-superscript-two"),
    ([("x-affinity-slo-ms", "١٢٣".encode())], "x-affinity-slo-ms", "slo-arabic-indic"),
    ([("x-affinity-slo-ms", b"1e400")], "x-affinity-slo-ms", "slo-exponent"),
    ([("x-affinity-slo-ms", b"9" * 5000)], "x-affinity-slo-ms", "slo-past-int-digit-limit"),
    ([("x-affinity-tags", b'{"max_cost_per_inference": 1' + b"0" * 400 + b"}")],
     "x-affinity-max-cost", "json-cost-400-zeros"),
    ([("x-affinity-tags", b'{"key": "\\ud800"}')], "x-affinity-key", "json-lone-surrogate"),
    ([("x-affinity-tags", b'{"key": ' + DEEP + b"}")], "x-affinity-tags", "json-1500-deep"),
    ([("x-affinity-tenant", b"acme\x7f")], "x-affinity-tenant", "tenant-del"),
    ([("x-affinity-key", b"a\xc2\x85b")], "x-affinity-key", "key-c1-as-utf8"),
    ([("x-affinity-key", b"a\x85b")], "x-affinity-key", "key-c1-raw-byte-invalid-utf8"),
    ([("x-affinity-tenant", b"\xff\xfe")], "x-affinity-tenant", "tenant-invalid-utf8"),
    ([("x-affinity-residency", b"GDPR"), ("x-affinity-residency", b"CCPA")],
     "x-affinity-residency", "residency-repeated"),
    ([("x-affinity-key", b"k"), ("X-Affinity-Key", b"k")], "x-affinity-key",
     "key-repeated-other-case"),
]


@pytest.mark.parametrize(("pairs", "tag"),
                         [pytest.param(p, t, id=i) for p, t, i in MALFORMED])
async def test_each_malformed_tag_is_a_400_naming_it(pairs: list[tuple[str, bytes]],
                                                     tag: str) -> None:
    async with Client() as c:
        call, answer, outbox = await c.open_msg(raw_msg(pairs))
        status, got, body = refusal_of(answer)
        assert status == 400 and got["x-route-reason"] == "bad-tag"
        assert body["error"] == "bad_affinity_tag" and body["detail"].startswith(f"{tag}: ")
        await outbox.put(None)
        assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK
        assert await c.settled() == {}


async def test_a_repeated_non_affinity_header_still_routes() -> None:
    async with Client() as c:
        _, answer, outbox = await c.open_msg(raw_msg([
            ("x-affinity-key", b"k1"), ("x-affinity-residency", b"GDPR"),
            ("accept", b"a/b"), ("accept", b"c/d")]))
        assert mutation(answer)[0]["x-route-mode"] == "edge"
        await outbox.put(None)
        assert await c.settled() == {}


def router_errors(c: Client) -> float:
    return c.metrics.registry.get_sample_value(
        "router_decisions_total", {"mode": "refused", "reason": "router-error"}) or 0.0


async def test_an_exception_while_deciding_is_a_503_router_error_with_a_trace_id(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with Client() as c:
        def boom(*_a: object, **_k: object) -> None:
            raise ZeroDivisionError("injected")

        monkeypatch.setattr(c.runtime, "decide", boom)
        call, answer, outbox = await c.open(x_affinity_key="k1", x_request_id="rid-7")
        status, got, body = refusal_of(answer)
        assert status == 503 and got["x-route-reason"] == "router-error"
        assert got["content-type"] == "application/json" and body["error"] == "router_error"
        trace = body["detail"].rpartition("trace id ")[2]
        assert len(trace) == 16 and int(trace, 16) >= 0
        [record] = [r for r in caplog.records if trace in r.getMessage()]
        assert record.levelname == "ERROR" and record.exc_info is not None
        assert isinstance(record.exc_info[1], ZeroDivisionError) and "rid-7" in record.getMessage()
        assert router_errors(c) == 1.0
        await outbox.put(None)
        assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK
        assert await c.settled() == {} and c.processor.unfinished == 0


async def test_a_failure_after_routing_releases_the_hold_exactly_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with Client() as c:
        finished: list[object] = []
        real_finish = c.runtime.finish

        def counting_finish(routed: Any, *a: Any, **kw: Any) -> None:
            finished.append(routed)
            real_finish(routed, *a, **kw)

        def broken(*_a: object) -> None:
            raise RuntimeError("response building failed")

        monkeypatch.setattr(c.runtime, "finish", counting_finish)
        monkeypatch.setattr(extproc, "routed_response", broken)
        call, answer, outbox = await c.open(x_affinity_key="k1", x_affinity_residency="GDPR")
        status, _, body = refusal_of(answer)
        assert status == 503 and body["error"] == "router_error"
        assert len(finished) == 1 and finished[0].decision.routed  # type: ignore[attr-defined]
        assert await c.settled() == {}  # released at once: the request never went anywhere
        await outbox.put(None)
        assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK
        assert await c.settled() == {} and c.processor.unfinished == 0
        assert len(finished) == 1  # the stream's end did not release it again


async def test_a_failing_release_at_stream_end_does_not_fail_the_stream(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async with Client() as c:
        def broken(*_a: object) -> None:
            raise RuntimeError("store gone")

        call, answer, outbox = await c.open(x_affinity_key="k1", x_affinity_residency="GDPR")
        assert mutation(answer)[0]["x-route-mode"] == "edge"
        monkeypatch.setattr(c.runtime, "finish", broken)
        await outbox.put(None)
        assert await call.read() is grpc.aio.EOF and await call.code() == grpc.StatusCode.OK
        assert c.processor.unfinished == 0
        assert any(r.exc_info and "releasing" in r.getMessage() for r in caplog.records)


async def test_payload_size_comes_from_the_body_envoy_announces() -> None:
    def cloud_cost(answer: Any) -> float:
        mutation = answer.request_headers.response.header_mutation
        got = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
        assert got[wire.H_MODE] == "cloud"
        return float(got[wire.H_COST])

    async with Client() as c:
        costs = {}
        for name, length, body in (("none", None, False), ("sized", "2000000", True),
                                   ("unsized", None, True)):
            pairs = [("x-affinity-residency", b"HIPAA"), ("x-affinity-key", name.encode())]
            if length is not None:
                pairs.append(("content-length", length.encode()))
            msg = raw_msg(pairs)
            msg.request_headers.end_of_stream = not body  # headers that end the stream: no body
            call, answer, outbox = await c.open_msg(msg)
            costs[name] = cloud_cost(answer)
            await outbox.put(None)
            call.cancel()
    egress = 0.09 / 1e9  # the test policy's pool: $0.09 per GB
    # the header carries six decimals
    assert costs["sized"] - costs["none"] == pytest.approx(2_000_000 * egress, abs=1e-6)
    # a body of unknown length is estimated at defaults.payload_kb (64 KiB)
    assert costs["unsized"] - costs["none"] == pytest.approx(64 * 1024 * egress, abs=1e-6)
    assert costs["unsized"] > costs["none"]


def response_msg(status: bytes) -> Any:
    """A response_headers message as Envoy sends it for a cloud request."""
    hs = [base_pb2.HeaderValue(key=":status", raw_value=status)]
    return pb.ProcessingRequest(response_headers=pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=hs)))


@pytest.mark.parametrize(("status", "rule", "charged"), [
    (b"200", "none", True), (b"404", "none", True), (b"503", "none", False),
    (b"504", "none", False), (b"503", "full", True), (None, "none", True),
], ids=["ok", "client-error", "failed", "timeout", "failed-full", "no-response-headers"])
async def test_a_cloud_request_is_charged_by_its_response_status(
        status: bytes | None, rule: str, charged: bool) -> None:
    async with Client() as c:
        pools = tuple(p.model_copy(update={"bill_failed": rule}) for p in c.runtime.policy.pools)
        c.runtime.install(c.runtime.policy.model_copy(
            update={"cloud": c.runtime.policy.cloud.model_copy(update={"pools": pools})}))
        budgets = c.runtime.policy.budgets
        call, answer, outbox = await c.open(x_affinity_key="b1", x_affinity_residency="HIPAA")
        assert answer.mode_override.response_header_mode == 1  # SEND: the status is wanted
        assert mutation(answer)[0]["x-route-mode"] == "cloud"
        if status is not None:
            await outbox.put(response_msg(status))
            assert (await call.read()).HasField("response_headers")
        await outbox.put(None)
        await c.settled()
        used = c.runtime.ledger.state(budgets, "default", c.runtime.clock()).used_usd
        assert (used > 0) is charged


async def test_an_edge_answer_does_not_ask_for_the_response() -> None:
    async with Client() as c:
        _, answer, outbox = await c.open(x_affinity_key="e1", x_affinity_residency="GDPR")
        assert not answer.HasField("mode_override")
        await outbox.put(None)
        assert await c.settled() == {}
