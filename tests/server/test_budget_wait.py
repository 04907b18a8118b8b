"""A cloud request short of budget lease waits once, briefly, for a top-up; edge never does."""

from __future__ import annotations

import json
import time

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from router.control import BUDGET_WAIT_S
from router.core.budget import BudgetLedger, Standing
from router.metrics import RouterMetrics
from router.runtime import Runtime
from router.server.servicer import Processor
from tests.server.test_servicer import headers_msg
from tests.server.test_workers import policy

# $0.01 of $0.03; the pool's estimate (20 ms + 1 s of compute) within the SLO
CLOUD = {"x_affinity_residency": "HIPAA", "x_affinity_tenant": "tight",
         "x_affinity_slo_ms": "2000"}


class Keeper:
    """Stands in for the budget keeper: records each wait; `grant` decides what it brings."""

    def __init__(self, runtime: Runtime, grant: float | None) -> None:
        self.runtime, self.grant = runtime, grant
        self.waits: list[float] = []

    async def wait_topup(self, timeout: float) -> bool:
        self.waits.append(timeout)
        if self.grant is None:
            return False  # the store is down, or the wait timed out
        period = time.strftime("%Y-%m", time.gmtime(self.runtime.clock()))
        self.runtime.ledger.sync("tight", period, Standing(0.0, self.grant,
                                                          self.runtime.clock() + 60))
        return True


async def run(grant: float | None, **headers: str) -> tuple[Keeper, RouterMetrics, object]:
    runtime = Runtime(policy("redis://127.0.0.1:1/0"), BudgetLedger(leased=True))
    keeper = Keeper(runtime, grant)
    metrics = RouterMetrics()
    processor = Processor(runtime, metrics, budget_wait=keeper.wait_topup)
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.ExternalProcessorStub(channel).Process(iter([headers_msg(**headers)]))
            answer = await call.read()
    finally:
        await server.stop(None)
    return keeper, metrics, answer


def decisions(metrics: RouterMetrics) -> dict[tuple[str, str], float]:
    out = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "router_decisions_total":
                out[(sample.labels["mode"], sample.labels["reason"])] = sample.value
    return out


async def test_a_short_lease_waits_once_for_its_top_up_then_routes() -> None:
    keeper, metrics, answer = await run(0.02, **CLOUD)
    assert keeper.waits == [BUDGET_WAIT_S] and BUDGET_WAIT_S < 0.2  # inside Envoy's timeout
    assert answer.WhichOneof("response") == "request_headers"  # routed, to the cloud
    assert decisions(metrics) == {("cloud", "residency"): 1.0}  # one decision, not two


async def test_no_top_up_is_a_429_throttled_not_the_hard_limit() -> None:
    keeper, metrics, answer = await run(None, **CLOUD)
    assert keeper.waits == [BUDGET_WAIT_S]
    reply = answer.immediate_response
    assert reply.status.code == 429
    assert json.loads(reply.body)["error"] == "budget_throttled"
    headers = {h.header.key: h.header.raw_value.decode() for h in reply.headers.set_headers}
    assert headers["x-route-reason"] == "budget-throttled" and headers["retry-after"] == "1"
    assert decisions(metrics) == {("refused", "budget-throttled"): 1.0}


async def test_edge_traffic_never_waits_for_the_budget() -> None:
    keeper, _, answer = await run(None, x_affinity_residency="GDPR", x_affinity_tenant="tight")
    assert keeper.waits == []
    assert answer.WhichOneof("response") == "request_headers"
