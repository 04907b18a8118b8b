"""Standing fuzz suite: arbitrary header lists through the servicer over a real grpc.aio channel.

Whatever the headers — affinity names and junk, any bytes, controls, huge numbers, deep
JSON, repeats — every stream gets a routed answer or a JSON refusal (400/403/429/503),
never a router_error (an unexpected exception), never a failed stream, and holds nothing
once it ends. Fixed seed (`derandomize`), so a run is the same examples every time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import wire
from router.core.budget import MemoryBudgetStore
from router.metrics import RouterMetrics
from router.runtime import Runtime
from router.server.servicer import Processor
from tests.server.test_workers import policy

REFUSAL_STATUSES = {400, 403, 429, 503}
NAMES = st.sampled_from([*wire.AFFINITY_HEADERS, "X-Affinity-Key", "x-affinity-colour",
                         "content-length", "x-request-id", "x-route-target", "x-route-debug",
                         "accept"]) | st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=12)
GOOD = st.sampled_from(["GDPR", "CCPA", "HIPAA", "GDPR,CCPA", "k1", "acme", "tight", "75",
                        "3", "true", "false", "0.004", "0", "vision-v3"])
BAD = st.sampled_from(["²", "١٢٣", "1e400", "0x10", "+5", " 5 5 ", "ＧＤＰＲ", "a\x7fb", "a\x85b",
                       "a\tb", "\u202e", "nan", "-1", "", ",", '{"key": "\\ud800"}',
                       '{"max_cost_per_inference": NaN}', '{"tenant": "a", "tenant": "b"}'])
HUGE = st.integers(min_value=0, max_value=10**600).map(str) | st.integers(1, 6000).map(
    lambda n: "9" * n)
DEEP = st.integers(1, 2000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 1200).map(
    lambda n: '{"key": ' + "[" * n + "]" * n + "}")
FIELDS = st.sampled_from(["key", "tenant", "data_residency", "latency_slo_ms", "model_version",
                          "accept_degradation", "max_cost_per_inference", "colour"])
JSON_VALUES = st.none() | st.booleans() | st.integers(-10**500, 10**500) | st.floats() | \
    st.text(max_size=12) | st.lists(GOOD | st.text(max_size=6), max_size=3)
JSON_DOCS = st.dictionaries(FIELDS, JSON_VALUES, max_size=4).map(json.dumps)
TEXT = (GOOD | BAD | HUGE | DEEP | JSON_DOCS | st.text(max_size=40)).map(
    lambda s: s.encode("utf-8", "surrogatepass"))
VALUES = TEXT | st.binary(max_size=48)
# (name, value bytes, send as `value` rather than `raw_value` when it is valid UTF-8)
ENTRIES = st.lists(st.tuples(NAMES, VALUES, st.booleans()), max_size=8)


class Harness:
    """A server on its own event loop, driven one stream at a time from sync test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runtime = Runtime(policy(), MemoryBudgetStore())
        self.processor = Processor(self.runtime, RouterMetrics())
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_ExternalProcessorServicer_to_server(self.processor, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ExternalProcessorStub(self.channel)

    def close(self) -> None:
        """Stop the channel, the server and the loop."""
        async def stop() -> None:
            await self.channel.close()
            await self.server.stop(None)
        self.loop.run_until_complete(stop())
        self.loop.close()

    def stream(self, msg: Any) -> tuple[Any, grpc.StatusCode]:
        """Send one request's headers, end the stream; (the answer, the stream's status)."""
        async def go() -> tuple[Any, grpc.StatusCode]:
            async def requests() -> AsyncIterator[Any]:
                yield msg

            call = self.stub.Process(requests())
            answer = await call.read()
            assert await call.read() is grpc.aio.EOF
            return answer, await call.code()
        return self.loop.run_until_complete(go())


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """One server for every example; stopped whatever happens."""
    h = Harness()
    try:
        yield h
    finally:
        h.close()


def to_msg(entries: list[tuple[str, bytes, bool]]) -> Any:
    hs = []
    for name, value, as_text in entries:
        try:
            text = value.decode() if as_text else None
        except UnicodeDecodeError:
            text = None
        hs.append(base_pb2.HeaderValue(key=name, value=text) if text
                  else base_pb2.HeaderValue(key=name, raw_value=value))
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=hs), end_of_stream=True))


def check_refusal(answer: Any, repeated: set[str]) -> None:
    imm = answer.immediate_response
    got = {o.header.key: o.header.raw_value.decode() for o in imm.headers.set_headers}
    body = json.loads(imm.body)
    assert imm.status.code in REFUSAL_STATUSES, imm.status.code
    assert got["content-type"] == "application/json" and got[wire.H_REASON]
    assert isinstance(body["error"], str) and isinstance(body["detail"], str)
    assert body["error"] != wire.E_ROUTER_ERROR, body  # an unexpected exception in the router
    if repeated:  # a repeated affinity header is refused before anything else is read
        assert imm.status.code == 400 and body["detail"].partition(":")[0] in repeated


@settings(derandomize=True, database=None, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entries=ENTRIES)
def test_every_header_list_gets_an_answer_and_holds_nothing_after(
        harness: Harness, entries: list[tuple[str, bytes, bool]]) -> None:
    names = [n.lower() for n, _, _ in entries]
    repeated = {n for n in names if n.startswith(wire.AFFINITY_PREFIX) and names.count(n) > 1}
    answer, code = harness.stream(to_msg(entries))
    assert code == grpc.StatusCode.OK
    if answer.WhichOneof("response") == "request_headers":
        assert not repeated
        m = answer.request_headers.response.header_mutation
        got = {o.header.key: o.header.raw_value.decode() for o in m.set_headers}
        assert got[wire.H_MODE] in wire.MODES and got[wire.H_TARGET]
        assert all(h.startswith(wire.ROUTE_PREFIX) for h in m.remove_headers)
    else:
        check_refusal(answer, repeated)
    assert harness.processor.open_streams == 0 and harness.processor.unfinished == 0
    assert not any(harness.runtime.inflight().values())
