"""Public production traces as a scenario's arrivals (`traffic.trace`).

A trace gives each request its arrival time and token counts; the scenario still
says who sends it (classes and keys are drawn as `traffic.classes` and
`traffic.keys` say). Tokens become a request's *relative* size, so the scenario
keeps its calibration and the trace brings its shape:

    demand_i  = (context_weight × context_i + generated_i) / mean of the same
    payload_i = class payload_kb × context_i / mean context

Both are unit-mean over the trace: a node's `base_latency_ms` stays the mean
service time, a class's `payload_kb` the mean payload, while bursts, long
prompts and long answers arrive when production had them.

Readers are per format; a broken row (a field missing or not a number, a time
that does not parse, a negative count) is counted and skipped, and a file with
no usable row, or whose header is not the format's, is refused with a reason.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from router.core.schema import Breach, Num, Schema, Text, enforce

FORMATS = ("azure-llm", "burstgpt")
MAX_BYTES = 2 << 30  # a full BurstGPT release is ~200 MB; refuse what cannot be a trace
MAX_PASSES = 1_000_000  # a bound on the loop, far past any scenario


class TraceError(ValueError):
    """The file cannot be used as a trace; the message says why."""


@dataclass(frozen=True)
class Trace:
    """A trace's usable rows: seconds from its first arrival, context and generated tokens."""

    t: np.ndarray
    context: np.ndarray
    generated: np.ndarray
    rows: int  # data rows read (usable and broken)
    skipped: int  # broken rows
    first_broken: str  # where the first broken row is and why ('' when none)

    @property
    def period_s(self) -> float:
        """Seconds one pass takes: first arrival to last, plus a mean gap before the next."""
        n = len(self.t)
        span = float(self.t[-1]) if n else 0.0
        return span + (span / (n - 1) if n > 1 and span > 0 else 1.0)


Row = tuple[float, float, float]


def _azure(fields: list[str]) -> Row:
    stamp = datetime.fromisoformat(fields[0].strip()[:26])  # 7 fractional digits: keep 6
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp(), float(fields[1]), float(fields[2])


def _burstgpt(header: list[str]) -> Callable[[list[str]], Row]:
    cols = [h.strip().lower() for h in header]
    at, req, resp = cols.index("timestamp"), cols.index("request tokens"), \
        cols.index("response tokens")

    def row(fields: list[str]) -> Row:
        return float(fields[at]), float(fields[req]), float(fields[resp])

    return row


def _reader(fmt: str, header: list[str]) -> Callable[[list[str]], Row]:
    cols = [h.strip().lower() for h in header]
    if fmt == "azure-llm":
        if cols[:3] != ["timestamp", "contexttokens", "generatedtokens"]:
            raise TraceError(f"not an azure-llm trace: expected the header "
                             f"TIMESTAMP,ContextTokens,GeneratedTokens, got {','.join(header)}")
        return _azure
    if not {"timestamp", "request tokens", "response tokens"} <= set(cols):
        raise TraceError(f"not a burstgpt trace: expected Timestamp, Request tokens and "
                         f"Response tokens columns, got {','.join(header)}")
    return _burstgpt(header)


def _rows(lines: Iterator[list[str]], parse: Callable[[list[str]], Row]
          ) -> tuple[list[Row], int, str]:
    """(good rows, broken count, the first broken one's line and reason)."""
    good: list[Row] = []
    broken, first = 0, ""
    for number, fields in enumerate(lines, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue
        try:
            row = parse(fields)
            if not all(math.isfinite(v) for v in row) or row[1] < 0 or row[2] < 0:
                raise ValueError("a count is negative or not finite")
        except (ValueError, IndexError, OverflowError) as exc:
            broken += 1
            first = first or f"line {number}: {exc}"
            continue
        good.append(row)
    return good, broken, first


def read_trace(path: Path, fmt: str) -> Trace:
    """Read a trace file of format `fmt`; TraceError when nothing in it is usable."""
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; expected one of {', '.join(FORMATS)}")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise TraceError(f"{path} is larger than {MAX_BYTES >> 20} MiB")
        with path.open(newline="", encoding="utf-8") as fh:
            lines = csv.reader(fh)
            header = next(lines, None)
            if header is None:
                raise TraceError(f"{path} is empty")
            good, broken, first = _rows(lines, _reader(fmt, header))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from exc
    if not good:
        raise TraceError(f"{path} has no usable row ({broken} broken"
                         f"{'; ' + first if first else ''})")
    arr = np.array(sorted(good))
    return Trace(arr[:, 0] - arr[0, 0], arr[:, 1], arr[:, 2], len(good) + broken, broken,
                 first)


def _unit_mean(values: np.ndarray) -> np.ndarray:
    mean = float(values.mean()) if len(values) else 0.0
    return values / mean if mean > 0 else np.ones_like(values)


@dataclass(frozen=True)
class Drawn:
    """Arrival times and each arrival's trace row, over the scenario's duration."""

    times: np.ndarray
    rows: np.ndarray


def replay(trace: Trace, *, duration_s: float, rate_scale: float, time_scale: float,
           rng: np.random.Generator, limit: int | None) -> Drawn:
    """The trace's arrivals on the scenario's clock.

    `time_scale` stretches the trace's clock (0.5 plays it twice as fast). The
    trace repeats until `duration_s` (or `limit` arrivals). `rate_scale` keeps each
    arrival with that probability; above 1, ⌈rate_scale⌉ copies of the trace,
    each but the first shifted by a random offset (circularly, so each copy keeps
    the trace's burst structure), are superposed and then thinned to the rate.
    """
    period = trace.period_s * time_scale
    base = trace.t * time_scale
    copies = max(1, math.ceil(rate_scale))
    shifts = [0.0, *(rng.random(copies - 1) * period).tolist()]
    t1 = np.concatenate([(base + shift) % period for shift in shifts])
    r1 = np.tile(np.arange(len(base)), copies)
    order = np.argsort(t1, kind="stable")
    t1, r1 = t1[order], r1[order]
    keep_p = rate_scale / copies
    t_all, r_all = np.empty(0), np.empty(0, dtype=np.int64)
    passes = 0
    while passes < MAX_PASSES:  # whole passes, each thinned on its own, to duration_s or limit
        kept = rng.random(len(t1)) < keep_p
        t_all = np.concatenate([t_all, t1[kept] + passes * period])
        r_all = np.concatenate([r_all, r1[kept]])
        passes += 1
        if (limit is None and passes * period >= duration_s) or \
                (limit is not None and len(t_all) >= limit):
            break
    if limit is None:
        chosen = t_all < duration_s
        t_all, r_all = t_all[chosen], r_all[chosen]
    else:
        t_all, r_all = t_all[:limit], r_all[:limit]
    return Drawn(t_all, r_all)


def sizes(trace: Trace, context_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Per trace row: (unit-mean service demand, unit-mean payload factor)."""
    demand = _unit_mean(context_weight * trace.context + trace.generated)
    return demand, _unit_mean(trace.context)


class TraceSource(Schema):
    """`traffic.trace`: a public trace file whose arrivals replace `rate_rps`."""

    path: Text = Field(description="the trace file, relative to the scenario")
    format: Text = Field(description="azure-llm or burstgpt")
    rate_scale: Num = Field(default=1.0, gt=0, le=1000, description="multiplies the arrival rate")
    time_scale: Num = Field(default=1.0, gt=0, description="stretches the trace's clock")
    context_weight: Num = Field(default=0.05, ge=0,
                                description="service demand of a context token, in generated "
                                            "tokens")
    _trace: Trace | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _readable(self, info: ValidationInfo) -> TraceSource:
        if self.format not in FORMATS:
            enforce([Breach(("format",), f"unknown trace format {self.format!r}; expected one "
                                         f"of {', '.join(FORMATS)}")])
        base = Path((info.context or {}).get("base", Path()))
        try:
            self._trace = read_trace(base / self.path, self.format)
        except TraceError as exc:
            enforce([Breach(("path",), str(exc))])
        return self

    @property
    def trace(self) -> Trace:
        """The rows read (when the scenario was validated)."""
        assert self._trace is not None
        return self._trace
