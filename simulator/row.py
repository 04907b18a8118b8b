"""One simulated request as a record, and the in-order commit a run without columns folds them by.

A scenario run keeps a column per field (`simulator.run.Result`). A trace
replay keeps none: each request is a `Row` from its arrival until it ends, and
rows end out of order (a refusal at once, an edge inference in milliseconds, a
cloud one later, a wait for a budget top-up later still). `Commit` hands them
on in arrival order: a row is held until every row before it has ended, so
what it holds is bounded by the arrivals during the longest request in
flight, not by the run's length, and whatever folds the rows sees them in the
order a column would hold them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO


class Row:
    """One request's fields (those of a `Result` column each, and of a decisions line)."""

    __slots__ = ("cloud", "cls", "cost", "done", "fill", "home", "key", "latency", "mode",
                 "node", "pool", "quality", "slo", "t", "tenant", "warm")

    def __init__(self, t: float, key: str, tenant: str, cls: str, slo: float) -> None:
        self.t, self.key, self.tenant, self.cls, self.slo = t, key, tenant, cls, slo
        self.mode, self.node = "refused", ""  # refused until decided
        self.pool: str | None = None
        self.quality: str | None = None
        self.cost = self.cloud = 0.0
        self.home = False
        self.fill: float | None = None
        self.warm: bool | None = None
        self.latency = math.nan
        self.done = False

    @property
    def slo_met(self) -> bool:
        """Served within its SLO (refused and unanswered requests are not)."""
        return (not math.isnan(self.latency)) and self.mode != "refused" \
            and self.latency <= self.slo


def decision(row: Row) -> dict[str, Any]:
    """The request's line of a decisions file (docs/reference.md, "Decisions file")."""
    lat, mode = row.latency, row.mode
    return {
        "t": round(row.t, 6), "key": row.key, "tenant": row.tenant, "class": row.cls,
        "mode": mode, "node": row.node or None, "quality": row.quality,
        "home": bool(row.home) if mode != "cloud" else None,
        "fill": None if row.fill is None else round(row.fill, 6), "warm": row.warm,
        "latency_ms": None if math.isnan(lat) else round(lat, 3),
        "cost_usd": row.cost, "cloud_usd": row.cloud, "slo_met": row.slo_met}


Sink = Callable[[Row], None]


class Commit:
    """Rows by arrival number; each handed to `sinks` once it and every earlier one ended."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)
        self.rows: dict[int, Row] = {}  # arrived and not yet handed on
        self.next = 0  # the arrival number handed on next

    def open(self, i: int, row: Row) -> None:
        """Row `i` arrives (numbers count up from 0 without gaps)."""
        self.rows[i] = row

    def flush(self) -> None:
        """Hand on every ended row whose predecessors have all been handed on."""
        rows, sinks = self.rows, self.sinks
        while (row := rows.get(self.next)) is not None and row.done:
            del rows[self.next]
            self.next += 1
            for sink in sinks:
                sink(row)


class DecisionsOut:
    """Decisions files written as rows commit: each to FILE.part, renamed to FILE when the
    run ends well and removed when it does not, so a failed run leaves no half file."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths: list[Path] = []
        self.files: list[TextIO] = []
        try:
            for path in paths:
                self.files.append(_part(path).open("w", encoding="utf-8"))
                self.paths.append(path)
        except OSError:
            self.close(ok=False)
            raise

    def add(self, row: Row) -> None:
        """Write one committed row's line to every file."""
        line = json.dumps(decision(row)) + "\n"
        for fh in self.files:
            fh.write(line)

    def close(self, ok: bool) -> None:
        """Finish the files: in place when `ok`, else removed."""
        for path, fh in zip(self.paths, self.files, strict=True):
            fh.close()
            if ok:
                os.replace(_part(path), path)
            else:
                _part(path).unlink(missing_ok=True)


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")
