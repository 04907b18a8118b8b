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
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from router import wire
from router.logline import MODES, LogEntry
from simulator.tracelog import Trace

JOIN_WINDOW_S = 120.0  # an access-log line is looked for this far either side of its router line


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


def _measurements(path: Path) -> Iterator[tuple[float, str, int, float]]:
    """(start time, request id, status, duration ms) of each usable access-log line."""
    with path.open("rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                continue
            rid = obj.get("request_id") if isinstance(obj, dict) else None
            measured = _measured(obj) if isinstance(rid, str) and rid else "no request id"
            if not isinstance(measured, str):
                yield measured[0], str(rid), measured[1], measured[2]


def join(entries: Iterable[LogEntry], path: str | Path, trace: Trace) -> Iterator[LogEntry]:
    """Production's status and duration from Envoy's access log, matched by request id.

    Streamed: `entries` come in arrival order, and the access log is read ahead only until
    its lines start JOIN_WINDOW_S after the entry in hand; a line that started more than
    JOIN_WINDOW_S before it is dropped. So memory holds the access-log lines of a
    2 × JOIN_WINDOW_S window, not the log. A router line with no access-log line in the
    window keeps its own status and duration and counts in `trace.unmatched`; one matched
    counts in `trace.joined`.
    """
    ahead = _measurements(Path(path))
    pending: dict[str, tuple[float, int, float]] = {}  # request id: (start, status, ms)
    frontier, done = -math.inf, False
    for e in entries:
        while not done and frontier < e.t + JOIN_WINDOW_S:
            got = next(ahead, None)
            if got is None:
                done = True
                break
            frontier = max(frontier, got[0])
            pending[got[1]] = got[0], got[2], got[3]
        while pending:  # oldest first: a dict keeps the access log's order
            rid, first = next(iter(pending.items()))
            if first[0] >= e.t - JOIN_WINDOW_S:
                break
            del pending[rid]
        found = pending.pop(e.request_id, None) if e.request_id else None
        if found is None:
            trace.unmatched += 1
            yield e
        else:
            trace.joined += 1
            yield replace(e, status=found[1], duration_ms=found[2])
