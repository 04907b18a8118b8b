"""Request control: the rules between a transport and the runtime, with no transport in them.

Theory of operation
-------------------
A request `begin`s when its transport opens (an ext_proc stream, a simulated
arrival) and `end`s exactly once when it closes, however it closes. While it
is open it counts against `max_open`: past that bound `decide` refuses it
with a 503 `overload` instead of planning, so a router that cannot keep up
sheds load rather than queueing it. Otherwise `decide` is the runtime's plan
and admission; a routed decision holds slots and budget until `end` (or
`release`, for one that never reached its client) hands them back.

A cloud request refused because this router's budget *lease* is short (the
fleet still has headroom, `budget_throttled`) may wait: `wait_s` says how long
(at most `BUDGET_WAIT_S`, once per request) for the budget keeper's next round
with the store, after which the driver calls `decide` once more. The waiting
itself is the driver's — the server awaits the keeper on its event loop, the
simulator schedules the second `decide` on its clock — so both follow the same
rule. Nothing else ever waits.

`entry` makes the request-log line (`router.logline.LogEntry`) the trace
replay reads back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Protocol

from router import wire
from router.core.decision import Decision, Routed, refusal
from router.core.request import OWS, RouteRequest
from router.logline import LogEntry
from router.runtime import Runtime

log = logging.getLogger("hybrid_router.control")
# Longest a cloud request throttled by a short budget lease waits for its top-up before
# it is planned once more: well inside Envoy's 200 ms message timeout.
BUDGET_WAIT_S = 0.05
MAX_OPEN = 4096  # serve --max-streams' default
MAX_REQUEST_ID = 128
_LENGTH = re.compile(r"[0-9]{1,15}")


def payload_bytes(headers: Mapping[str, str]) -> int | None:
    """The request's content-length in bytes; None when absent or not plain ASCII digits
    (the policy's defaults.payload_kb is used then). Only asked when a body follows the
    headers: a request whose headers end the stream has none (0 bytes)."""
    text = headers.get("content-length", "").strip(OWS)
    return int(text) if _LENGTH.fullmatch(text) else None


def request_id(headers: Mapping[str, str]) -> str:
    """x-request-id when it is short printable ASCII (it goes into logs), else ''."""
    rid = headers.get(wire.H_REQUEST_ID, "")
    ok = len(rid) <= MAX_REQUEST_ID and rid.isascii() and rid.isprintable()
    return rid if ok else ""


class EnvoyView(Protocol):
    """What the Envoy that sent a request holds of the published clusters and endpoints."""

    def allows(self, d: Decision) -> bool:
        """Whether that Envoy can send `d` to the cluster and target it names."""
        ...


class RequestControl:
    """Overload refusal, admission, the throttle wait and the log line for one runtime."""

    def __init__(self, runtime: Runtime, *, max_open: int = MAX_OPEN,
                 wait_s: float = BUDGET_WAIT_S) -> None:
        """Control requests to `runtime`; refuse past `max_open` open requests."""
        self.runtime = runtime
        self.max_open = max_open
        self.budget_wait_s = wait_s
        self.open = 0  # requests begun and not yet ended
        self.held = 0  # routed requests whose slots and budget are not handed back yet

    def parse(self, headers: Mapping[str, str], size: int | None, rid: str | None = None
              ) -> RouteRequest | Decision:
        """The request's tags under the policy in force, or its 400 refusal.

        `size` is the body's length: 0 without a body, None when unknown; `rid` the
        request id when the caller has read it already (`request_id`).
        """
        return self.runtime.parse(headers, payload_bytes=size,
                                  request_id=request_id(headers) if rid is None else rid)

    def begin(self) -> None:
        """A request opened: it counts against `max_open` until `end`."""
        self.open += 1

    def decide(self, req: RouteRequest | Decision, *, now: float | None = None) -> Routed:
        """Refuse past the open bound, else plan and admit (a parse refusal passes through)."""
        snap = self.runtime.snapshot  # read the reference once
        if self.open > self.max_open:
            d = refusal(wire.STATUS_UNSERVABLE, wire.E_OVERLOAD, wire.R_OVERLOAD,
                        f"router has {self.open} open streams (max {self.max_open})",
                        snap.policy.digest, retry_after=1)
            return Routed(d)
        if isinstance(req, Decision):
            return Routed(req)
        routed = self.runtime.decide(req, now=now, snapshot=snap)
        if routed.decision.status == 200:
            self.held += 1
        return routed

    def synced(self, routed: Routed, envoy: EnvoyView | None) -> Routed:
        """`routed`, or a 503 `xds-pending` (its hold handed back) when the Envoy that asked
        does not hold its cluster or target yet: Envoy would silently send it elsewhere."""
        d = routed.decision
        if envoy is None or not d.routed or envoy.allows(d):
            return routed
        self.release(routed)
        return Routed(refusal(wire.STATUS_UNSERVABLE, wire.E_XDS_PENDING, wire.R_XDS_PENDING,
                              f"this Envoy does not hold {d.cluster} {d.target} yet; retry",
                              d.policy, retry_after=1))

    def wait_s(self, routed: Routed) -> float | None:
        """How long a first decision may wait for a budget top-up before `decide` again;
        None: it is final. Ask once per request."""
        return self.budget_wait_s if routed.decision.reason == wire.R_BUDGET_THROTTLED \
            else None

    def release(self, routed: Routed, actual_usd: float | None = None, *,
                failed: bool = False) -> None:
        """Hand back a routed request's slots and budget hold (once per routed decision);
        `failed`: its pool failed it (charged per the pool's `bill_failed`)."""
        self.held -= 1
        try:
            self.runtime.finish(routed, actual_usd, failed=failed)
        except Exception:
            log.exception("releasing %s on %s failed", routed.decision.mode,
                          routed.decision.node)

    def end(self, routed: Routed | None = None, actual_usd: float | None = None, *,
            failed: bool = False) -> None:
        """The request closed; `routed`: the routed decision it still holds, if any;
        `failed`: its response said the pool failed it."""
        self.open -= 1
        if routed is not None:
            self.release(routed, actual_usd, failed=failed)

    @staticmethod
    def entry(headers: Mapping[str, str], size: int | None, d: Decision, *, t: float,
              duration_ms: float) -> LogEntry:
        """The request's log line (docs/reference.md, "Request log").

        The affinity tags are kept as sent, so a replay parses them under a candidate
        policy's defaults exactly as production would have.
        """
        tags = {k: v for k, v in headers.items() if k.startswith(wire.AFFINITY_PREFIX)}
        return LogEntry(t, request_id(headers), tags, size, d.status, d.mode, d.node,
                        d.quality, d.cost_usd, d.est_ms, d.reason, d.policy, duration_ms)
