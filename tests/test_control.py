"""Request control: the open-stream bound, exactly-once release, the budget wait rule, the log
line — with no transport, as the server and the simulator both drive it."""

from __future__ import annotations

from router import wire
from router.control import BUDGET_WAIT_S, RequestControl, payload_bytes, request_id
from router.core.budget import BudgetLedger
from router.logline import parse_entry
from router.runtime import Runtime
from tests.server.test_workers import policy

CLOUD = {"x-affinity-residency": "HIPAA", "x-affinity-tenant": "tight",
         "x-affinity-slo-ms": "2000"}


def test_content_length_and_request_id_are_read_as_plain_ascii() -> None:
    assert payload_bytes({"content-length": "2048"}) == 2048
    for bad in ("١٢٣", "²", "1_000", "+5", "0x10", "9" * 5000, "", "5 5"):
        assert payload_bytes({"content-length": bad}) is None, bad  # the policy's default
    assert request_id({"x-request-id": "abc-123"}) == "abc-123"
    for bad in ("a\x85b", "a\udcffb", "x" * 129, "tab\there"):
        assert request_id({"x-request-id": bad}) == "", bad


def test_past_the_open_bound_a_request_is_refused_overload_and_holds_nothing() -> None:
    control = RequestControl(Runtime(policy()), max_open=2)
    held = []
    for i in range(2):
        control.begin()
        held.append(control.decide(control.parse({"x-affinity-key": f"k{i}"}, 0)))
    control.begin()
    over = control.decide(control.parse({"x-affinity-slo-ms": "soon"}, 0)).decision
    assert (over.status, over.reason, over.retry_after) == (503, wire.R_OVERLOAD, 1)
    assert "3 open streams (max 2)" in (over.detail or "")  # overload first, even on bad tags
    control.end()
    assert [r.decision.status for r in held] == [200, 200] and control.held == 2
    for r in held:
        control.end(r)
    assert (control.open, control.held) == (0, 0)
    assert all(v == 0 for v in control.runtime.inflight().values())


def test_a_parse_refusal_passes_through_holding_nothing() -> None:
    control = RequestControl(Runtime(policy()))
    control.begin()
    d = control.decide(control.parse({"x-affinity-slo-ms": "soon"}, None)).decision
    assert (d.status, d.reason) == (400, "bad-tag") and control.held == 0
    assert control.wait_s(control.decide(control.parse({"x-affinity-key": "a"}, 0))) is None


def test_only_a_lease_throttle_waits_and_a_top_up_then_routes() -> None:
    rt = Runtime(policy("redis://127.0.0.1:1/0"), BudgetLedger(leased=True))
    control = RequestControl(rt)
    control.begin()
    req = control.parse(CLOUD, 0)
    first = control.decide(req)
    assert first.decision.reason == wire.R_BUDGET_THROTTLED and control.held == 0
    assert control.wait_s(first) == BUDGET_WAIT_S
    edge = control.decide(control.parse({**CLOUD, "x-affinity-residency": "GDPR"}, 0))
    assert edge.decision.routed and control.wait_s(edge) is None


def test_the_log_line_round_trips_through_the_trace_reader() -> None:
    control = RequestControl(Runtime(policy()))
    headers = {"x-affinity-key": "k", "x-affinity-residency": "GDPR", "x-request-id": "r1",
               "content-length": "10", "x-route-debug": "1"}
    d = control.decide(control.parse(headers, 10)).decision
    line = control.entry(headers, 10, d, t=5.0, duration_ms=1.25)
    assert line.tags == {"x-affinity-key": "k", "x-affinity-residency": "GDPR"}
    assert (line.request_id, line.mode, line.node) == ("r1", d.mode, d.node)
    assert parse_entry(line.as_json()) == line
