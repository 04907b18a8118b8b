"""The values a routing decision produces: the route, the hold, and the rung taken.

Admission answers a `Routed`, three values kept apart because three different
readers want them:

- `decision`, the route: where the request goes (or why it is refused), all the
  server turns into Envoy's headers or immediate response, and all explain and
  the request log show;
- `hold`, what the request holds until it ends (its load-tracker slots, its
  budget reservation, the pool that charges it): all `finish` reads;
- `rung`, the plan's option taken, as the plan built it (no copy): the simulator
  reads the pick's telemetry there (home node, fill); the server never does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from router import wire
from router.core.budget import Reservation
from router.core.pools import PoolRt

if TYPE_CHECKING:
    from router.core.rungs import Option


@dataclass(frozen=True, slots=True)
class Candidate:
    """One target considered for a request, and the verdict on it (for explain)."""

    target: str
    mode: str
    verdict: str  # "chosen" or why not
    est_ms: float | None = None
    cost_usd: float | None = None
    quality: str | None = None
    load: int | None = None
    cap: int | None = None


class Decision(NamedTuple):
    """Where one request goes, or why it is refused: the route, what Envoy gets.

    An immutable named tuple rather than a frozen dataclass: one is built per
    request, and a frozen dataclass's field-by-field `object.__setattr__` cost
    several microseconds of the decision.
    """

    status: int
    mode: str
    reason: str
    policy: str
    target: str | None = None
    node: str | None = None
    quality: str | None = None
    split_cloud: str | None = None
    split_pool: str | None = None
    cluster: str | None = None  # the Envoy cluster holding `target` (x-route-cluster)
    cost_usd: float = 0.0
    est_ms: float = 0.0
    error: str | None = None
    detail: str | None = None
    retry_after: int | None = None

    @property
    def routed(self) -> bool:
        """True when the request goes somewhere (not refused)."""
        return self.status == 200

    def headers(self) -> list[tuple[str, str]]:
        """The x-route-* request headers for a routed decision."""
        out = [
            (wire.H_TARGET, self.target or ""),
            (wire.H_NODE, self.node or ""),
            (wire.H_MODE, self.mode),
            (wire.H_COST, f"{self.cost_usd:.6f}"),
            (wire.H_REASON, self.reason),
            (wire.H_POLICY, self.policy),
        ]
        if self.quality is not None:
            out.append((wire.H_QUALITY, self.quality))
        if self.split_cloud is not None:
            out.append((wire.H_SPLIT_CLOUD, self.split_cloud))
        if self.cluster is not None:
            out.append((wire.H_CLUSTER, self.cluster))
        return out

    def body(self) -> bytes:
        """JSON body of a refusal: {"error": CODE, "detail": TEXT}."""
        return json.dumps({"error": self.error or "refused", "detail": self.detail or ""},
                          separators=(",", ":")).encode()


def refusal(status: int, error: str, reason: str, detail: str, policy: str, *,
            retry_after: int | None = None) -> Decision:
    """A refused decision."""
    return Decision(status=status, mode=wire.MODE_REFUSED, reason=reason, policy=policy,
                    error=error, detail=detail, retry_after=retry_after)


class Hold(NamedTuple):
    """What an admitted request holds until it ends, however it ends; all that
    `router.core.admit.finish` hands back."""

    slots: tuple[int, ...] = ()  # load-tracker slots: the node's (inference or feature), the pool's
    reservation: Reservation | None = None  # the budget held for its cloud part
    pool: PoolRt | None = None  # the pool that bills it (cloud, split): whether it bills a failure
    nbytes: int = 0  # a cloud request's whole payload: on the gateway's uplink while in flight


NOTHING = Hold()  # a refusal's: nothing held


class Routed(NamedTuple):
    """Admission's answer for one request: the route, the hold, the rung taken (the module
    docstring says who reads which)."""

    decision: Decision
    hold: Hold = NOTHING
    rung: Option | None = None  # None: refused


class Preview(NamedTuple):
    """What admission would decide, and the trace explain shows: every node the walks
    passed, every rung dropped or not held and why, then the one chosen."""

    decision: Decision
    trace: tuple[Candidate, ...] = ()
