"""One request-log line, typed: what `serve --request-log` writes and `simulate --trace` reads.

The writer (`router.control.RequestControl.entry`, queued by
`router.server.requestlog`) and the reader (`simulator.tracelog`) share this
one definition, so a field added or renamed on one side cannot be missed on
the other (docs/reference.md, "Request log").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_INT = 10 ** 15  # the server reads at most 15 digits of content-length
MODES = frozenset({"edge", "edge-degraded", "split", "cloud", "refused"})


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One logged request, as production saw and decided it."""

    t: float  # arrival, epoch seconds
    request_id: str  # x-request-id, '' when missing or unfit for a log
    tags: dict[str, str]  # every x-affinity-* header as sent
    content_length: int | None  # None: unknown (the policy's defaults.payload_kb)
    status: int
    mode: str  # edge, edge-degraded, split, cloud, refused
    node: str | None  # node, or pool for cloud
    quality: str | None
    cost_usd: float
    est_ms: float
    reason: str
    policy: str  # the version of the policy that decided it
    duration_ms: float  # arrival to the end of the request's stream

    def as_json(self) -> dict[str, Any]:
        """The line as a JSON object, numbers rounded as written."""
        return {"t": round(self.t, 6), "request_id": self.request_id, "tags": self.tags,
                "content_length": self.content_length, "status": self.status,
                "mode": self.mode, "node": self.node, "quality": self.quality,
                "cost_usd": round(self.cost_usd, 9), "est_ms": round(self.est_ms, 3),
                "reason": self.reason, "policy": self.policy,
                "duration_ms": round(self.duration_ms, 3)}


def _num(value: Any) -> bool:
    """A finite number >= 0 (an integer too large for a float is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return 0 <= value < MAX_INT
    return math.isfinite(value) and value >= 0


def _text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def parse_entry(obj: Any) -> LogEntry | str:
    """A parsed JSON line as a `LogEntry`, or why it is not one."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    checks = (
        ("t", _num(obj.get("t"))),
        ("tags", isinstance(obj.get("tags"), dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in obj["tags"].items())),
        ("content_length", obj.get("content_length") is None or (
            isinstance(obj["content_length"], int) and _num(obj["content_length"]))),
        ("status", isinstance(obj.get("status"), int) and not isinstance(obj["status"], bool)
         and 100 <= obj["status"] <= 599),
        ("mode", obj.get("mode") in MODES
         and (obj["mode"] == "refused") == (obj.get("status") != 200)),
        ("node", _text(obj.get("node"))), ("quality", _text(obj.get("quality"))),
        ("cost_usd", _num(obj.get("cost_usd"))), ("duration_ms", _num(obj.get("duration_ms"))),
        ("reason", _text(obj.get("reason"))), ("policy", _text(obj.get("policy"))),
        ("request_id", _text(obj.get("request_id"))),
        ("est_ms", obj.get("est_ms") is None or _num(obj["est_ms"])),
    )
    bad = [name for name, ok in checks if not ok]
    if bad:
        return "missing or malformed " + ", ".join(bad)
    return LogEntry(float(obj["t"]), obj.get("request_id") or "", dict(obj["tags"]),
                    obj["content_length"], obj["status"], obj["mode"], obj["node"],
                    obj["quality"], float(obj["cost_usd"]), float(obj.get("est_ms") or 0.0),
                    obj.get("reason") or "", obj.get("policy") or "", float(obj["duration_ms"]))
