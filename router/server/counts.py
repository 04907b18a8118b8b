"""Each decision into the router's decision tally (Prometheus) and its log line."""

from __future__ import annotations

import logging

from router.core.decision import Decision
from router.tally import DecisionTally

log = logging.getLogger("hybrid_router.server")


def record(tally: DecisionTally, d: Decision, seconds: float, rid: str) -> None:
    """One decision that took `seconds`, for request id `rid`."""
    tally.observe(seconds)
    tally.decided(d.mode, d.reason)
    if d.routed:
        log.debug("%s -> %s %s (%s)", rid, d.mode, d.node, d.reason)
    else:
        tally.refused(str(d.status), d.reason)
        log.info("%s refused %d %s: %s", rid, d.status, d.reason, d.detail)
