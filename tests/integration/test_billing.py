"""Through real Envoy: a cloud request is charged by how it ended, per its pool's `bill_failed`.

`cloud-hipaa` bills nothing for a failed request (`bill_failed: none`), `cloud-eu` the
default (`full`). Each cloud request is estimated at $0.01 (`stack.POLICY`); the router's
spend gauge says what was charged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import POLICY, UPSTREAM_TIMEOUT_S, Stack
from .test_envoy_stack import many, streamed

pytestmark = pytest.mark.integration

BILLING_POLICY = POLICY.replace(
    'residency: [HIPAA], models: ["*"],', 'residency: [HIPAA], models: ["*"], bill_failed: none,'
).replace("tenants: {{default: {{limit_usd: 1000}},",
          "tenants: {{default: {{limit_usd: 1000}}, eu: {{limit_usd: 1}},")
# the GDPR edge nodes serve only `small`, so GDPR requests for `big` go to cloud-eu
BILLING_POLICY = BILLING_POLICY.replace("residency: [GDPR], base_latency_ms",
                                        "residency: [GDPR], models: [small], base_latency_ms")
HIPAA = {"x-affinity-residency": "HIPAA", "x-affinity-tenant": "default"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module, its answers given 2 s (this module is not about deadlines)."""
    s = Stack(Path(tmp_path_factory.mktemp("billing")), policy=BILLING_POLICY,
              message_timeout_s=2.0)
    try:
        yield s.start()
    finally:
        s.close()


def spend(stack: Stack, tenant: str = "default") -> float:
    """The router's spend gauge for `tenant`, once nothing is held any more."""
    deadline = time.monotonic() + 5.0
    while True:
        metrics = stack.metrics()
        if all(v == 0 for k, v in metrics.items() if k.startswith("router_node_inflight{")) \
                or time.monotonic() > deadline:
            return metrics.get(f'router_budget_spend_usd{{tenant="{tenant}"}}', 0.0)
        time.sleep(0.2)


@pytest.mark.parametrize(("hook", "status"), [
    pytest.param({"x-emulate-status": "503"}, 503, id="upstream-503"),
    pytest.param({"x-emulate-status": "500"}, 500, id="upstream-500"),
    pytest.param({"x-emulate-reset": "1"}, 503, id="upstream-reset"),
    pytest.param({"x-emulate-delay-ms": str(int(UPSTREAM_TIMEOUT_S * 1000) + 500)}, 504,
                 id="upstream-timeout"),
])
def test_a_failed_request_on_a_bill_failed_none_pool_is_not_charged(
        stack: Stack, hook: dict[str, str], status: int) -> None:
    before = spend(stack)
    results = many(stack, [{**HIPAA, "x-affinity-key": f"f{i}", **hook} for i in range(5)])
    assert [s for s, _, _ in results] == [status] * 5
    assert spend(stack) == pytest.approx(before, abs=1e-9)


@pytest.mark.parametrize(("hook", "status"), [
    pytest.param({}, 200, id="answered"),
    pytest.param({"x-emulate-status": "404"}, 404, id="a-client-error-is-billed"),
])
def test_an_answered_request_is_charged(stack: Stack, hook: dict[str, str],
                                        status: int) -> None:
    before = spend(stack)
    results = many(stack, [{**HIPAA, "x-affinity-key": f"a{i}", **hook} for i in range(5)])
    assert [s for s, _, _ in results] == [status] * 5
    assert spend(stack) == pytest.approx(before + 0.05, abs=1e-3)


def test_a_failed_request_on_a_bill_failed_full_pool_is_charged(stack: Stack) -> None:
    before = spend(stack, "eu")
    heads = [{"x-affinity-residency": "GDPR", "x-affinity-model": "big",
              "x-affinity-degrade": "false", "x-affinity-tenant": "eu", "x-affinity-key": f"e{i}",
              "x-emulate-status": "503"} for i in range(3)]
    results = many(stack, heads)
    assert [(s, h["x-route-node"]) for s, h, _ in results] == [(503, "cloud-eu")] * 3
    assert spend(stack, "eu") == pytest.approx(before + 0.03, abs=1e-3)


def test_a_streamed_cloud_answer_holds_its_pool_slot_until_it_ends(stack: Stack) -> None:
    # The router asks for a cloud request's response headers; the stream must still end
    # with the body, not with the headers.
    headers = {**HIPAA, "x-affinity-key": "stream-1", "x-emulate-stream-ms": "2000"}

    target, during, after, body = streamed(stack, headers)
    assert target == "cloud-hipaa" and body.count(b"data:") == 10
    assert during[target] == 1 and after[target] == 0
