"""Envoy's JSON access log (`envoy-config --access-log FILE`) as request-log entries.

The router's request log says what the router decided; Envoy's access log says what the client
got (`router.envoy_access`). A replay takes production's status and duration from the access
log: joined to the request log by request id (`join`), or from the access log alone
(`access_entry`, which rebuilds the decision from the route headers Envoy logged). A request
the router routed but the client got a 5xx for (an upstream refused, reset or timed out) is
then a failure on production's side, not a fast success.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from router import wire
from router.logline import MODES, LogEntry


@dataclass
class Joined:
    """What a join found: router lines matched, and those Envoy has no line for."""

    entries: list[LogEntry]
    joined: int = 0
    unmatched: int = 0


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _measured(obj: Any) -> tuple[float, int, float] | str:
    """(start time, status, duration ms) of one access-log object, or why it has none."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    t, duration = _number(obj.get("start_time")), _number(obj.get("duration_ms"))
    status = obj.get("status")
    if t is None or duration is None or not isinstance(status, int | str):
        return "missing or malformed start_time, status or duration_ms"
    code = int(status) if str(status).isdigit() else 0
    if not 100 <= code <= 599:
        return f"no response sent (status {status})"
    return t, code, duration


def access_entry(obj: Any) -> LogEntry | str:
    """One access-log object as a `LogEntry`, or why it is not one."""
    measured = _measured(obj)
    if isinstance(measured, str):
        return measured
    t, status, duration = measured
    route = obj.get("route") if isinstance(obj.get("route"), dict) else {}
    tags = obj.get("tags") if isinstance(obj.get("tags"), dict) else {}
    mode = route.get(wire.H_MODE)
    if mode not in MODES:  # no answer from the router: Envoy routed or refused on its own
        mode = "edge" if status < 400 else "refused"
    length = _number(obj.get("content_length"))
    return LogEntry(
        t, str(obj.get("request_id") or ""),
        {k: v for k, v in tags.items() if isinstance(k, str) and isinstance(v, str)},
        int(length) if length is not None else None, status, mode,
        route.get(wire.H_NODE) or obj.get("upstream_host") or None, route.get(wire.H_QUALITY),
        _number(route.get(wire.H_COST)) or 0.0, 0.0,
        route.get(wire.H_REASON) or ("envoy" if mode != "refused" else ""),
        route.get(wire.H_POLICY) or "", duration)


def parse_access(obj: Any) -> LogEntry | str:
    """`access_entry` for a line of an access log read as a trace (tracelog's parser)."""
    return access_entry(obj)


def join(entries: list[LogEntry], path: str | Path) -> Joined:
    """Production's status and duration from Envoy's access log, matched by request id.

    Only the access-log lines whose id one of `entries` carries are kept while reading, so
    memory follows the replayed window. A router line with no access-log line keeps its own.
    """
    wanted = {e.request_id for e in entries if e.request_id}
    found: dict[str, tuple[int, float]] = {}
    with Path(path).open("rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                continue
            rid = obj.get("request_id") if isinstance(obj, dict) else None
            if rid in wanted:
                measured = _measured(obj)
                if not isinstance(measured, str):
                    found[rid] = (measured[1], measured[2])
    out = Joined([])
    for e in entries:
        got = found.get(e.request_id) if e.request_id else None
        if got is None:
            out.unmatched += 1
            out.entries.append(e)
            continue
        out.joined += 1
        out.entries.append(replace(e, status=got[0], duration_ms=got[1]))
    return out
