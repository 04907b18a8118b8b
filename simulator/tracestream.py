"""Pass two of a trace: its kept lines, one at a time, in arrival order, in bounded memory.

A line is written when its request ends, so no file is in arrival order, and a
server with several workers writes one family of files per worker (FILE.w<i>,
FILE.w<i>.N): the families run side by side in time, each one's rotated backups
one after another (FILE.2, then FILE.1, then FILE).

Each family is read oldest file first and its lines held in a small heap until
no line still to come can be older: a line arriving at t with a duration d was
written at about t + d, so once the family's newest end time (t + d) passes a
held line's t by the longest duration seen so far (at least HOLD_MIN_S, at most
HOLD_MAX_S) plus SLACK_S, every line written after it arrived later. The families are then merged
by time. Memory follows the request rate times that hold, not the log's length.
A line that still arrives after its turn (a request longer than HOLD_MAX_S, a
clock step) is counted in `late` and replayed at the time of the line before it.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

from router.logline import LogEntry
from simulator.tracelog import SHOWN, Trace, line_time, lines

HOLD_MIN_S = 60.0  # the hold waits for requests this long before any longer one is seen
HOLD_MAX_S = 600.0  # and for the longest one seen, up to this long
SLACK_S = 10.0  # and this much more: writers batch, clocks jitter

Held = tuple[float, int, int, LogEntry]  # (t, family, position in the family, entry)


def families(files: list[Path]) -> list[list[Path]]:
    """Files grouped by worker (FILE, FILE.w<i>), each group oldest backup first."""
    groups: dict[str, list[tuple[int, Path]]] = {}
    for f in files:
        m = re.search(r"(\.w\d+)?(?:\.(\d+))?$", f.name)
        worker, backup = (m.group(1) or "", int(m.group(2) or 0)) if m else ("", 0)
        groups.setdefault(worker, []).append((backup, f))
    return [[f for _, f in sorted(g, key=lambda x: -x[0])] for _, g in sorted(groups.items())]


def _why(raw: bytes, trace: Trace) -> str:
    """Why a line found unusable is not an entry."""
    try:
        parsed = trace.parse(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return "torn line (no newline at the end)" if not raw.endswith(b"\n") else "not JSON"
    return parsed if isinstance(parsed, str) else "unusable"


def _kept(trace: Trace, path: Path) -> Iterator[LogEntry]:
    """The lines of one file the replay keeps, in file order; the rest counted."""
    low, high, start = trace.fences
    for number, raw in lines(path, trace.lengths[path]):
        t = line_time(raw, trace.parse)
        if math.isnan(t):
            trace.skipped += 1
            if len(trace.problems) < SHOWN:
                trace.problems.append(f"{path}:{number}: {_why(raw, trace)}")
        elif not low <= t <= high:
            trace.outliers += 1
            if len(trace.outlier_shown) < SHOWN:
                trace.outlier_shown.append(f"{path}:{number}: t={t:g}")
        elif t < start:
            trace.before_window += 1
        else:
            entry = trace.parse(json.loads(raw.decode("utf-8")))
            assert isinstance(entry, LogEntry)  # line_time found it well-formed
            yield entry


def _held(trace: Trace, family: int, files: list[Path]) -> Iterator[Held]:
    """One family's kept lines in arrival order (but for late ones), through the hold."""
    heap: list[Held] = []
    newest_end, longest = -math.inf, HOLD_MIN_S
    position = 0
    for path in files:
        for entry in _kept(trace, path):
            heapq.heappush(heap, (entry.t, family, position, entry))
            position += 1
            took = min(entry.duration_ms / 1000.0, HOLD_MAX_S)
            newest_end, longest = max(newest_end, entry.t + took), max(longest, took)
            while heap[0][0] <= newest_end - longest - SLACK_S:
                yield heapq.heappop(heap)
    while heap:
        yield heapq.heappop(heap)


def entries(trace: Trace) -> Iterator[LogEntry]:
    """Every kept line of the trace, in arrival order; a late one at its predecessor's time."""
    streams = [_held(trace, i, group) for i, group in enumerate(families(trace.files))]
    last = -math.inf
    for t, _, _, entry in heapq.merge(*streams):
        if t < last:
            trace.late += 1
            entry = dataclasses.replace(entry, t=last)
        last = entry.t
        trace.kept += 1
        yield entry
